package metadata

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// readSeed reads a committed seed file, failing the fuzz target if it is missing.
func readSeed(f *testing.F, path string) []byte {
	f.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzParsePayloadConfig(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"version": 1, "os": {"name": "microdroid"}, "task": {"type": "microdroid_launcher", "command": "MyPayload.so"}, "apexes": [{"name": "com.android.adbd"}]}`,
		`{"os": {"name": "microdroid_gki"}, "task": {"command": "bin/x", "args": ["a"]}, "apexes": [{"name": "a"}, {"name": "b"}], "extra_apks": [{"path": "/x.apk"}], "prefer_staged": true}`,
		`{"apexes": [{"name": "a"}, {"name": "a"}]}`,
		`{"os": {"name": "../x"}}`,
		`{"task": {"type": "shell"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParsePayloadConfig("fuzz.json", data)
		if err != nil {
			return
		}
		if ValidName("os", cfg.OS.Name) != nil || (cfg.Task != nil && cfg.Task.Command == "") {
			t.Fatalf("accepted an invalid config %+v", cfg)
		}
		out, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParsePayloadConfig("fuzz.json", out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed %+v into %+v", cfg, again)
		}
	})
}

func FuzzLoadVMConfig(f *testing.F) {
	for _, s := range []string{
		`{"kernel": "kernel", "initrd": "initrd.img", "params": "console=hvc0", "disks": [{"partitions": [{"label": "vbmeta_a", "path": "vbmeta.img"}, {"label": "super", "path": "/x/../super.img"}], "writable": false}], "memory_mib": 256}`,
		`{"bootloader": "/apex/com.android.virt/etc/microdroid_bootloader", "disks": [{"image": "disk.img", "writable": true}], "protected": true, "platform_version": "~1.0"}`,
		`{"kernel": "k", "disks": [{"partitions": [{"label": "a", "path": "p"}, {"label": "a", "path": "q"}], "writable": false}]}`,
		`{"kernel": "k", "bootloader": "b"}`,
		`{"kernel": "k", "memory_mib": 0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const dir = "/base/dir"
		cfg, err := parseVMConfig("fuzz.json", dir, data)
		if err != nil {
			return
		}
		paths := []string{cfg.Kernel, cfg.Initrd, cfg.Bootloader}
		for _, d := range cfg.Disks {
			paths = append(paths, d.Image)
			for _, p := range d.Partitions {
				paths = append(paths, p.Path)
			}
		}
		for _, p := range paths {
			if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
				t.Fatalf("path %q is not absolute and clean", p)
			}
		}
		out, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseVMConfig("fuzz.json", "/elsewhere", out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed %+v into %+v", cfg, again)
		}
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	for _, m := range []*Metadata{
		NewPayloadMetadata("assets/vm_config.json", []string{"com.android.adbd", "com.android.os.statsd"}),
		NewPayloadMetadata("x", nil),
		{Apexes: []*ApexPayload{{Name: "a", PartitionName: "microdroid-apex-0", PublicKey: []byte{1}, RootDigest: []byte{2},
			LastUpdateSeconds: 3, IsFactory: true, ManifestVersion: 4, ManifestName: "a"}}},
		{Payload: &Metadata_Config{Config: &BinaryConfig{PayloadBinaryName: "x.so", ExtraApkCount: 2}}},
	} {
		b, err := EncodeMetadata(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMetadata(bytes.NewReader(data))
		if err != nil {
			return
		}
		b, err := EncodeMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeMetadata(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(m, again) {
			t.Fatalf("round trip changed %v into %v", m, again)
		}
	})
}

func FuzzNewIdsig(f *testing.F) {
	f.Add(readSeed(f, filepath.Join("testdata", "small.apk.idsig")))
	root := bytes.Repeat([]byte{0xaa}, 32)
	good := buildIdsig(2, hashingInfo(1, 12, nil, root), []byte("si"), make([]byte, 4096))
	f.Add(good)
	f.Add(good[:40])
	f.Add(buildIdsig(2, hashingInfo(1, 12, root, root), nil, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		sig, err := NewIdsig("fuzz.idsig", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			// In-memory input has no I/O errors: every failure is a format error.
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FormatError", err)
			}
			return
		}
		if sig.Size != int64(len(data)) || sig.TreeOffset+sig.TreeSize != sig.Size || sig.TreeSize%4096 != 0 {
			t.Fatalf("inconsistent %+v for %d bytes", sig, len(data))
		}
		head := buildIdsig(sig.Version, hashingInfo(sig.HashAlgorithm, sig.Log2BlockSize, sig.Salt, sig.RootHash), sig.SigningInfo, nil)
		if !bytes.Equal(head[:len(head)-4], data[:sig.TreeOffset-4]) {
			t.Fatalf("fields %+v do not re-encode to the input header", sig)
		}
		// Verification of arbitrary data must fail or pass cleanly; use the input as the APK.
		if err := sig.VerifyAPK("fuzz.apk", bytes.NewReader(data), int64(len(data)), bytes.NewReader(data)); err != nil && !errors.Is(err, ErrMismatch) {
			t.Fatalf("VerifyAPK: %v, want nil or ErrMismatch", err)
		}
	})
}

func FuzzParseApexInfoList(f *testing.F) {
	f.Add(readSeed(f, filepath.Join("testdata", "apex-info-list.xml")))
	for _, s := range []string{
		`<apex-info-list/>`,
		`<apex-info-list><apex-info moduleName="a" modulePath="/a" isActive="1"/><apex-info moduleName="b" modulePath="b" isActive=" false "/></apex-info-list>`,
		`<apex-info-list><apex-info modulePath="/a"/></apex-info-list>`,
		`<apex-info-list/>junk`,
	} {
		f.Add([]byte(s))
	}
	type xmlOut struct {
		Name       string `xml:"moduleName,attr"`
		Path       string `xml:"modulePath,attr"`
		Pre        string `xml:"preinstalledModulePath,attr"`
		Version    uint64 `xml:"versionCode,attr"`
		LastUpdate uint64 `xml:"lastUpdateMillis,attr"`
		Factory    bool   `xml:"isFactory,attr"`
		Active     bool   `xml:"isActive,attr"`
		SharedLibs bool   `xml:"provideSharedApexLibs,attr"`
	}
	type xmlListOut struct {
		XMLName xml.Name `xml:"apex-info-list"`
		Infos   []xmlOut `xml:"apex-info"`
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		infos, err := ParseApexInfoList("fuzz.xml", bytes.NewReader(data))
		if err != nil {
			return
		}
		out := xmlListOut{}
		for _, i := range infos {
			if i.ModuleName == "" || i.ModulePath == "" {
				t.Fatalf("accepted an empty name or path: %+v", i)
			}
			// The encoder replaces characters XML cannot carry; such input is not round-trippable.
			if strings.ContainsRune(i.ModuleName+i.ModulePath+i.PreinstalledModulePath, '\uFFFD') {
				return
			}
			out.Infos = append(out.Infos, xmlOut{i.ModuleName, i.ModulePath, i.PreinstalledModulePath, i.VersionCode,
				i.LastUpdateSeconds, i.IsFactory, i.IsActive, i.ProvideSharedApexLibs})
		}
		b, err := xml.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseApexInfoList("fuzz.xml", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if !reflect.DeepEqual(infos, again) {
			t.Fatalf("round trip changed %+v into %+v", infos, again)
		}
	})
}
