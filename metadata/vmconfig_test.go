package metadata

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"vmfs/testdata"
)

func TestLoadVMConfig(t *testing.T) {
	dir := t.TempDir()
	label36 := strings.Repeat("é", 36) // 36 UTF-16 units, 72 UTF-8 bytes
	for _, tc := range []struct {
		name string
		json string
		want *VMConfig // nil: an error is expected
	}{
		{"kernel only", `{"kernel": "kernel", "disks": []}`,
			&VMConfig{Kernel: filepath.Join(dir, "kernel")}},
		{"A13 microdroid.json", `{
			"bootloader": "/apex/com.android.virt/etc/microdroid_bootloader",
			"disks": [
				{"partitions": [
					{"label": "boot_a", "path": "/apex/com.android.virt/etc/fs/microdroid_boot-5.10.img"},
					{"label": "vbmeta_a", "path": "fs/microdroid_vbmeta.img"},
					{"label": "super", "path": "./fs/../fs/microdroid_super.img"}
				], "writable": false},
				{"partitions": [{"label": "uboot_env", "path": "uboot_env.img", "writable": false}], "writable": true}
			],
			"memory_mib": 256,
			"platform_version": "~1.0"
		}`, &VMConfig{
			Bootloader: "/apex/com.android.virt/etc/microdroid_bootloader",
			Disks: []DiskImage{
				{Partitions: []Partition{
					{Label: "boot_a", Path: "/apex/com.android.virt/etc/fs/microdroid_boot-5.10.img"},
					{Label: "vbmeta_a", Path: filepath.Join(dir, "fs/microdroid_vbmeta.img")},
					{Label: "super", Path: filepath.Join(dir, "fs/microdroid_super.img")},
				}},
				{Partitions: []Partition{{Label: "uboot_env", Path: filepath.Join(dir, "uboot_env.img")}}, Writable: true},
			},
			MemoryMiB: 256,
		}},
		{"kernel initrd params image", `{"kernel": "/k//x/../kernel", "initrd": "initrd.img", "params": "console=hvc0", "protected": true,
			"disks": [{"image": "disk.img", "writable": true}]}`,
			&VMConfig{Kernel: "/k/kernel", Initrd: filepath.Join(dir, "initrd.img"), Params: "console=hvc0", Protected: true,
				Disks: []DiskImage{{Image: filepath.Join(dir, "disk.img"), Writable: true}}}},
		{"label of 36 UTF-16 units", `{"kernel": "k", "disks": [{"partitions": [{"label": "` + label36 + `", "path": "p"}], "writable": false}]}`,
			&VMConfig{Kernel: filepath.Join(dir, "k"), Disks: []DiskImage{{Partitions: []Partition{{Label: label36, Path: filepath.Join(dir, "p")}}}}}},
		{"same label on two disks", `{"kernel": "k", "disks": [{"partitions": [{"label": "a", "path": "p"}], "writable": false}, {"partitions": [{"label": "a", "path": "q"}], "writable": false}]}`,
			&VMConfig{Kernel: filepath.Join(dir, "k"), Disks: []DiskImage{
				{Partitions: []Partition{{Label: "a", Path: filepath.Join(dir, "p")}}},
				{Partitions: []Partition{{Label: "a", Path: filepath.Join(dir, "q")}}}}}},

		{"not json", `{"kernel": `, nil},
		{"neither kernel nor bootloader", `{"disks": []}`, nil},
		{"kernel and bootloader", `{"kernel": "k", "bootloader": "b"}`, nil},
		{"initrd with bootloader", `{"bootloader": "b", "initrd": "i"}`, nil},
		{"empty kernel path", `{"kernel": ""}`, nil},
		{"memory_mib zero", `{"kernel": "k", "memory_mib": 0}`, nil},
		{"memory_mib negative", `{"kernel": "k", "memory_mib": -1}`, nil},
		{"memory_mib too big", `{"kernel": "k", "memory_mib": 4294967296}`, nil},
		{"memory_mib string", `{"kernel": "k", "memory_mib": "256"}`, nil},
		{"disk with image and partitions", `{"kernel": "k", "disks": [{"image": "i", "partitions": [{"label": "a", "path": "p"}], "writable": false}]}`, nil},
		{"disk with neither", `{"kernel": "k", "disks": [{"writable": false}]}`, nil},
		{"disk with empty partitions only", `{"kernel": "k", "disks": [{"partitions": [], "writable": false}]}`, nil},
		{"disk without writable", `{"kernel": "k", "disks": [{"image": "i"}]}`, nil},
		{"disk with empty image", `{"kernel": "k", "disks": [{"image": "", "writable": false}]}`, nil},
		{"partition without label", `{"kernel": "k", "disks": [{"partitions": [{"path": "p"}], "writable": false}]}`, nil},
		{"partition with empty label", `{"kernel": "k", "disks": [{"partitions": [{"label": "", "path": "p"}], "writable": false}]}`, nil},
		{"partition without path", `{"kernel": "k", "disks": [{"partitions": [{"label": "a"}], "writable": false}]}`, nil},
		{"duplicate label", `{"kernel": "k", "disks": [{"partitions": [{"label": "a", "path": "p"}, {"label": "a", "path": "q"}], "writable": false}]}`, nil},
		{"label of 37 UTF-16 units", `{"kernel": "k", "disks": [{"partitions": [{"label": "` + strings.Repeat("a", 37) + `", "path": "p"}], "writable": false}]}`, nil},
		{"label with astral runes", `{"kernel": "k", "disks": [{"partitions": [{"label": "` + strings.Repeat("😀", 19) + `", "path": "p"}], "writable": false}]}`, nil},
		{"disks is an object", `{"kernel": "k", "disks": {}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "vm.json"), []byte(tc.json))
			got, err := LoadVMConfig(path)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestLoadVMConfigRelativeFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vm.json"), []byte(`{"kernel": "kernel"}`))
	t.Chdir(dir)
	got, err := LoadVMConfig("vm.json")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "kernel"); got.Kernel != want {
		t.Errorf("kernel = %q, want %q", got.Kernel, want)
	}
}

func TestLoadVMConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	big := writeFile(t, filepath.Join(dir, "big.json"), append([]byte(`{"kernel": "k"}`), make([]byte, maxVMConfigSize)...))
	t.Run("missing", func(t *testing.T) {
		_, err := LoadVMConfig(filepath.Join(dir, "missing.json"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		_, err := LoadVMConfig(big)
		if err == nil || !strings.Contains(err.Error(), big) {
			t.Errorf("got %v, want an error naming %s", err, big)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := LoadVMConfig(dir); err == nil {
			t.Error("no error loading a directory")
		}
	})
}

func TestOSConfigPath(t *testing.T) {
	for _, tc := range []struct {
		dir, name, want string
	}{
		{"/apex/com.android.virt/etc", "microdroid", "/apex/com.android.virt/etc/microdroid.json"},
		{"testdata/os", "microdroid_gki-android14-6.1", "testdata/os/microdroid_gki-android14-6.1.json"},
		{"/etc", "../passwd", ""},
		{"/etc", "", ""},
		{"/etc", "..", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OSConfigPath(tc.dir, tc.name)
			if tc.want == "" {
				if err == nil {
					t.Errorf("no error, got %q", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// The shared OS fixture loads.
func TestLoadVMConfigSharedFixture(t *testing.T) {
	path := testdata.OSConfigPath()
	cfg, err := LoadVMConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cfg.Kernel, cfg.Initrd, cfg.Bootloader} {
		if p != "" && !filepath.IsAbs(p) {
			t.Errorf("path %q is not absolute", p)
		}
	}
}
