package launcher

import (
	"fmt"
	"os/exec"

	"vmfs/metadata"
)

// VMM names accepted in Options.VMM and returned by Resolve.
const (
	VMMAuto   = "auto"
	VMMCrosvm = "crosvm"
	VMMQemu   = "qemu"
)

// How a VMM reads a disk that has extent descriptors (Options.Via).
const (
	ViaExtents = "extents" // the descriptors: the VMM reads the originals itself
	ViaFlat    = "flat"    // the flat image (QEMU) or partition composite (crosvm)
)

// Default binary names, looked up in PATH when Options leaves the path empty.
const (
	CrosvmBinary = "crosvm"
	QemuBinary   = "qemu-system-x86_64"
)

// Options are the launcher's knobs; the zero value means "auto-detect, VMM defaults".
type Options struct {
	VMM     string // VMMAuto (or ""), VMMCrosvm or VMMQemu
	Crosvm  string // crosvm binary; "" looks up CrosvmBinary in PATH
	Qemu    string // QEMU binary; "" looks up QemuBinary in PATH
	Accel   string // QEMU accelerator: "tcg" (default when "") or "kvm"
	MemMiB  uint32 // guest memory in MiB; non-zero overrides VMConfig.MemoryMiB
	CPUs    int    // vCPUs; 0 leaves the VMM default (1)
	CID     int    // crosvm vsock CID; 0 lets Launch allocate one (AllocateCID)
	CIDDir  string // lock directory for AllocateCID; "" means DefaultCIDDir
	Console string // file that receives the guest serial console; "" = VMM stdout
	Log     string // file that receives the VMM's own stderr; "" = RunOptions.Stderr
	Name    string // the VM's name, for people: QEMU's -name (crosvm has no such flag)
	// FlatImages maps a crosvm composite disk to its flat raw image, which QEMU
	// (unable to read composites) is given instead; crosvm ignores it.
	FlatImages map[string]string
	// WritableImages are the composites in FlatImages with writable partitions:
	// QEMU opens their flat images read-write (the mount refuses writes outside
	// those partitions).
	WritableImages map[string]bool
	// Extents maps a crosvm composite disk to its extent descriptors, which a
	// read-only disk is given instead by default (Via).
	Extents map[string]ExtentImages
	// Via is ViaExtents (or "") or ViaFlat.
	Via string
}

// ExtentImages are a disk's extent descriptors: QEMU's VMDK and crosvm's
// composite, whose components are the originals and synthesized pieces.
type ExtentImages struct{ VMDK, Composite string }

// extents are the descriptors of disk d for a VMM: never for a writable disk,
// whose originals the VMM could then write.
func (o Options) extents(d metadata.DiskImage) (ExtentImages, bool) {
	e, ok := o.Extents[d.Image]
	return e, ok && o.Via != ViaFlat && !d.Writable && !o.WritableImages[d.Image]
}

// CheckVia refuses an unknown Via.
func CheckVia(via string) error {
	if via != "" && via != ViaExtents && via != ViaFlat {
		return fmt.Errorf("via %q: want %s or %s", via, ViaExtents, ViaFlat)
	}
	return nil
}

// Resolve picks the VMM and its binary. Auto means crosvm when o.Crosvm is set or
// crosvm is in PATH, else QEMU. The binary must exist and be executable.
func Resolve(o Options) (vmm string, binary string, err error) {
	switch o.VMM {
	case "", VMMAuto:
		if o.Crosvm != "" {
			return resolve(VMMCrosvm, o.Crosvm)
		}
		if bin, err := exec.LookPath(CrosvmBinary); err == nil {
			return VMMCrosvm, bin, nil
		}
		vmm, bin, err := resolve(VMMQemu, or(o.Qemu, QemuBinary))
		if err != nil {
			return "", "", fmt.Errorf("no %s in PATH, and %w", CrosvmBinary, err)
		}
		return vmm, bin, nil
	case VMMCrosvm:
		return resolve(VMMCrosvm, or(o.Crosvm, CrosvmBinary))
	case VMMQemu:
		return resolve(VMMQemu, or(o.Qemu, QemuBinary))
	}
	return "", "", fmt.Errorf("unknown vmm %q: want %s, %s or %s", o.VMM, VMMAuto, VMMCrosvm, VMMQemu)
}

// resolve finds path like a shell would: in PATH unless it contains a slash.
func resolve(vmm, path string) (string, string, error) {
	bin, err := exec.LookPath(path)
	if err != nil {
		return "", "", fmt.Errorf("find %s binary: %w", vmm, err)
	}
	return vmm, bin, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
