package metadata

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParsePayloadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want *PayloadConfig // nil: an error is expected
	}{
		{"minimal", `{}`, &PayloadConfig{OS: OSConfig{Name: "microdroid"}}},
		{"seed sample", `{"version": 1, "os": {"name": "microdroid"}, "task": {"type": "microdroid_launcher", "command": "MyPayload.so"}, "apexes": [{"name": "com.android.adbd"}]}`,
			&PayloadConfig{OS: OSConfig{Name: "microdroid"}, Task: &Task{Type: "microdroid_launcher", Command: "MyPayload.so"}, Apexes: []ApexConfig{{Name: "com.android.adbd"}}}},
		{"task type defaults to executable", `{"task": {"command": "/system/bin/true"}}`,
			&PayloadConfig{OS: OSConfig{Name: "microdroid"}, Task: &Task{Type: "executable", Command: "/system/bin/true"}}},
		{"all keys", `{"os": {"name": "microdroid_gki"}, "task": {"type": "executable", "command": "bin/x", "args": ["a"]}, "apexes": [{"name": "a"}, {"name": "b"}], "extra_apks": [{"path": "/system/etc/x.apk"}], "prefer_staged": true, "export_tombstones": true}`,
			&PayloadConfig{OS: OSConfig{Name: "microdroid_gki"}, Task: &Task{Type: "executable", Command: "bin/x"}, Apexes: []ApexConfig{{Name: "a"}, {Name: "b"}}, ExtraApks: []ApkConfig{{Path: "/system/etc/x.apk"}}, PreferStaged: true}},
		{"null os uses default", `{"os": null}`, &PayloadConfig{OS: OSConfig{Name: "microdroid"}}},
		{"empty apexes", `{"apexes": []}`, &PayloadConfig{OS: OSConfig{Name: "microdroid"}}},

		{"not json", `{`, nil},
		{"trailing garbage", `{} x`, nil},
		{"top level array", `[]`, nil},
		{"os without name", `{"os": {}}`, nil},
		{"os name empty", `{"os": {"name": ""}}`, nil},
		{"os name with slash", `{"os": {"name": "../etc/passwd"}}`, nil},
		{"os name dotdot", `{"os": {"name": ".."}}`, nil},
		{"os is a string", `{"os": "microdroid"}`, nil},
		{"os name is a number", `{"os": {"name": 1}}`, nil},
		{"task without command", `{"task": {"type": "executable"}}`, nil},
		{"task with empty command", `{"task": {"command": ""}}`, nil},
		{"task with bad type", `{"task": {"type": "shell", "command": "x"}}`, nil},
		{"task command is a list", `{"task": {"command": ["x"]}}`, nil},
		{"apex without name", `{"apexes": [{}]}`, nil},
		{"apex name with slash", `{"apexes": [{"name": "a/b"}]}`, nil},
		{"apex name with NUL", `{"apexes": [{"name": "a\u0000b"}]}`, nil},
		{"duplicate apex", `{"apexes": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}`, nil},
		{"apexes is an object", `{"apexes": {"name": "a"}}`, nil},
		{"extra apk without path", `{"extra_apks": [{}]}`, nil},
		{"prefer_staged is a string", `{"prefer_staged": "yes"}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePayloadConfig("assets/vm_config.json", []byte(tc.json))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				if !strings.Contains(err.Error(), "assets/vm_config.json") {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

type zipEntry struct {
	name string
	data []byte
	mode fs.FileMode // 0: regular file
}

// makeZip writes a zip with the entries, deflated, and returns its path.
func makeZip(t *testing.T, entries ...zipEntry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.mode != 0 {
			h.SetMode(e.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(t.TempDir(), "app.apk"), buf.Bytes())
}

// lyingZip holds one entry whose header claims 100 bytes but whose data inflates to 2 MiB.
func lyingZip(t *testing.T, name string) string {
	t.Helper()
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{' '}, 2<<20)
	fw.Write(big)
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name: name, Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(big),
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(t.TempDir(), "lying.apk"), buf.Bytes())
}

func TestReadPayloadConfig(t *testing.T) {
	const cfgPath = "assets/vm_config.json"
	good := []byte(`{"os": {"name": "microdroid"}, "task": {"type": "microdroid_launcher", "command": "MyPayload.so"}, "apexes": [{"name": "com.android.adbd"}]}`)
	okApk := makeZip(t, zipEntry{name: "AndroidManifest.xml", data: []byte("x")}, zipEntry{name: cfgPath, data: good})

	t.Run("ok", func(t *testing.T) {
		got, err := ReadPayloadConfig(okApk, cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		want := &PayloadConfig{OS: OSConfig{Name: "microdroid"}, Task: &Task{Type: "microdroid_launcher", Command: "MyPayload.so"}, Apexes: []ApexConfig{{Name: "com.android.adbd"}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("exactly the size limit", func(t *testing.T) {
		data := append([]byte("{}"), bytes.Repeat([]byte{' '}, maxPayloadConfigSize-2)...)
		if _, err := ReadPayloadConfig(makeZip(t, zipEntry{name: cfgPath, data: data}), cfgPath); err != nil {
			t.Fatal(err)
		}
	})

	notZip := writeFile(t, filepath.Join(t.TempDir(), "notzip.apk"), []byte("this is not a zip file at all"))
	okBytes, err := os.ReadFile(okApk)
	if err != nil {
		t.Fatal(err)
	}
	truncated := writeFile(t, filepath.Join(t.TempDir(), "truncated.apk"), okBytes[:len(okBytes)/2])
	for _, tc := range []struct {
		name       string
		apk        string
		configPath string
		is         error // nil: any error
	}{
		{"apk missing", filepath.Join(t.TempDir(), "missing.apk"), cfgPath, fs.ErrNotExist},
		{"apk is a directory", t.TempDir(), cfgPath, nil},
		{"not a zip", notZip, cfgPath, zip.ErrFormat},
		{"truncated zip", truncated, cfgPath, zip.ErrFormat},
		{"entry absent", okApk, "assets/other.json", ErrNotFound},
		{"empty config path", okApk, "", nil},
		{"absolute config path", okApk, "/" + cfgPath, nil},
		{"dotdot config path", okApk, "../" + cfgPath, nil},
		{"inner dotdot", okApk, "assets/../" + cfgPath, nil},
		{"unclean config path", okApk, "assets//vm_config.json", nil},
		{"dot config path", okApk, ".", nil},
		{"trailing slash", okApk, "assets/", nil},
		{"directory entry", makeZip(t, zipEntry{name: cfgPath, mode: fs.ModeDir | 0o755}), cfgPath, nil},
		{"duplicate entry", makeZip(t, zipEntry{name: cfgPath, data: good}, zipEntry{name: cfgPath, data: []byte("{}")}), cfgPath, nil},
		{"entry too large", makeZip(t, zipEntry{name: cfgPath, data: bytes.Repeat([]byte{' '}, maxPayloadConfigSize+1)}), cfgPath, nil},
		{"entry size lies", lyingZip(t, cfgPath), cfgPath, nil},
		{"entry is bad json", makeZip(t, zipEntry{name: cfgPath, data: []byte(`{"task": {}}`)}), cfgPath, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadPayloadConfig(tc.apk, tc.configPath)
			if err == nil {
				t.Fatalf("no error, got %+v", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.apk) {
				t.Errorf("error %q does not name the apk %s", err, tc.apk)
			}
			t.Log(err)
		})
	}
}

// A key repeated in one object, at any depth, is refused by name in both configs:
// AVF's serde fails on a repeated field, where encoding/json would keep the last.
func TestConfigsRefuseDuplicateKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, json, say string
		vm              bool // a VM config, else a payload config
	}{
		{"payload top level", `{"os": {"name": "a"}, "os": {"name": "b"}}`, `duplicate key "os"`, false},
		{"payload in an object", `{"task": {"command": "a", "command": "b"}}`, `duplicate key "command" in task`, false},
		{"payload in an array", `{"apexes": [{"name": "a"}, {"name": "b", "name": "c"}]}`, `duplicate key "name" in apexes[1]`, false},
		// Stricter than serde, which skips unknown keys and so their repeats.
		{"payload unknown key", `{"version": 1, "version": 2}`, `duplicate key "version"`, false},
		{"vm top level", `{"kernel": "a", "kernel": "b"}`, `duplicate key "kernel"`, true},
		{"vm in a disk", `{"kernel": "k", "disks": [{"image": "i", "writable": false, "writable": true}]}`, `duplicate key "writable" in disks[0]`, true},
		{"vm in a partition", `{"kernel": "k", "disks": [{"partitions": [{"label": "a", "path": "p", "path": "q"}], "writable": false}]}`,
			`duplicate key "path" in disks[0].partitions[0]`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			file := filepath.Join(dir, "vm.json")
			if tc.vm {
				_, err = LoadVMConfig(writeFile(t, file, []byte(tc.json)))
			} else {
				file = "assets/vm_config.json"
				_, err = ParsePayloadConfig(file, []byte(tc.json))
			}
			if err == nil || !strings.Contains(err.Error(), file) || !strings.HasSuffix(err.Error(), tc.say) {
				t.Errorf("got %v, want an error naming %s and ending %s", err, file, tc.say)
			}
		})
	}
}
