package fusedisk

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Exposed is a directory of a mount mounted on another directory as well (a
// bind mount). It is held by a descriptor of its root and its mount ID, never by
// a path, so it is found and removed wherever its mountpoint is renamed to, and
// no mount made since at its old path is ever taken for it.
type Exposed struct {
	root *os.File // O_PATH, the mount's root: it keeps the mount ID ours
	id   int
}

// Expose mounts dir, a directory of a mount, on the directory at, opened by the
// caller: on exactly that directory, wherever it is, never on a path. Only root
// may.
func Expose(dir string, at *os.File) (*Exposed, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: dir, Err: err}
	}
	e := &Exposed{root: os.NewFile(uintptr(tree), dir)}
	// The clone has its ID already; attached, it keeps it.
	stx, err := statMount(tree, "")
	if err == nil {
		e.id = int(stx.Mnt_id)
		err = unix.MoveMount(tree, "", int(at.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
		if err != nil {
			err = &os.PathError{Op: "move_mount", Path: dir, Err: err}
		}
	}
	if err != nil {
		e.root.Close() // a clone never attached goes with it
		return nil, err
	}
	return e, nil
}

// Point is where e is mounted now as ms (see Mounts) tells, or "" when it is
// no longer mounted in this namespace.
func (e *Exposed) Point(ms []MountInfo) string {
	if m := byID(ms, e.id); m != nil {
		return m.Point
	}
	return ""
}

// Unmount removes e, wherever it is now, and releases it. It refuses with a
// *CoveredError when another mount sits on top (e stays, still held), and
// gives ErrNotMounted when e was unmounted already (released all the same). The
// unmount is lazy, as the descriptor held keeps the mount busy: files open in
// it stay readable until closed.
func (e *Exposed) Unmount() error {
	ms, err := Mounts()
	if err != nil {
		return err
	}
	m := byID(ms, e.id)
	if m == nil {
		e.root.Close()
		return fmt.Errorf("the mount exposing %s: %w", e.root.Name(), ErrNotMounted)
	}
	if top := covered(ms, m); top != nil {
		return &CoveredError{Point: m.Point, FSType: top.FSType}
	}
	// umount2 follows the magic link to the mount itself, whatever its path.
	if err := unix.Unmount(fmt.Sprintf("/proc/self/fd/%d", e.root.Fd()), unix.MNT_DETACH); err != nil {
		return &os.PathError{Op: "unmount", Path: m.Point, Err: err}
	}
	return e.root.Close()
}
