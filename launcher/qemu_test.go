package launcher

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"vmfs/metadata"
)

// qemuHead is the argv prefix every QemuArgs call shares, given accel, mem, cpus, serial.
func qemuHead(accel, mem, cpus, serial string) []string {
	return []string{"-accel", accel, "-machine", "q35", "-cpu", "max", "-m", mem, "-smp", cpus,
		"-nodefaults", "-nographic", "-no-reboot", "-monitor", "none", "-serial", serial}
}

func TestQemuArgs(t *testing.T) {
	dir := t.TempDir()
	raw := writeFile(t, filepath.Join(dir, "os.img"), []byte("raw disk"))
	short := writeFile(t, filepath.Join(dir, "tiny.img"), []byte("comp"))
	comma := writeFile(t, filepath.Join(dir, "a,b.img"), nil)
	// A descriptor: magic then protobuf bytes (QEMU never gets to see them).
	composite := writeFile(t, filepath.Join(dir, "payload.composite"), []byte("composite_disk\x1d\x08\x01"))
	flat := writeFile(t, filepath.Join(dir, "payload.img"), make([]byte, 4096))
	inst := writeFile(t, filepath.Join(dir, "instance.img"), make([]byte, 4096))
	ro := func(p string) string { return "file=" + p + ",format=raw,if=virtio,readonly=on" }
	rw := func(p string) string { return "file=" + p + ",format=raw,if=virtio" }

	for _, tc := range []struct {
		name string
		cfg  metadata.VMConfig
		o    Options
		want []string
	}{
		{
			name: "kernel initrd params",
			cfg:  metadata.VMConfig{Kernel: "/k", Initrd: "/i", Params: "console=ttyS0 quiet"},
			want: append(qemuHead("tcg", "256", "1", "stdio"),
				"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0 quiet"),
		},
		{
			name: "bootloader",
			cfg:  metadata.VMConfig{Bootloader: "/bl", Disks: []metadata.DiskImage{{Image: raw}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-bios", "/bl", "-drive", ro(raw)),
		},
		{
			name: "ro and rw disks in config order",
			cfg: metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
				{Image: inst, Writable: true}, {Image: raw}, {Image: short}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k",
				"-drive", rw(inst), "-drive", ro(raw), "-drive", ro(short)),
		},
		{
			name: "composite given as its flat image",
			cfg: metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
				{Image: raw}, {Image: composite}, {Image: inst, Writable: true}}},
			o: Options{FlatImages: map[string]string{composite: flat}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k",
				"-drive", ro(raw), "-drive", ro(flat), "-drive", rw(inst)),
		},
		{
			name: "composite with writable partitions given read-write",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{{Image: composite}}},
			o:    Options{FlatImages: map[string]string{composite: flat}, WritableImages: map[string]bool{composite: true}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k", "-drive", rw(flat)),
		},
		{
			name: "inherited disks in fd sets, every disk a blockdev",
			cfg: metadata.VMConfig{Kernel: "/proc/self/fd/3", Disks: []metadata.DiskImage{
				{Image: "/proc/self/fd/4"}, {Image: "/proc/self/fd/5", Writable: true}, {Image: comma}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/proc/self/fd/3",
				"-add-fd", "fd=4,set=4,opaque=disk0",
				"-blockdev", "driver=raw,node-name=disk0,file.driver=file,file.filename=/dev/fdset/4,read-only=on",
				"-device", "virtio-blk-pci,drive=disk0",
				"-add-fd", "fd=5,set=5,opaque=disk1",
				"-blockdev", "driver=raw,node-name=disk1,file.driver=file,file.filename=/dev/fdset/5",
				"-device", "virtio-blk-pci,drive=disk1",
				"-blockdev", "driver=raw,node-name=disk2,file.driver=file,file.filename="+filepath.Join(dir, "a,,b.img")+",read-only=on",
				"-device", "virtio-blk-pci,drive=disk2"),
		},
		{
			name: "extents by default: a VMDK, read-only; never for a writable disk",
			cfg: metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
				{Image: composite}, {Image: inst, Writable: true}, {Image: raw}}},
			o: Options{FlatImages: map[string]string{composite: flat, raw: raw}, WritableImages: map[string]bool{raw: true},
				Extents: map[string]ExtentImages{composite: {VMDK: "/m/payload.vmdk"}, inst: {VMDK: "/m/i.vmdk"}, raw: {VMDK: "/m/r.vmdk"}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k",
				"-drive", "file=/m/payload.vmdk,format=vmdk,if=virtio,readonly=on", "-drive", rw(inst), "-drive", rw(raw)),
		},
		{
			name: "via flat",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{{Image: composite}}},
			o:    Options{Via: ViaFlat, FlatImages: map[string]string{composite: flat}, Extents: map[string]ExtentImages{composite: {VMDK: "/m/payload.vmdk"}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k", "-drive", ro(flat)),
		},
		{
			name: "a path like a descriptor's that is not one",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{{Image: "/proc/self/fd/x"}, {Image: "/proc/self/fd/04"}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k",
				"-drive", ro("/proc/self/fd/x"), "-drive", ro("/proc/self/fd/04")),
		},
		{
			name: "comma in disk path is doubled",
			cfg:  metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{{Image: comma}}},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-kernel", "/k",
				"-drive", ro(filepath.Join(dir, "a,,b.img"))),
		},
		{
			name: "memory from config",
			cfg:  metadata.VMConfig{Kernel: "/k", MemoryMiB: 2048},
			want: append(qemuHead("tcg", "2048", "1", "stdio"), "-kernel", "/k"),
		},
		{
			name: "memory override cpus kvm",
			cfg:  metadata.VMConfig{Kernel: "/k", MemoryMiB: 2048},
			o:    Options{MemMiB: 512, CPUs: 2, Accel: "kvm"},
			want: append(qemuHead("kvm", "512", "2", "stdio"), "-kernel", "/k"),
		},
		{
			name: "name",
			cfg:  metadata.VMConfig{Kernel: "/k"},
			o:    Options{Name: "my vm"},
			want: append(qemuHead("tcg", "256", "1", "stdio"), "-name", "my vm", "-kernel", "/k"),
		},
		{
			name: "console file",
			cfg:  metadata.VMConfig{Kernel: "/k"},
			o:    Options{Console: "/tmp/console.txt", Log: "/tmp/log.txt", CID: 12},
			want: append(qemuHead("tcg", "256", "1", "file:/tmp/console.txt"), "-kernel", "/k"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := QemuArgs(&tc.cfg, tc.o)
			if err != nil {
				t.Fatalf("QemuArgs: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("QemuArgs:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestQemuArgsErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    *metadata.VMConfig
		o      Options
		config bool
		want   string
		is     error // also errors.Is, when set
	}{
		{"nil config", nil, Options{}, true, "no config", nil},
		{"no kernel or bootloader", &metadata.VMConfig{}, Options{}, true, "either a bootloader or a kernel", nil},
		{"bootloader and kernel", &metadata.VMConfig{Bootloader: "/bl", Kernel: "/k"}, Options{}, true, "both", nil},
		{"protected", &metadata.VMConfig{Kernel: "/k", Protected: true}, Options{}, true, "protected", nil},
		{"params without kernel", &metadata.VMConfig{Bootloader: "/bl", Params: "x"}, Options{}, true, "params", nil},
		{"partitions", &metadata.VMConfig{Kernel: "/k", Disks: []metadata.DiskImage{
			{Partitions: []metadata.Partition{{Label: "a", Path: "/a"}}}}}, Options{}, true, "disk 0 has partitions", nil},
		{"bad accel", &metadata.VMConfig{Kernel: "/k"}, Options{Accel: "hvf"}, false, "hvf", nil},
		{"bad via", &metadata.VMConfig{Kernel: "/k"}, Options{Via: "nbd"}, false, "via \"nbd\"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := QemuArgs(tc.cfg, tc.o)
			checkErr(t, got, err, tc.config, tc.want)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%q, %v) = false", err, tc.is)
			}
		})
	}
}
