// Package launcher owns the VMM side of vmfs: crosvm and QEMU command lines,
// supervision of the VMM process, vsock CIDs, and where the guest console goes.
// It does not serve FUSE and does not know the disk layout: it only names disk
// image paths that fusedisk already serves, and imports neither fusedisk nor go-fuse.
//
// # Argv as data
//
// CrosvmArgs and QemuArgs are table-tested builders that turn a metadata.VMConfig
// and Options into an argument vector (without the binary). Resolve picks the VMM.
// Neither builder reads a file: QEMU cannot read a crosvm composite descriptor, so
// the caller names each composite's flat image in Options.FlatImages.
//
// # Supervision
//
// Start runs a VMM in its own process group (so a terminal's Ctrl-C reaches vmfs,
// which then stops the VMM in order, before unmounting) with Pdeathsig SIGKILL (so
// a dying vmfs takes its VMM along). Wait reports the VMM's exit status; Stop sends
// SIGTERM to the group and escalates to SIGKILL after a grace period. Once the VMM
// exits, whatever is left of its group is killed and cleanup runs exactly once.
// Launch and Run tie Resolve, AllocateCID, the builders and Start together.
//
// The VMM writes its stdout and stderr to pipes the launcher reads on goroutines
// of its own, so no writer can hold up Wait or Stop; a destination that may block
// goes behind an outlet (vmfs/internal/outlet), which never blocks the VMM.
//
// # Rights
//
// RunOptions.Credential runs the VMM as another user and groups, without
// capabilities, still in its own group and with its parent-death signal. Files
// it may not reach by path (a client's, under directories it cannot enter) it
// inherits as descriptors (Inherited). crosvm takes /proc/self/fd/N as the
// descriptor itself. QEMU would reopen that path, which Landlock checks against
// the file's own path when the VMM's parent is confined (a VMM inherits its
// parent's Landlock domain): so it gets each inherited disk through an fd set,
// which it dups, and an inherited kernel, initrd or bootloader as a sealed
// copy in memory (a memfd, at most 1 GiB), which has no path to check.
package launcher
