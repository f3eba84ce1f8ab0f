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
payload_config_path: "/mnt/apk/assets/vm_config.json"
`},
		{"no apexes", "vm.json", nil, `version: 1
apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
payload_config_path: "/mnt/apk/vm.json"
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

func TestDecodeMetadataProtoc(t *testing.T) {
	text := `version: 1
apexes {
  name: "com.android.adbd"
  partition_name: "microdroid-apex-0"
  public_key: "\001\002"
  root_digest: "\377"
  last_update_seconds: 1630000000
  is_factory: true
}
apk {
  name: "apk"
  payload_partition_name: "microdroid-apk"
  idsig_partition_name: "microdroid-apk-idsig"
}
payload_config_path: "/mnt/apk/assets/vm_config.json"
`
	body := protoc(t, "--encode", []byte(text))
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
	want := &Metadata{
		Version: 1,
		Apexes: []*ApexPayload{{Name: "com.android.adbd", PartitionName: "microdroid-apex-0",
			PublicKey: []byte{1, 2}, RootDigest: []byte{0xff}, LastUpdateSeconds: 1630000000, IsFactory: true}},
		Apk:               &ApkPayload{Name: "apk", PayloadPartitionName: "microdroid-apk", IdsigPartitionName: "microdroid-apk-idsig"},
		PayloadConfigPath: "/mnt/apk/assets/vm_config.json",
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
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
