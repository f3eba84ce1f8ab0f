package launcher

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"vmfs/metadata"
)

// crosvm defaults that QemuArgs copies so both VMMs give the guest the same machine.
const (
	defaultMemMiB = 256 // crosvm's default guest memory
	firstGuestCID = 10  // FIRST_GUEST_CID in virtualizationservice
)

// CrosvmArgs returns the crosvm argv (without the binary) for cfg, in the order
// virtualizationservice used in Aug-2021: run --disable-sandbox --cid N
// [--protected-vm] [--mem M] [--cpus N] --serial=... [--bios B] [--initrd I]
// [--params P], then --disk/--rwdisk per disk in config order, then the kernel.
// Every disk must be an image by now; partitioned disks are assembled upstream.
func CrosvmArgs(cfg *metadata.VMConfig, o Options) ([]string, error) {
	if err := checkBoot(cfg); err != nil {
		return nil, err
	}
	// Guest CIDs 0-2 are reserved by vsock (hypervisor, local, host).
	if err := CheckVia(o.Via); err != nil {
		return nil, err
	}
	if o.CID < 3 {
		return nil, fmt.Errorf("crosvm: cid %d is not a guest cid (want 3 or more)", o.CID)
	}
	args := []string{"run", "--disable-sandbox", "--cid", strconv.Itoa(o.CID)}
	if cfg.Protected {
		args = append(args, "--protected-vm")
	}
	if mem := memMiB(cfg, o); mem != 0 {
		args = append(args, "--mem", strconv.FormatUint(uint64(mem), 10))
	}
	if o.CPUs != 0 {
		args = append(args, "--cpus", strconv.Itoa(o.CPUs))
	}
	serial := "--serial=type=stdout,hardware=serial,num=1"
	if o.Console != "" {
		// crosvm splits --serial on commas and has no escape.
		if strings.Contains(o.Console, ",") {
			return nil, fmt.Errorf("console file %s: crosvm cannot take a path with a comma", o.Console)
		}
		serial = "--serial=type=file,path=" + o.Console + ",hardware=serial,num=1"
	}
	args = append(args, serial)
	if cfg.Bootloader != "" {
		args = append(args, "--bios", cfg.Bootloader)
	}
	if cfg.Initrd != "" {
		args = append(args, "--initrd", cfg.Initrd)
	}
	if cfg.Params != "" {
		args = append(args, "--params", cfg.Params)
	}
	for i, d := range cfg.Disks {
		if err := checkImage(i, d); err != nil {
			return nil, err
		}
		flag, image := "--disk", d.Image
		if d.Writable {
			flag = "--rwdisk"
		}
		if e, ok := o.extents(d); ok {
			image = e.Composite
		}
		args = append(args, flag, image)
	}
	if cfg.Kernel != "" {
		args = append(args, cfg.Kernel)
	}
	return args, nil
}

// memMiB is the guest memory: the override, else the config, else 0 (VMM default).
func memMiB(cfg *metadata.VMConfig, o Options) uint32 {
	if o.MemMiB != 0 {
		return o.MemMiB
	}
	return cfg.MemoryMiB
}

// ErrConfig is wrapped by every error about a VMConfig the VMM cannot run.
var ErrConfig = errors.New("vm config cannot be launched")

// checkBoot applies VmConfig's boot rules, as virtualizationservice does.
func checkBoot(cfg *metadata.VMConfig) error {
	if cfg == nil {
		return fmt.Errorf("%w: no config", ErrConfig)
	}
	switch {
	case cfg.Kernel == "" && cfg.Bootloader == "":
		return fmt.Errorf("%w: must have either a bootloader or a kernel image", ErrConfig)
	case cfg.Bootloader != "" && (cfg.Kernel != "" || cfg.Initrd != ""):
		return fmt.Errorf("%w: can't have both bootloader and kernel/initrd image", ErrConfig)
	}
	return nil
}

// checkImage rejects disks the VMM cannot open directly.
func checkImage(i int, d metadata.DiskImage) error {
	switch {
	case len(d.Partitions) != 0:
		return fmt.Errorf("%w: disk %d has partitions; assemble it into an image first", ErrConfig, i)
	case d.Image == "":
		return fmt.Errorf("%w: disk %d has no image", ErrConfig, i)
	}
	return nil
}
