package launcher

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"vmfs/metadata"
)

func TestCrosvmArgs(t *testing.T) {
	disks := []metadata.DiskImage{
		{Image: "/mnt/os.img"},
		{Image: "/mnt/payload.composite"},
		{Image: "/mnt/instance.img", Writable: true},
	}
	for _, tc := range []struct {
		name string
		cfg  metadata.VMConfig
		o    Options
		want []string
	}{
		{
			name: "kernel initrd params",
			cfg:  metadata.VMConfig{Kernel: "/k", Initrd: "/i", Params: "console=ttyS0 quiet"},
			o:    Options{CID: 10},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=stdout,hardware=serial,num=1",
				"--initrd", "/i", "--params", "console=ttyS0 quiet", "/k"},
		},
		{
			name: "bootloader",
			cfg:  metadata.VMConfig{Bootloader: "/bl", Disks: disks[:1]},
			o:    Options{CID: 11},
			want: []string{"run", "--disable-sandbox", "--cid", "11",
				"--serial=type=stdout,hardware=serial,num=1",
				"--bios", "/bl", "--disk", "/mnt/os.img"},
		},
		{
			name: "protected",
			cfg:  metadata.VMConfig{Kernel: "/k", Protected: true},
			o:    Options{CID: 12},
			want: []string{"run", "--disable-sandbox", "--cid", "12", "--protected-vm",
				"--serial=type=stdout,hardware=serial,num=1", "/k"},
		},
		{
			name: "ro and rw disks in config order",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: disks},
			o:    Options{CID: 10},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=stdout,hardware=serial,num=1",
				"--disk", "/mnt/os.img", "--disk", "/mnt/payload.composite",
				"--rwdisk", "/mnt/instance.img", "/k"},
		},
		{
			name: "memory from config",
			cfg:  metadata.VMConfig{Kernel: "/k", MemoryMiB: 2048},
			o:    Options{CID: 10},
			want: []string{"run", "--disable-sandbox", "--cid", "10", "--mem", "2048",
				"--serial=type=stdout,hardware=serial,num=1", "/k"},
		},
		{
			name: "memory override and cpus",
			cfg:  metadata.VMConfig{Kernel: "/k", MemoryMiB: 2048},
			o:    Options{CID: 10, MemMiB: 512, CPUs: 2},
			want: []string{"run", "--disable-sandbox", "--cid", "10", "--mem", "512", "--cpus", "2",
				"--serial=type=stdout,hardware=serial,num=1", "/k"},
		},
		{
			name: "console file",
			cfg:  metadata.VMConfig{Kernel: "/k"},
			o:    Options{CID: 10, Console: "/tmp/console.txt", Log: "/tmp/log.txt"},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=file,path=/tmp/console.txt,hardware=serial,num=1", "/k"},
		},
		{
			name: "composite stays composite",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: disks[1:2]},
			o:    Options{CID: 10},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=stdout,hardware=serial,num=1",
				"--disk", "/mnt/payload.composite", "/k"},
		},
		{
			name: "extents by default, never for a writable disk",
			cfg: metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
				{Image: "/mnt/payload.composite"}, {Image: "/mnt/disks/0/disk.composite", Writable: true}, {Image: "/mnt/disks/1/disk.composite"}}},
			o: Options{CID: 10, Extents: map[string]ExtentImages{
				"/mnt/payload.composite":      {VMDK: "/mnt/payload.vmdk", Composite: "/mnt/payload-extents.composite"},
				"/mnt/disks/0/disk.composite": {VMDK: "/mnt/disks/0/disk.vmdk", Composite: "/mnt/disks/0/disk-extents.composite"},
				"/mnt/disks/1/disk.composite": {VMDK: "/mnt/disks/1/disk.vmdk", Composite: "/mnt/disks/1/disk-extents.composite"},
			}, WritableImages: map[string]bool{"/mnt/disks/1/disk.composite": true}},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=stdout,hardware=serial,num=1",
				"--disk", "/mnt/payload-extents.composite", "--rwdisk", "/mnt/disks/0/disk.composite",
				"--disk", "/mnt/disks/1/disk.composite", "/k"},
		},
		{
			name: "via flat",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: disks[1:2]},
			o: Options{CID: 10, Via: ViaFlat, Extents: map[string]ExtentImages{
				"/mnt/payload.composite": {VMDK: "/mnt/payload.vmdk", Composite: "/mnt/payload-extents.composite"}}},
			want: []string{"run", "--disable-sandbox", "--cid", "10",
				"--serial=type=stdout,hardware=serial,num=1",
				"--disk", "/mnt/payload.composite", "/k"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CrosvmArgs(&tc.cfg, tc.o)
			if err != nil {
				t.Fatalf("CrosvmArgs: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CrosvmArgs:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestCrosvmArgsErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    *metadata.VMConfig
		o      Options
		config bool   // errors.Is(err, ErrConfig)
		want   string // what the one-line message must name
	}{
		{"nil config", nil, Options{CID: 10}, true, "no config"},
		{"no kernel or bootloader", &metadata.VMConfig{}, Options{CID: 10}, true, "either a bootloader or a kernel"},
		{"bootloader and kernel", &metadata.VMConfig{Bootloader: "/bl", Kernel: "/k"}, Options{CID: 10}, true, "both"},
		{"bootloader and initrd", &metadata.VMConfig{Bootloader: "/bl", Initrd: "/i"}, Options{CID: 10}, true, "both"},
		{"partitions", &metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
			{Partitions: []metadata.Partition{{Label: "a", Path: "/a"}}}}}, Options{CID: 10}, true, "disk 0 has partitions"},
		{"empty disk", &metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
			{Image: "/a"}, {}}}, Options{CID: 10}, true, "disk 1 has no image"},
		{"no cid", &metadata.VMConfig{Kernel: "/k"}, Options{}, false, "cid 0"},
		{"host cid", &metadata.VMConfig{Kernel: "/k"}, Options{CID: 2}, false, "cid 2"},
		{"comma in console", &metadata.VMConfig{Kernel: "/k"}, Options{CID: 10, Console: "/tmp/a,b"}, false, "/tmp/a,b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CrosvmArgs(tc.cfg, tc.o)
			checkErr(t, got, err, tc.config, tc.want)
		})
	}
}

// checkErr checks that a builder failed, wrapping ErrConfig exactly when config
// is set, with a message naming want.
func checkErr(t *testing.T, args []string, err error, config bool, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got argv %q, want an error naming %q", args, want)
	}
	if errors.Is(err, ErrConfig) != config {
		t.Errorf("errors.Is(%q, ErrConfig) = %v, want %v", err, !config, config)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
}
