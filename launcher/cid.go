package launcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultCIDDir holds one lock file per CID in use by a running vmfs VM. It is
// not /run/vmfs, where a vmfs service mounts its payloads.
const DefaultCIDDir = "/run/vmfs-cid"

// maxCIDs bounds the search for a free CID; far more VMs than a host runs.
const maxCIDs = 1 << 16

// AllocateCID returns the lowest guest CID from 10 upward that no running vmfs VM
// holds, by taking an exclusive flock on <dir>/cid-<n>.lock ("" = DefaultCIDDir).
// Call release when the VM has exited. The kernel drops the lock when its holder
// dies, so a crashed vmfs frees its CID without any cleanup. Lock files are never
// removed: unlinking a locked file would let two holders lock different inodes
// under one name.
func AllocateCID(dir string) (cid int, release func() error, err error) {
	dir = or(dir, DefaultCIDDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, nil, fmt.Errorf("allocate cid: %w", err)
	}
	for cid := firstGuestCID; cid < firstGuestCID+maxCIDs; cid++ {
		name := filepath.Join(dir, "cid-"+strconv.Itoa(cid)+".lock")
		// O_CLOEXEC (Go's default) keeps the lock out of the VMM, so only this
		// process holds it.
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return 0, nil, fmt.Errorf("allocate cid: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return cid, sync.OnceValue(f.Close), nil
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return 0, nil, fmt.Errorf("allocate cid: lock %s: %w", name, err)
		}
	}
	return 0, nil, fmt.Errorf("allocate cid: all %d cids from %d are in use in %s", maxCIDs, firstGuestCID, dir)
}
