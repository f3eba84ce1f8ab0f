package testdata_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"vmfs/testdata"
)

// run executes an oracle tool and fails the test with its output if it exits non-zero.
func run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	path := testdata.RequireTool(t, name)
	cmd := exec.Command(path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestAPKSignatureVerifiesWithApksigner(t *testing.T) {
	// The signer must be the committed test key, not whatever key last signed the file.
	pemBytes, err := os.ReadFile(testdata.CertPath())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", testdata.CertPath())
	}
	sum := sha256.Sum256(block.Bytes)
	signer := "Signer #1 certificate SHA-256 digest: " + hex.EncodeToString(sum[:])
	// The Android 12 sample is signed v2 only; the Android 13+ ones v3, which Android 14+
	// guests verify (apksigner then leaves out v2, as their minSdkVersion 33 allows).
	v2 := "Verified using v2 scheme (APK Signature Scheme v2): true"
	v3 := "Verified using v3 scheme (APK Signature Scheme v3): true"
	for _, s := range signedAPKs() {
		t.Run(filepath.Base(filepath.Dir(s.apk))+"/"+filepath.Base(s.apk), func(t *testing.T) {
			out := run(t, nil, "apksigner", "verify", "-v", "--print-certs", "--v4-signature-file", s.idsig, s.apk)
			scheme := v2
			if s.later {
				scheme = v3
			}
			for _, want := range []string{scheme, "Verified using v4 scheme (APK Signature Scheme v4): true",
				"Number of signers: 1", signer} {
				if !strings.Contains(out, want) {
					t.Errorf("apksigner verify output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// signedAPK is an APK fixture with its v4 idsig; levels is its merkle tree's height.
type signedAPK struct {
	apk, idsig string
	later      bool // the Android 13+ sample or one of its extra APKs
	levels     int
}

func signedAPKs() []signedAPK {
	out := []signedAPK{
		{testdata.APKPath(), testdata.IdsigPath(), false, 2},
		{testdata.LaterAPKPath(), testdata.LaterIdsigPath(), true, 1},
	}
	for _, e := range testdata.LaterExtraAPKs() {
		out = append(out, signedAPK{e.APK, e.Idsig, true, 1})
	}
	return out
}

// allAPEXes lists both samples' APEX fixtures.
func allAPEXes() []testdata.APEX { return append(testdata.APEXes(), testdata.LaterAPEXes()...) }

func TestZipsPassUnzipTest(t *testing.T) {
	var files []string
	for _, s := range signedAPKs() {
		files = append(files, s.apk)
	}
	for _, a := range allAPEXes() {
		files = append(files, testdata.Path(a.Rel))
	}
	for _, f := range files {
		rel, _ := filepath.Rel(testdata.Dir(), f)
		t.Run(rel, func(t *testing.T) {
			out := run(t, nil, "unzip", "-tq", f)
			if !strings.Contains(out, "No errors detected") {
				t.Errorf("unzip -tq %s: %s", f, out)
			}
		})
	}
}

// align4K rounds up to a 4096 multiple, as the size-trailer APEX partition does.
func align4K(n int64) int64 { return (n + 4095) &^ 4095 }

func TestAPEXSizesHitTrailerEdgeCases(t *testing.T) {
	// Sizes are written out here rather than read from APEXes() so that an edit to the
	// table in doc.go that loses an edge case fails this test.
	tests := []struct {
		rel       string
		size      int64
		partition int64 // align4K(size + 4) under the 2021 size trailer
	}{
		{"apex/com.android.adbd.apex", 4092, 4096},
		{"apex/com.android.os.statsd.apex", 8192, 12288},
		{"apex/com.vmfs.edge.apex", 4093, 8192},
		{"apex/factory/com.android.adbd.apex", 6000, 8192},
	}
	byRel := map[string]testdata.APEX{}
	for _, a := range testdata.APEXes() {
		byRel[a.Rel] = a
	}
	if len(byRel) != len(tests) {
		t.Errorf("APEXes() has %d entries, test table %d", len(byRel), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			fi, err := os.Stat(testdata.Path(tt.rel))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != tt.size {
				t.Errorf("size %d, want %d", fi.Size(), tt.size)
			}
			if got := align4K(fi.Size() + 4); got != tt.partition {
				t.Errorf("trailer partition %d, want %d", got, tt.partition)
			}
			if a, ok := byRel[tt.rel]; !ok || a.Size != tt.size {
				t.Errorf("APEXes() entry %+v, want size %d", a, tt.size)
			}
		})
	}
}

// Without the size trailer (Android 13+) an APEX partition is the APEX padded to 4 KiB,
// which apexd only opens if there is no padding: the later APEXes are 4 KiB multiples.
func TestLaterAPEXesAligned(t *testing.T) {
	for _, a := range testdata.LaterAPEXes() {
		fi, err := os.Stat(testdata.Path(a.Rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != a.Size || fi.Size()%4096 != 0 {
			t.Errorf("%s: %d bytes (table: %d); want the table's size, a 4096 multiple", a.Rel, fi.Size(), a.Size)
		}
	}
}

// zipEntry reads one member with archive/zip (unzip already vouched for the archive).
func zipEntry(t *testing.T, archive, name string) (*zip.File, []byte) {
	t.Helper()
	zr, err := zip.OpenReader(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name != name {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return f, b
	}
	t.Fatalf("%s: no entry %s", archive, name)
	return nil, nil
}

func TestAPEXManifestDecodesWithProtoc(t *testing.T) {
	for _, a := range allAPEXes() {
		t.Run(a.Rel, func(t *testing.T) {
			_, pb := zipEntry(t, testdata.Path(a.Rel), "apex_manifest.pb")
			out := run(t, pb, "protoc", "-I", testdata.Path("gen"),
				"--decode=apex.proto.ApexManifest", "apex_manifest.proto")
			want := "name: \"" + a.Name + "\"\nversion: " + itoa(a.Version) + "\n"
			if out != want {
				t.Errorf("protoc --decode = %q, want %q", out, want)
			}
			f, payload := zipEntry(t, testdata.Path(a.Rel), "apex_payload.img")
			if f.Method != zip.Store || len(payload) < 1024 {
				t.Errorf("apex_payload.img method %d, %d bytes; want stored, at least 1 KiB", f.Method, len(payload))
			}
		})
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestAPEXInfoListResolvesRelativePaths(t *testing.T) {
	raw, err := os.ReadFile(testdata.APEXInfoListPath())
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		XMLName xml.Name `xml:"apex-info-list"`
		Infos   []struct {
			Attrs []xml.Attr `xml:",any,attr"`
		} `xml:"apex-info"`
	}
	if err := xml.Unmarshal(raw, &list); err != nil {
		t.Fatalf("%s: %v", testdata.APEXInfoListPath(), err)
	}
	// Required attributes per AOSP system/apex apexd/ApexInfoList.xsd.
	required := []string{"moduleName", "modulePath", "versionCode", "versionName", "isFactory", "isActive", "provideSharedApexLibs"}
	var active, inactive []map[string]string
	for i, info := range list.Infos {
		attrs := map[string]string{}
		for _, a := range info.Attrs {
			attrs[a.Name.Local] = a.Value
		}
		for _, r := range required {
			if _, ok := attrs[r]; !ok {
				t.Errorf("apex-info %d lacks required attribute %s", i, r)
			}
		}
		path := attrs["modulePath"]
		if filepath.IsAbs(path) {
			t.Errorf("apex-info %d modulePath %q is absolute", i, path)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(testdata.APEXInfoListPath()), path)); err != nil {
			t.Errorf("apex-info %d: %v", i, err)
		}
		switch attrs["isActive"] {
		case "true":
			active = append(active, attrs)
		case "false":
			if len(active) > 0 {
				t.Errorf("inactive %s listed after an active entry; first-match resolvers would pass", attrs["moduleName"])
			}
			inactive = append(inactive, attrs)
		default:
			t.Errorf("apex-info %d isActive %q", i, attrs["isActive"])
		}
	}
	var wantActive []string
	for _, a := range testdata.APEXes() {
		if a.Active {
			wantActive = append(wantActive, a.Name+"="+a.Rel)
		}
	}
	var gotActive []string
	for _, a := range active {
		gotActive = append(gotActive, a["moduleName"]+"="+a["modulePath"])
	}
	if strings.Join(gotActive, ",") != strings.Join(wantActive, ",") {
		t.Errorf("active entries %v, want %v", gotActive, wantActive)
	}
	if len(inactive) != 1 || inactive[0]["moduleName"] != "com.android.adbd" {
		t.Errorf("inactive entries %v, want one com.android.adbd shadowed by the active one", inactive)
	}
}

// attrsOf reads every <apex-info> of the list at path as attribute maps.
func attrsOf(t *testing.T, path string) []map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		XMLName xml.Name `xml:"apex-info-list"`
		Infos   []struct {
			Attrs []xml.Attr `xml:",any,attr"`
		} `xml:"apex-info"`
	}
	if err := xml.Unmarshal(raw, &list); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []map[string]string
	for _, info := range list.Infos {
		attrs := map[string]string{}
		for _, a := range info.Attrs {
			attrs[a.Name.Local] = a.Value
		}
		out = append(out, attrs)
	}
	return out
}

// TestLaterAPEXInfoList checks the Android 13+ list against its table and what a device
// writes: seconds in lastUpdateMillis, absolute preinstalled paths under /system or
// /system_ext, both factory and updated entries, inactive entries first.
func TestLaterAPEXInfoList(t *testing.T) {
	infos := attrsOf(t, testdata.LaterAPEXInfoListPath())
	apexes := testdata.LaterAPEXes()
	if len(infos) != len(apexes) {
		t.Fatalf("%d entries, table has %d", len(infos), len(apexes))
	}
	factory := map[string]int{}
	for i, attrs := range infos {
		a := apexes[i]
		want := map[string]string{
			"moduleName": a.Name, "modulePath": strings.TrimPrefix(a.Rel, "later/"), "preinstalledModulePath": a.Preinstalled,
			"versionCode": itoa(a.Version), "versionName": "", "isFactory": fmt.Sprint(a.Factory), "isActive": fmt.Sprint(a.Active),
			"lastUpdateMillis": itoa(a.LastUpdate), "provideSharedApexLibs": fmt.Sprint(a.SharedLibs),
		}
		if !reflect.DeepEqual(attrs, want) {
			t.Errorf("entry %d: %v, want %v", i, attrs, want)
		}
		if i > 0 && infos[i-1]["isActive"] == "true" && attrs["isActive"] == "false" {
			t.Errorf("inactive %s after an active entry", attrs["moduleName"])
		}
		// Seconds: a millisecond value of these years is past 10^12.
		if a.LastUpdate <= 0 || a.LastUpdate >= 1e10 {
			t.Errorf("%s: lastUpdateMillis %d is not a time in seconds", a.Name, a.LastUpdate)
		}
		if !strings.HasPrefix(a.Preinstalled, "/system/") && !strings.HasPrefix(a.Preinstalled, "/system_ext/") {
			t.Errorf("%s: preinstalled at %q, not under /system or /system_ext", a.Name, a.Preinstalled)
		}
		if fi, err := os.Stat(filepath.Join(filepath.Dir(testdata.LaterAPEXInfoListPath()), attrs["modulePath"])); err != nil || fi.Size() != a.Size {
			t.Errorf("%s: modulePath %s: %v", a.Name, attrs["modulePath"], err)
		}
		factory[attrs["isFactory"]+"/"+attrs["provideSharedApexLibs"]]++
	}
	if factory["true/false"] == 0 || factory["false/false"] == 0 || factory["true/true"] == 0 || factory["false/true"] == 0 {
		t.Errorf("isFactory/provideSharedApexLibs combinations %v: want each of the four", factory)
	}
}

// TestLaterAPKContents: the Android 13+ payload config is valid for Android 13 (it has
// export_tombstones) and names the extra APKs by paths relative to the APK.
func TestLaterAPKContents(t *testing.T) {
	out := run(t, nil, "unzip", "-p", testdata.LaterAPKPath(), testdata.ConfigPath)
	var cfg struct {
		Apexes []struct {
			Name string `json:"name"`
		} `json:"apexes"`
		ExtraApks []struct {
			Path string `json:"path"`
		} `json:"extra_apks"`
		ExportTombstones *bool `json:"export_tombstones"`
		Task             struct {
			Command string `json:"command"`
		} `json:"task"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	var apexes []string
	for _, a := range cfg.Apexes {
		apexes = append(apexes, a.Name)
	}
	if !reflect.DeepEqual(apexes, testdata.LaterConfigApexes()) || cfg.ExportTombstones == nil ||
		cfg.Task.Command != testdata.PayloadBinaryName {
		t.Errorf("config %+v", cfg)
	}
	extras := testdata.LaterExtraAPKs()
	if len(cfg.ExtraApks) != len(extras) {
		t.Fatalf("config lists %d extra apks, want %d", len(cfg.ExtraApks), len(extras))
	}
	for i, e := range cfg.ExtraApks {
		if got := filepath.Join(filepath.Dir(testdata.LaterAPKPath()), e.Path); got != extras[i].APK {
			t.Errorf("extra_apks[%d] is %s, want %s", i, got, extras[i].APK)
		}
	}
	f, lib := zipEntry(t, testdata.LaterAPKPath(), "lib/x86_64/"+testdata.PayloadBinaryName)
	if f.Method != zip.Store || len(lib) == 0 {
		t.Errorf("payload binary method %d, %d bytes; want stored", f.Method, len(lib))
	}
}

func TestAPKContents(t *testing.T) {
	apk := testdata.APKPath()
	fi, err := os.Stat(apk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= testdata.APKSizeFloor {
		t.Errorf("%s is %d bytes, want over %d so the v4 tree has two levels", apk, fi.Size(), testdata.APKSizeFloor)
	}
	// Not 4 KiB aligned, so the APK partition needs zero padding (the common case).
	if fi.Size()%4096 == 0 {
		t.Errorf("%s is %d bytes, a 4096 multiple; want an unaligned APK", apk, fi.Size())
	}

	t.Run("config", func(t *testing.T) {
		out := run(t, nil, "unzip", "-p", apk, testdata.ConfigPath)
		var cfg struct {
			OS struct {
				Name string `json:"name"`
			} `json:"os"`
			Task struct {
				Type    string `json:"type"`
				Command string `json:"command"`
			} `json:"task"`
			Apexes []struct {
				Name string `json:"name"`
			} `json:"apexes"`
		}
		if err := json.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatalf("%s in %s: %v", testdata.ConfigPath, apk, err)
		}
		if cfg.OS.Name != "microdroid" || cfg.Task.Type != "microdroid_launcher" || cfg.Task.Command != "libsample.so" {
			t.Errorf("config %+v", cfg)
		}
		var got, want []string
		for _, a := range cfg.Apexes {
			got = append(got, a.Name)
		}
		for _, a := range testdata.APEXes() {
			if a.Active {
				want = append(want, a.Name)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("config apexes %v, want %v", got, want)
		}
	})

	t.Run("native library stored and page aligned", func(t *testing.T) {
		f, lib := zipEntry(t, apk, "lib/x86_64/libsample.so")
		if f.Method != zip.Store {
			t.Errorf("libsample.so method %d, want stored", f.Method)
		}
		if len(lib) < testdata.APKSizeFloor {
			t.Errorf("libsample.so is %d bytes", len(lib))
		}
		run(t, nil, "zipalign", "-c", "-p", "4", apk)
	})

	t.Run("binary manifest", func(t *testing.T) {
		out := run(t, nil, "aapt", "dump", "badging", apk)
		for _, want := range []string{"package: name='com.vmfs.sample'", "sdkVersion:'31'"} {
			if !strings.Contains(out, want) {
				t.Errorf("aapt dump badging lacks %q:\n%s", want, out)
			}
		}
	})
}

// readBytes reads a v4 "bytes" field: u32 little-endian length, then the data.
func readBytes(t *testing.T, b []byte, off *int) []byte {
	t.Helper()
	if *off+4 > len(b) {
		t.Fatalf("idsig: length at byte %d past end", *off)
	}
	n := int(binary.LittleEndian.Uint32(b[*off:]))
	*off += 4
	if *off+n > len(b) {
		t.Fatalf("idsig: %d bytes at byte %d past end", n, *off)
	}
	v := b[*off : *off+n]
	*off += n
	return v
}

// TestIdsigTreeMatchesAPK rebuilds the v4 Merkle tree (formats.md section 7.2) from each
// APK and compares it with the tree apksigner stored, checking the height the fixture
// is meant to have.
func TestIdsigTreeMatchesAPK(t *testing.T) {
	for _, s := range signedAPKs() {
		t.Run(filepath.Base(s.apk), func(t *testing.T) {
			idsig, err := os.ReadFile(s.idsig)
			if err != nil {
				t.Fatal(err)
			}
			apk, err := os.ReadFile(s.apk)
			if err != nil {
				t.Fatal(err)
			}
			if v := binary.LittleEndian.Uint32(idsig); v != 2 {
				t.Fatalf("idsig version %d, want 2", v)
			}
			off := 4
			hashing := readBytes(t, idsig, &off)
			readBytes(t, idsig, &off) // signing info, checked by apksigner
			tree := readBytes(t, idsig, &off)
			if off != len(idsig) {
				t.Errorf("idsig has %d trailing bytes", len(idsig)-off)
			}

			h := 0
			alg := binary.LittleEndian.Uint32(hashing)
			h += 4
			log2 := hashing[h]
			h++
			salt := readBytes(t, hashing, &h)
			root := readBytes(t, hashing, &h)
			if alg != 1 || log2 != 12 || len(salt) != 0 || len(root) != 32 {
				t.Fatalf("hashing_info alg %d log2 %d salt %d B root %d B; want 1, 12, 0, 32", alg, log2, len(salt), len(root))
			}

			// Level 0 hashes the zero-padded data blocks; levels are stored root-most first.
			var levels [][]byte
			data := apk
			for {
				var level []byte
				for i := 0; i < len(data); i += 4096 {
					block := make([]byte, 4096)
					copy(block, data[i:])
					sum := sha256.Sum256(block)
					level = append(level, sum[:]...)
				}
				level = append(level, make([]byte, (4096-len(level)%4096)%4096)...)
				levels = append([][]byte{level}, levels...)
				if len(level) == 4096 {
					break
				}
				data = level
			}
			if len(levels) != s.levels {
				t.Errorf("tree has %d levels, want %d", len(levels), s.levels)
			}
			want := bytes.Join(levels, nil)
			if !bytes.Equal(tree, want) {
				t.Errorf("stored tree (%d B) differs from rebuilt tree (%d B)", len(tree), len(want))
			}
			if sum := sha256.Sum256(levels[0]); !bytes.Equal(root, sum[:]) {
				t.Errorf("root %x, want sha256 of top level %x", root, sum)
			}
		})
	}
}

func TestOSConfigPlaceholders(t *testing.T) {
	raw, err := os.ReadFile(testdata.OSConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Kernel string `json:"kernel"`
		Initrd string `json:"initrd"`
		Disks  []struct {
			Partitions []struct {
				Label string `json:"label"`
				Path  string `json:"path"`
			} `json:"partitions"`
		} `json:"disks"`
		MemoryMiB uint32 `json:"memory_mib"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", testdata.OSConfigPath(), err)
	}
	if cfg.MemoryMiB == 0 || len(cfg.Disks) != 1 || len(cfg.Disks[0].Partitions) != 2 {
		t.Fatalf("config %+v, want memory_mib and one disk of two partitions", cfg)
	}
	size := func(rel string) int64 {
		if filepath.IsAbs(rel) {
			t.Errorf("path %q is absolute, want relative to %s", rel, testdata.OSDir())
		}
		fi, err := os.Stat(filepath.Join(testdata.OSDir(), rel))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	size(cfg.Kernel)
	size(cfg.Initrd)
	aligned := map[bool]int{}
	for _, p := range cfg.Disks[0].Partitions {
		aligned[size(p.Path)%4096 == 0]++
	}
	if aligned[true] != 1 || aligned[false] != 1 {
		t.Errorf("partitions: %d 4 KiB aligned, %d not; want one of each", aligned[true], aligned[false])
	}
}

// TestGeneratorReproducesFixtures reruns ./gen with the committed key into a temporary
// directory and expects identical bytes: the committed files are what the generator makes.
// A new Go release that changes compress/flate output would fail here; then regenerate.
func TestGeneratorReproducesFixtures(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under testing.Short(): runs go, aapt, zipalign, apksigner and protoc")
	}
	for _, tool := range []string{"aapt", "zipalign", "apksigner", "protoc"} {
		testdata.RequireTool(t, tool)
	}
	tmp := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmp, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"key.pk8", "key.x509.pem"} {
		b, err := os.ReadFile(testdata.Path("app", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "app", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	goTool := testdata.RequireTool(t, "go")
	cmd := exec.Command(goTool, "run", "./gen", "-dir", tmp)
	cmd.Dir = testdata.Dir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen: %v\n%s", err, out)
	}
	err := filepath.WalkDir(tmp, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(tmp, path)
		if err != nil {
			return err
		}
		t.Run(rel, func(t *testing.T) {
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(testdata.Path(rel))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("regenerated %s (%d B) differs from the committed file (%d B); run go generate ./testdata", rel, len(got), len(want))
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPublicDirUnderPrivateTmp: with $TMPDIR under a 0700 directory (a home), a
// public directory is still one another user reaches.
func TestPublicDirUnderPrivateTmp(t *testing.T) {
	testdata.RequireRoot(t) // to read as another user
	// t.TempDir is 0700: a home
	private := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(private, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", private)
	f := filepath.Join(testdata.PublicDir(t), "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := testdata.ReadAs(t, testdata.Nobody, f); err != nil || string(got) != "x" {
		t.Errorf("nobody reads %s: %q %v", f, got, err)
	}
}
