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
// A disk in o.FlatImages (a crosvm composite) is given as its flat image.
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
	for i, d := range cfg.Disks {
		if err := checkImage(i, d); err != nil {
			return nil, err
		}
		path := d.Image
		if flat, ok := o.FlatImages[path]; ok {
			path = flat
		}
		// QEMU's option parser reads ",," as a literal comma.
		drive := "file=" + strings.ReplaceAll(path, ",", ",,") + ",format=raw,if=virtio"
		if !d.Writable && !o.WritableImages[d.Image] {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive)
	}
	return args, nil
}
