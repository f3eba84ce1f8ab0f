package fusedisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"vmfs/internal/fusectl"
)

// Mounter makes the changes to the mount table that exposing and ending a
// mount take, and aborts a FUSE connection: what a process confined by
// Landlock may not do itself, whatever its rules, and so has another process
// do (MountOptions.Mounter, Expose). Direct makes them in this process.
type Mounter interface {
	// Move attaches tree, a detached mount (open_tree), on the directory at.
	Move(tree, at *os.File) error
	// Unmount unmounts the mount at point: a busy one gives an error wrapping
	// ErrBusy unless lazy, which detaches it.
	Unmount(point string, lazy bool) error
	// Detach lazily unmounts the mount whose root is root, an O_PATH descriptor.
	Detach(root *os.File) error
	// Abort aborts FUSE connection conn (see fusectl.Abort).
	Abort(conn uint32) error
}

// Direct is the Mounter that makes the changes itself. Root unmounts directly,
// other users through fusermount3.
type Direct struct{}

var _ Mounter = Direct{}

func (Direct) Move(tree, at *os.File) error {
	err := unix.MoveMount(int(tree.Fd()), "", int(at.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	return os.NewSyscallError("move_mount", err)
}

func (Direct) Unmount(point string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = unix.MNT_DETACH
		}
		err := unix.Unmount(point, flags)
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w", point, ErrBusy)
		}
		if err != nil {
			return &os.PathError{Op: "unmount", Path: point, Err: err}
		}
		return nil
	}
	args := []string{"-u", point}
	if lazy {
		args = []string{"-u", "-z", point}
	}
	out, err := exec.Command("fusermount3", args...).CombinedOutput()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(string(out))
	if strings.Contains(msg, unix.EBUSY.Error()) {
		return fmt.Errorf("unmount %s: %w", point, ErrBusy)
	}
	return fmt.Errorf("fusermount3 -u %s: %s (%v)", point, msg, err)
}

func (Direct) Detach(root *os.File) error {
	// umount2 follows the magic link to the mount itself, whatever its path.
	err := unix.Unmount(fmt.Sprintf("/proc/self/fd/%d", root.Fd()), unix.MNT_DETACH)
	return os.NewSyscallError("umount2", err)
}

func (Direct) Abort(conn uint32) error { return fusectl.Abort(conn) }

// orDirect is m, or Direct when nil.
func orDirect(m Mounter) Mounter {
	if m == nil {
		return Direct{}
	}
	return m
}
