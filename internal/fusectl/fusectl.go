// Package fusectl aborts FUSE connections through the kernel's FUSE control
// filesystem (fusectl). It owns only that.
package fusectl

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Dir is where a system mounts fusectl, when it does.
const Dir = "/sys/fs/fuse/connections"

// Abort aborts FUSE connection conn (the minor of its mounts' st_dev): every
// request under way or to come fails with ENOTCONN in every mount of it, in any
// mount namespace, and its server's reads of /dev/fuse end.
//
// Root goes through a fusectl of its own that is attached nowhere, so it needs
// no fusectl mounted (nor a writable /sys) and leaves nothing mounted. Another
// user may abort only its own connections, through the fusectl at Dir.
func Abort(conn uint32) error {
	name := fmt.Sprintf("%d/abort", conn)
	ctl, err := private()
	if err == nil {
		defer unix.Close(ctl)
		return write(ctl, name)
	}
	serr := write(unix.AT_FDCWD, Dir+"/"+name)
	if serr == nil {
		return nil
	}
	return fmt.Errorf("abort FUSE connection %d: a fusectl of its own: %w; %s: %w", conn, err, Dir, serr)
}

// private mounts a fusectl attached nowhere and returns its root.
func private() (int, error) {
	fs, err := unix.Fsopen("fusectl", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, err
	}
	return unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
}

// write writes to the abort file at path, relative to dir.
func write(dir int, path string) error {
	fd, err := unix.Openat(dir, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("1")); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
