package launcher

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"vmfs/testdata"

	"go.uber.org/zap/zaptest"

	"vmfs/metadata"
)

// Guest side of TestBootDebianKernel. The host passes three disks, which the
// guest must see in config order:
//
//	os.img            -> /dev/vda  read-only; starts "first-disk-AAAA"
//	payload.composite -> /dev/vdb  read-only; a crosvm descriptor, so QEMU is given
//	                               its flat image payload.img (Options.FlatImages),
//	                               which starts "flat-payload-BB"
//	instance.img      -> /dev/vdc  writable; starts "instance-blank!", and the
//	                               guest writes "written-by-guest" over it
const bootInit = `#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do $bb insmod $m; done
for d in vda vdb vdc; do echo "disk $d: $($bb head -c 15 /dev/$d)"; done
if echo clobber | $bb dd of=/dev/vda 2>/dev/null; then echo "vda write: allowed"; else echo "vda write: refused"; fi
echo -n written-by-guest | $bb dd of=/dev/vdc conv=fsync 2>/dev/null && echo "vdc write: done"
$bb poweroff -f
`

// virtio modules a Debian kernel needs for virtio-blk over PCI, in load order.
var virtioModules = []string{
	"virtio/virtio_ring", "virtio/virtio", "virtio/virtio_pci_legacy_dev",
	"virtio/virtio_pci_modern_dev", "virtio/virtio_pci", "block/virtio_blk",
}

// debianKernel finds a kernel and its module directory: $VMFS_TEST_KERNEL, else the
// one `make guest` unpacks under build/guest/kernel, else the newest /boot/vmlinuz-*.
func debianKernel(t *testing.T) (kernel, modules string) {
	t.Helper()
	root := "/"
	kernel = os.Getenv("VMFS_TEST_KERNEL")
	if kernel == "" {
		found, _ := filepath.Glob("../build/guest/kernel/*/boot/vmlinuz-*")
		if len(found) == 0 {
			found, _ = filepath.Glob("/boot/vmlinuz-*")
		}
		sort.Strings(found)
		if len(found) == 0 {
			testdata.Missing(t, "no kernel: run make guest, or apt-get install linux-image-amd64, or set VMFS_TEST_KERNEL")
		}
		kernel = found[len(found)-1]
		root = filepath.Dir(filepath.Dir(kernel))
	}
	version := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	modules = filepath.Join(root, "lib/modules", version, "kernel/drivers")
	if _, err := os.Stat(modules); err != nil {
		testdata.Missing(t, "no modules for kernel %s: %v", kernel, err)
	}
	return kernel, modules
}

// buildInitramfs packs busybox, the virtio modules and bootInit with cpio.
func buildInitramfs(t *testing.T, modules string) string {
	t.Helper()
	busybox := testdata.RequireTool(t, "busybox")
	cpio := testdata.RequireTool(t, "cpio")
	if f, err := elf.Open(busybox); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				testdata.Missing(t, "%s is dynamically linked (Debian: apt-get install busybox-static)", busybox)
			}
		}
		f.Close()
	}
	root := t.TempDir()
	files := map[string][]byte{"init": []byte(bootInit)}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	files["bin/busybox"] = bb
	for i, m := range virtioModules {
		ko, err := os.ReadFile(filepath.Join(modules, m+".ko"))
		if err != nil {
			t.Fatalf("virtio module: %v", err)
		}
		// The glob in bootInit loads them in name order.
		files[filepath.Join("lib/modules", string(rune('a'+i))+"-"+filepath.Base(m)+".ko")] = ko
	}
	var names []string
	for _, d := range []string{"bin", "dev", "lib", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		names = append(names, d)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(root, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	out := filepath.Join(t.TempDir(), "initrd.cpio")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cpio, "-o", "-H", "newc", "--quiet")
	var stderr bytes.Buffer
	cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = root, strings.NewReader(strings.Join(names, "\n")+"\n"), f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v: %s", err, &stderr)
	}
	return out
}

func TestBootDebianKernel(t *testing.T) {
	qemu := testdata.RequireTool(t, QemuBinary)
	kernel, modules := debianKernel(t)
	initrd := buildInitramfs(t, modules)

	for _, tc := range []struct {
		name    string
		console bool // to a file rather than the VMM's stdout
	}{
		{"console to stdout", false},
		{"console to file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			disk := func(name, head string) string {
				data := make([]byte, 1<<20)
				copy(data, head)
				return writeFile(t, filepath.Join(dir, name), data)
			}
			osImg := disk("os.img", "first-disk-AAAA")
			disk("payload.img", "flat-payload-BB")
			descriptor := writeFile(t, filepath.Join(dir, "payload.composite"), []byte("composite_disk\x1d\x08\x01"))
			instance := disk("instance.img", "instance-blank!")
			cfg := &metadata.VMConfig{
				Kernel: kernel, Initrd: initrd, Params: "console=ttyS0 panic=-1 quiet",
				Disks: []metadata.DiskImage{{Image: osImg}, {Image: descriptor}, {Image: instance, Writable: true}},
			}
			o := Options{VMM: VMMQemu, Qemu: qemu, Log: filepath.Join(dir, "qemu.log"), FlatImages: map[string]string{descriptor: filepath.Join(dir, "payload.img")}}
			var stdout bytes.Buffer
			if tc.console {
				o.Console = filepath.Join(dir, "console.txt")
			}
			// The timeout is a safety net for a hung guest, not a measurement.
			err := Run(context.Background(), cfg, o, RunOptions{Stdout: &stdout, Logger: zaptest.NewLogger(t), Timeout: 5 * time.Minute})
			console := stdout.String()
			if tc.console {
				if console != "" {
					t.Errorf("vmm stdout got %q, want nothing with a console file", console)
				}
				raw, rerr := os.ReadFile(o.Console)
				if rerr != nil {
					t.Fatal(rerr)
				}
				console = string(raw)
			}
			log, _ := os.ReadFile(o.Log)
			if err != nil {
				t.Fatalf("Run: %v\nconsole:\n%s\nqemu log:\n%s", err, console, log)
			}
			for _, want := range []string{
				"disk vda: first-disk-AAAA", "disk vdb: flat-payload-BB", "disk vdc: instance-blank!",
				"vda write: refused", "vdc write: done",
			} {
				if !strings.Contains(console, want) {
					t.Errorf("console lacks %q:\n%s", want, console)
				}
			}
			written, err := os.ReadFile(instance)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(written, []byte("written-by-guest")) {
				t.Errorf("instance.img starts %q, want the guest's write", written[:16])
			}
			if raw, _ := os.ReadFile(osImg); !bytes.HasPrefix(raw, []byte("first-disk-AAAA")) {
				t.Errorf("read-only os.img was changed: starts %q", raw[:16])
			}
		})
	}
}
