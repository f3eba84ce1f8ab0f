package launcher

import (
	"fmt"
	"strconv"
	"strings"

	"vmfs/metadata"
)

// qemuMachine is the machine type. q35 and pc boot a Debian 6.1 kernel with two
// virtio-blk disks equally fast under TCG (~7 s); q35 is the modern PCIe board.
const qemuMachine = "q35"

// QemuArgs returns the qemu-system-x86_64 argv (without the binary) for cfg, for
// a non-interactive run: no display, no monitor, no default devices, the serial
// console to o.Console or stdout, and every disk a virtio-blk drive in config
// order (the guest sees vda, vdb, ... in that order), read-only unless writable.
// Memory and vCPUs default to crosvm's (256 MiB, 1) so both VMMs match.
// A disk in o.FlatImages (a crosvm composite) is given as its flat image. A
// disk named /proc/self/fd/N (Inherited) is given as fd set N (-add-fd), and
// then every disk as a -blockdev and its -device.
func QemuArgs(cfg *metadata.VMConfig, o Options) ([]string, error) {
	if err := checkBoot(cfg); err != nil {
		return nil, err
	}
	if cfg.Protected {
		return nil, fmt.Errorf("%w: protected vms need crosvm (pkvm); qemu cannot run them", ErrConfig)
	}
	if cfg.Params != "" && cfg.Kernel == "" {
		return nil, fmt.Errorf("%w: qemu takes params only with a kernel, not a bootloader", ErrConfig)
	}
	if err := CheckVia(o.Via); err != nil {
		return nil, err
	}
	accel := or(o.Accel, "tcg")
	if accel != "tcg" && accel != "kvm" {
		return nil, fmt.Errorf("qemu accelerator %q: want tcg or kvm", o.Accel)
	}
	mem := memMiB(cfg, o)
	if mem == 0 {
		mem = defaultMemMiB
	}
	cpus := max(o.CPUs, 1)
	serial := "stdio"
	if o.Console != "" {
		serial = "file:" + o.Console
	}
	args := []string{
		"-accel", accel,
		"-machine", qemuMachine,
		// max = every feature TCG emulates (host under kvm): Android's x86_64 ABI
		// needs SSE4.2 and POPCNT, which the default qemu64 lacks.
		"-cpu", "max",
		"-m", strconv.FormatUint(uint64(mem), 10),
		"-smp", strconv.Itoa(cpus),
		"-nodefaults", "-nographic", "-no-reboot",
		"-monitor", "none",
		"-serial", serial,
	}
	if o.Name != "" {
		args = append(args, "-name", o.Name)
	}
	if cfg.Bootloader != "" {
		args = append(args, "-bios", cfg.Bootloader)
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if cfg.Params != "" {
		args = append(args, "-append", cfg.Params)
	}
	disks := make([]qemuImage, len(cfg.Disks))
	fdSets := false
	for i, d := range cfg.Disks {
		if err := checkImage(i, d); err != nil {
			return nil, err
		}
		disks[i] = qemuImage{path: d.Image, format: "raw", writable: d.Writable || o.WritableImages[d.Image]}
		if flat, ok := o.FlatImages[d.Image]; ok {
			disks[i].path = flat
		}
		if e, ok := o.extents(d); ok {
			disks[i].path, disks[i].format = e.VMDK, "vmdk"
		}
		if _, ok := inheritedFD(disks[i].path); ok {
			fdSets = true
		}
	}
	for i, d := range disks {
		args = append(args, qemuDisk(i, d, fdSets)...)
	}
	return args, nil
}

// qemuImage is a disk as QEMU opens it.
type qemuImage struct {
	path, format string
	writable     bool
}

// qemuDisk is the arguments that give QEMU disk i, read-only unless writable
// (a VMDK's extents are then opened read-only too): a -drive, or with
// asBlockdev a -blockdev and its -device, which QEMU creates in the same order.
// A path of an inherited descriptor (Inherited) goes in an fd set that QEMU
// dups from, never reopening a path (which Landlock would check against the
// file's own): that takes -blockdev, as -drive asks a set for a read-only
// descriptor even for a writable disk.
func qemuDisk(i int, d qemuImage, asBlockdev bool) []string {
	var args []string
	path := d.path
	if fd, ok := inheritedFD(path); ok {
		// The set's access mode must be the disk's: read-only or read-write.
		args = append(args, "-add-fd", "fd="+fd+",set="+fd+",opaque=disk"+strconv.Itoa(i))
		path = "/dev/fdset/" + fd
	}
	// QEMU's option parsers read ",," as a literal comma.
	path = strings.ReplaceAll(path, ",", ",,")
	if !asBlockdev {
		drive := "file=" + path + ",format=" + d.format + ",if=virtio"
		if !d.writable {
			drive += ",readonly=on"
		}
		return append(args, "-drive", drive)
	}
	node := "disk" + strconv.Itoa(i)
	blockdev := "driver=" + d.format + ",node-name=" + node + ",file.driver=file,file.filename=" + path
	if !d.writable {
		blockdev += ",read-only=on"
	}
	return append(args, "-blockdev", blockdev, "-device", "virtio-blk-pci,drive="+node)
}

// inheritedFD is the descriptor's number in path when path is a file of an
// Inherited set, /proc/self/fd/N.
func inheritedFD(path string) (string, bool) {
	n, ok := strings.CutPrefix(path, fdPrefix)
	i, err := strconv.Atoi(n)
	return n, ok && err == nil && i >= 0 && strconv.Itoa(i) == n
}
