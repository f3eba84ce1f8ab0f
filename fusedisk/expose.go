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
	mt   Mounter
}

// Expose mounts dir, a directory of a mount, on the directory at, opened by the
// caller: on exactly that directory, wherever it is, never on a path. Only root
// may. mt (nil: Direct) mounts it, and unmounts it later.
func Expose(dir string, at *os.File, mt Mounter) (*Exposed, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: dir, Err: err}
	}
	e := &Exposed{root: os.NewFile(uintptr(tree), dir), mt: orDirect(mt)}
	// The clone has its ID already; attached, it keeps it.
	stx, err := statMount(tree, "")
	if err == nil {
		e.id = int(stx.Mnt_id)
		if err = e.mt.Move(e.root, at); err != nil {
			err = fmt.Errorf("mount %s: %w", dir, err)
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
	if err := e.mt.Detach(e.root); err != nil {
		return fmt.Errorf("unmount %s: %w", m.Point, err)
	}
	return e.root.Close()
}
