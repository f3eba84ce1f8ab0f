package metadata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"vmfs/testdata"

	"google.golang.org/protobuf/proto"
)

// protoc runs protoc on microdroid_metadata.proto with mode --decode or --encode.
func protoc(t *testing.T, mode string, stdin []byte) []byte {
	t.Helper()
	testdata.RequireTool(t, "protoc")
	cmd := exec.Command("protoc", "--proto_path=.", mode+"=android.microdroid.Metadata", "microdroid_metadata.proto")
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("protoc %s: %v\n%s", mode, err, stderr.Bytes())
	}
	return out
}

func TestEncodeMetadataProtoc(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configPath string
		apexes     []string
		wantText   string
	}{
		{"two apexes", "assets/vm_config.json", []string{"com.android.adbd", "com.android.os.statsd"}, `version: 1
apexes {
  name: "com.android.adbd"
}
apexes {
  name: "com.android.os.statsd"
}
apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
config_path: "/mnt/apk/assets/vm_config.json"
`},
		{"no apexes", "vm.json", nil, `version: 1
apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
config_path: "/mnt/apk/vm.json"
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, err := EncodeMetadata(NewPayloadMetadata(tc.configPath, tc.apexes))
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) < 4 {
				t.Fatalf("blob is %d bytes", len(blob))
			}
			n := binary.BigEndian.Uint32(blob)
			body := blob[4:]
			if int(n) != len(body) {
				t.Fatalf("length prefix %d, body %d bytes", n, len(body))
			}
			if got := string(protoc(t, "--decode", body)); got != tc.wantText {
				t.Errorf("protoc --decode:\n%s\nwant:\n%s", got, tc.wantText)
			}
			// protoc writes fields in number order too, so the bytes must agree.
			if want := protoc(t, "--encode", []byte(tc.wantText)); !bytes.Equal(body, want) {
				t.Errorf("body %x\nprotoc --encode %x", body, want)
			}
		})
	}
}

// TestDecodeMetadataProtoc decodes what protoc encodes from text as Android 13 to 15
// write it, with the fields only a guest fills (public_key, root_digest, manifest_*).
func TestDecodeMetadataProtoc(t *testing.T) {
	apk := &ApkPayload{Name: "apk", PayloadPartitionName: "microdroid-apk", IdsigPartitionName: "microdroid-apk-idsig"}
	const apkText = `apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
`
	for _, tc := range []struct {
		name, text string
		want       *Metadata
	}{
		{"config path, guest fields", `version: 1
apexes {
  name: "com.android.adbd"
  partition_name: "microdroid-apex-0"
  public_key: "\001\002"
  root_digest: "\377"
  last_update_seconds: 1630000000
  is_factory: true
  manifest_version: 330443000
  manifest_name: "com.android.adbd"
}
` + apkText + `config_path: "/mnt/apk/assets/vm_config.json"
`, &Metadata{
			Version: 1,
			Apexes: []*ApexPayload{{Name: "com.android.adbd", PartitionName: "microdroid-apex-0",
				PublicKey: []byte{1, 2}, RootDigest: []byte{0xff}, LastUpdateSeconds: 1630000000, IsFactory: true,
				ManifestVersion: 330443000, ManifestName: "com.android.adbd"}},
			Apk:     apk,
			Payload: &Metadata_ConfigPath{ConfigPath: "/mnt/apk/assets/vm_config.json"},
		}},
		{"payload config", "version: 1\n" + apkText + `config {
  payload_binary_name: "libpayload.so"
  extra_apk_count: 2
}
`, &Metadata{
			Version: 1,
			Apk:     apk,
			Payload: &Metadata_Config{Config: &BinaryConfig{PayloadBinaryName: "libpayload.so", ExtraApkCount: 2}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := protoc(t, "--encode", []byte(tc.text))
			blob := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
			blob = append(blob, body...)
			// Bytes after the body are padding of the partition and must be left unread.
			r := bytes.NewReader(append(blob, 0, 0, 0))
			got, err := DecodeMetadata(r)
			if err != nil {
				t.Fatal(err)
			}
			if r.Len() != 3 {
				t.Errorf("DecodeMetadata left %d bytes, want 3", r.Len())
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestProfileMetadataProtoc checks what the host writes at each profile against protoc,
// both ways: protoc's text of vmfs's bytes, and protoc's bytes of that text.
func TestProfileMetadataProtoc(t *testing.T) {
	apexes := []ApexInfo{
		{ModuleName: "com.android.os.statsd", VersionCode: 1, LastUpdateSeconds: 1230768000, IsFactory: true, IsActive: true},
		{ModuleName: "com.vmfs.edge", VersionCode: 3, LastUpdateSeconds: 1700000000, IsActive: true},
	}
	const apk = `apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
`
	const namesOnly = `apexes {
  name: "com.android.os.statsd"
}
apexes {
  name: "com.vmfs.edge"
}
`
	// Android 13+: a zero last update and a false is_factory are not on the wire.
	const updateInfo = `apexes {
  name: "com.android.os.statsd"
  partition_name: "microdroid-apex-0"
  last_update_seconds: 1230768000
  is_factory: true
}
apexes {
  name: "com.vmfs.edge"
  partition_name: "microdroid-apex-1"
  last_update_seconds: 1700000000
}
`
	const configPath = "config_path: \"/mnt/apk/assets/vm_config.json\"\n"
	for _, tc := range []struct {
		profile Profile
		spec    PayloadSpec
		want    string
	}{
		{Android12, PayloadSpec{ConfigPath: "assets/vm_config.json", Apexes: apexes}, "version: 1\n" + namesOnly + apk + configPath},
		{Android13, PayloadSpec{ConfigPath: "assets/vm_config.json", Apexes: apexes, ExtraApks: 2}, "version: 1\n" + updateInfo + apk + configPath},
		{Android14, PayloadSpec{ConfigPath: "assets/vm_config.json", Apexes: apexes, ExtraApks: 2}, "version: 1\n" + updateInfo + apk + configPath},
		{Android14, PayloadSpec{BinaryName: "libsample.so", Apexes: apexes}, "version: 1\n" + updateInfo + apk +
			"config {\n  payload_binary_name: \"libsample.so\"\n}\n"},
		{Android15, PayloadSpec{ConfigPath: "assets/vm_config.json", Apexes: apexes[:1], ExtraApks: 1}, "version: 1\n" +
			updateInfo[:strings.Index(updateInfo, "apexes {\n  name: \"com.vmfs.edge")] + apk + configPath},
		{Android15, PayloadSpec{BinaryName: "libsample.so", ExtraApks: 2}, "version: 1\n" + apk +
			"config {\n  payload_binary_name: \"libsample.so\"\n  extra_apk_count: 2\n}\n"},
	} {
		name := tc.profile.String() + " config path"
		if tc.spec.BinaryName != "" {
			name = tc.profile.String() + " binary name"
		}
		t.Run(name, func(t *testing.T) {
			m, err := tc.profile.NewMetadata(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := EncodeMetadata(m)
			if err != nil {
				t.Fatal(err)
			}
			body := blob[4:]
			if got := string(protoc(t, "--decode", body)); got != tc.want {
				t.Errorf("protoc --decode:\n%s\nwant:\n%s", got, tc.want)
			}
			if want := protoc(t, "--encode", []byte(tc.want)); !bytes.Equal(body, want) {
				t.Errorf("body %x\nprotoc --encode %x", body, want)
			}
			got, err := DecodeMetadata(bytes.NewReader(blob))
			if err != nil || !proto.Equal(got, m) {
				t.Errorf("DecodeMetadata: %v, %v; want %v", got, err, m)
			}
		})
	}
}

func TestNewMetadataErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		profile Profile
		spec    PayloadSpec
		say     string
	}{
		{"binary name at android12", Android12, PayloadSpec{BinaryName: "x.so"}, "needs android14"},
		{"binary name at android13", Android13, PayloadSpec{BinaryName: "x.so"}, "needs android14"},
		{"both", Android15, PayloadSpec{ConfigPath: "a.json", BinaryName: "x.so"}, "give one"},
		{"extra apks at android12", Android12, PayloadSpec{ConfigPath: "a.json", ExtraApks: 1}, "need android13"},
		{"negative extra apks", Android13, PayloadSpec{ConfigPath: "a.json", ExtraApks: -1}, "-1 extra apks"},
		{"extra apks with a binary name at android14", Android14, PayloadSpec{BinaryName: "x.so", ExtraApks: 1}, "needs android15"},
		{"binary name with a path", Android15, PayloadSpec{BinaryName: "lib/x86_64/x.so"}, "contains '/'"},
		{"binary name ..", Android15, PayloadSpec{BinaryName: ".."}, "relative path element"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.profile.NewMetadata(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.say) || !strings.Contains(err.Error(), tc.profile.String()) {
				t.Fatalf("NewMetadata = %v, %v; want an error naming %s and saying %q", m, err, tc.profile, tc.say)
			}
		})
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	m := NewPayloadMetadata("assets/vm_config.json", []string{"a", "b", "c"})
	blob, err := EncodeMetadata(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMetadata(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, m) {
		t.Errorf("got %v, want %v", got, m)
	}
	again, err := EncodeMetadata(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, blob) {
		t.Errorf("re-encoding differs:\n%x\n%x", again, blob)
	}
}

func TestEncodeMetadataTooLarge(t *testing.T) {
	m := NewPayloadMetadata(strings.Repeat("x", maxMetadataSize), nil)
	if _, err := EncodeMetadata(m); err == nil {
		t.Error("no error for a body over the cap")
	}
}

func TestDecodeMetadataErrors(t *testing.T) {
	prefix := func(n uint32, rest ...byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), rest...)
	}
	for _, tc := range []struct {
		name string
		blob []byte
		is   error // nil: any error
	}{
		{"empty", nil, io.EOF},
		{"short prefix", []byte{0, 0, 1}, io.ErrUnexpectedEOF},
		{"short body", prefix(10, 8, 1), io.ErrUnexpectedEOF},
		{"length over cap", prefix(maxMetadataSize + 1), nil},
		{"length 0xffffffff", prefix(0xffffffff), nil},
		{"bad protobuf", prefix(2, 0xff, 0xff), nil},
		{"field runs past the body", prefix(2, 0x0a, 0x05), nil},
		{"invalid utf-8 string", prefix(3, 0x22, 0x01, 0xff), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMetadata(bytes.NewReader(tc.blob))
			if err == nil {
				t.Fatalf("no error, got %v", m)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
	t.Run("length 0 is an empty message", func(t *testing.T) {
		m, err := DecodeMetadata(bytes.NewReader(prefix(0)))
		if err != nil || !proto.Equal(m, &Metadata{}) {
			t.Errorf("got %v, %v", m, err)
		}
	})
}
