package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"

	"vmfs/internal/inputfile"
	"vmfs/internal/outlet"
	"vmfs/internal/outputfile"
	"vmfs/metadata"
)

// Launch starts the VM cfg describes: it resolves the VMM (Resolve), allocates a
// CID for crosvm when o.CID is 0 (AllocateCID in o.CIDDir), builds the argv,
// opens o.Log, and starts the VMM (Start, whose ctx and RunOptions contract
// applies). The CID and the log file are released once the VMM has exited.
// QEMU gets no vsock device, so o.CID is ignored for it and VM.CID returns 0.
// QEMU gets a kernel, initrd or bootloader of ro.Files as a copy in memory
// (at most 1 GiB each), its disks of ro.Files as fd sets: it reopens no path.
func Launch(ctx context.Context, cfg *metadata.VMConfig, o Options, ro RunOptions) (*VM, error) {
	if err := checkBootFiles(cfg, ro.Files); err != nil {
		return nil, err
	}
	vmm, bin, err := Resolve(o)
	if err != nil {
		return nil, err
	}
	var cleanups []func() error
	if vmm == VMMCrosvm && o.CID == 0 {
		var release func() error
		if o.CID, release, err = AllocateCID(o.CIDDir); err != nil {
			return nil, err
		}
		cleanups = append(cleanups, release)
	}
	cid := 0
	if vmm == VMMCrosvm {
		cid = o.CID
	}
	if vmm == VMMQemu {
		var copies []*os.File
		if cfg, copies, err = ro.Files.inMemory(cfg); err != nil {
			return nil, errors.Join(err, runAll(cleanups))
		}
		cleanups = append(cleanups, func() error { inputfile.CloseAll(copies...); return nil })
	}
	args, err := argsFor(vmm, cfg, o)
	if err == nil && o.Log != "" {
		var f *os.File
		if f, err = outputfile.Open(o.Log); err == nil {
			// The log may be a FIFO kept full or on a stuck mount: the VMM must not wait on it.
			log := outlet.New(f, outlet.Options{Name: "vmm log", Logger: ro.Logger})
			ro.Stderr = log
			cleanups = append(cleanups, func() error { log.Close(); return f.Close() })
		} else {
			err = fmt.Errorf("vmm log %w", err)
		}
	}
	if err != nil {
		return nil, errors.Join(err, runAll(cleanups))
	}
	return start(ctx, bin, args, ro, cid, cleanups)
}

// CheckBootFiles checks that the kernel, initrd and bootloader cfg names are
// regular files, so that a missing one is reported before any VMM starts.
func CheckBootFiles(cfg *metadata.VMConfig) error {
	return checkBootFiles(cfg, Inherited{})
}

// checkBootFiles is CheckBootFiles, where a path of files names the file it holds.
func checkBootFiles(cfg *metadata.VMConfig, files Inherited) error {
	if err := checkBoot(cfg); err != nil {
		return err
	}
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}, {"bootloader", cfg.Bootloader}} {
		if f.path == "" {
			continue
		}
		if err := files.stat(f.path); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, f.what, err)
		}
	}
	return nil
}

// Command returns the VMM, its binary and its arguments for cfg without starting
// anything, for a dry run. A crosvm CID left at 0 shows as the first guest CID;
// Launch allocates the real one.
func Command(cfg *metadata.VMConfig, o Options) (vmm, bin string, args []string, err error) {
	if vmm, bin, err = Resolve(o); err != nil {
		return "", "", nil, err
	}
	if o.CID == 0 {
		o.CID = firstGuestCID
	}
	args, err = argsFor(vmm, cfg, o)
	return vmm, bin, args, err
}

func argsFor(vmm string, cfg *metadata.VMConfig, o Options) ([]string, error) {
	if vmm == VMMQemu {
		return QemuArgs(cfg, o)
	}
	return CrosvmArgs(cfg, o)
}

// Run launches the VM and waits for it. It returns nil when the VMM exits 0,
// an *ExitError for any other status, an error wrapping ErrTimeout when
// ro.Timeout passed, or one wrapping ctx.Err() when ctx ended the VM; it always
// returns after the VMM has exited, so the caller may unmount its disks then.
func Run(ctx context.Context, cfg *metadata.VMConfig, o Options, ro RunOptions) error {
	vm, err := Launch(ctx, cfg, o, ro)
	if err != nil {
		return err
	}
	// Not ctx: when it is done the VM is being stopped, and Run waits for that.
	return vm.Wait(context.Background())
}
