package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"vmfs/metadata"
)

// qemuMachine is the machine type. q35 and pc boot a Debian 6.1 kernel with two
// virtio-blk disks equally fast under TCG (~7 s); q35 is the modern PCIe board.
const qemuMachine = "q35"

// compositeMagic starts a crosvm composite disk descriptor (formats.md 1.5).
var compositeMagic = []byte("composite_disk\x1d")

// QemuArgs returns the qemu-system-x86_64 argv (without the binary) for cfg, for
// a non-interactive run: no display, no monitor, no default devices, the serial
// console to o.Console or stdout, and every disk a virtio-blk drive in config
// order (the guest sees vda, vdb, ... in that order), read-only unless writable.
// Memory and vCPUs default to crosvm's (256 MiB, 1) so both VMMs match.
// It reads the first bytes of each disk image: a crosvm composite descriptor
// X.composite is replaced by its flat sibling X.img, which must exist.
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
	for i, d := range cfg.Disks {
		if err := checkImage(i, d); err != nil {
			return nil, err
		}
		path, err := qemuImage(d.Image)
		if err != nil {
			return nil, err
		}
		// QEMU's option parser reads ",," as a literal comma.
		drive := "file=" + strings.ReplaceAll(path, ",", ",,") + ",format=raw,if=virtio"
		if !d.Writable {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive)
	}
	return args, nil
}

// qemuImage returns the file QEMU should open for disk image path: path itself,
// or for a crosvm composite descriptor X.composite its flat sibling X.img.
func qemuImage(path string) (string, error) {
	composite, err := isComposite(path)
	if err != nil || !composite {
		return path, err
	}
	base, ok := strings.CutSuffix(path, ".composite")
	if !ok {
		return "", fmt.Errorf("disk %s: qemu cannot read a crosvm composite disk, and without a .composite suffix there is no flat .img sibling to use", path)
	}
	flat := base + ".img"
	if _, err := os.Stat(flat); err != nil {
		return "", fmt.Errorf("disk %s: qemu cannot read a crosvm composite disk, and its flat image is unusable: %w", path, err)
	}
	return flat, nil
}

// isComposite reports whether the file starts with the composite disk magic.
func isComposite(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("inspect disk: %w", err)
	}
	defer f.Close()
	head := make([]byte, len(compositeMagic))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read disk %s: %w", path, err)
	}
	return bytes.Equal(head[:n], compositeMagic), nil
}
