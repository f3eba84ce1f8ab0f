package vmfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/fusedisk"
	"vmfs/metadata"
)

// MountOptions configure Mount.
type MountOptions struct {
	AllowOther bool // let other users in; they still read only what the sources let them
	// NoPassthrough keeps every read in vmfs. By default the kernel reads a
	// file that is exactly one original (an Android 13+ APEX partition, a 4
	// KiB-aligned APK's) from the original itself, where it lets this process
	// (root, Linux 6.9+): such reads bypass the change guard. Elsewhere vmfs
	// serves every read, and says so in the log.
	NoPassthrough bool
	Kind          string      // what serves the mount, for the manifest; "" means "embedded"
	Logger        *zap.Logger // nil: zap.NewNop()
}

// Server is a payload served at a directory.
type Server struct {
	Dir      string
	Manifest *Manifest
	VMConfig *metadata.VMConfig // the VM config to launch: the mount's vm.json
	srv      *fusedisk.Server
	done     chan struct{} // closed once unmounted and the sources are closed
}

// Mount serves p at dir, an existing empty directory, and returns once the kernel
// has the mount. The mountpoint is locked while it is checked and mounted, so
// that concurrent mounts on one directory never stack: the first wins; ctx
// bounds only the wait for that lock. The payload's state files are the mount's
// until it is unmounted (see NewTree): a second mount of one is refused.
func Mount(ctx context.Context, p *Payload, dir string, o MountOptions) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dir, err := CheckMountpoint(dir, o.AllowOther)
	if err != nil {
		return nil, err
	}
	var unlock func()
	if err := interruptible(ctx, func() (err error) { unlock, err = lockMountpoint(dir); return err }); err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := CheckMountpoint(dir, o.AllowOther); err != nil {
		return nil, err
	}
	t, err := NewTree(p, dir, nil, TreeOptions{Kind: o.Kind, NoPassthrough: o.NoPassthrough, Extents: true, Logger: log})
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Manifest: t.Manifest, VMConfig: t.VMConfig, done: make(chan struct{})}
	s.srv, err = fusedisk.Mount(dir, t.Root, fusedisk.MountOptions{FsName: FSName(os.Getpid()), AllowOther: o.AllowOther, Writable: t.Writable(), Logger: log})
	if err != nil {
		t.Close()
		return nil, WithKind(ErrMount, err)
	}
	go func() {
		s.srv.Wait()
		t.Close()
		close(s.done)
	}()
	return s, nil
}

// Wait blocks until the mount is gone (unmounted here or from outside) and its
// sources are closed.
func (s *Server) Wait() { <-s.done }

// Unmount ends the mount and waits until its sources are closed. A busy mount
// is detached lazily; whatever still holds it a short grace later (a file open
// in it, a copy in another mount namespace) is cut off: its reads fail with
// ENOTCONN (see fusedisk.Server.Stop).
func (s *Server) Unmount() error {
	if err := s.srv.Stop(); err != nil {
		return WithKind(ErrMount, err)
	}
	s.Wait()
	return nil
}

// FSName is the mount source a server with this pid gives its mount; it names
// the server in /proc/self/mountinfo (List reads it back).
func FSName(pid int) string { return fsNamePrefix + strconv.Itoa(pid) }

const fsNamePrefix = "vmfs:"

// CheckMountpoint returns the absolute mountpoint after checking that it is an
// existing empty directory that is not already a vmfs mount, and that FUSE can
// mount there for this user. Its errors are of kind ErrMount.
func CheckMountpoint(path string, allowOther bool) (string, error) {
	dir, err := checkMountpoint(path, allowOther)
	return dir, WithKind(ErrMount, err)
}

func checkMountpoint(path string, allowOther bool) (string, error) {
	dir, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	// mountinfo first: a directory that is a stopped server's mount must not be touched.
	if m, err := fusedisk.MountAt(dir); err == nil && m != nil && m.FSType == fusedisk.FSType {
		return "", fmt.Errorf("mountpoint %s: already a vmfs mount", path)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", path, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return "", fmt.Errorf("mountpoint %s: not a directory", path)
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", path, err)
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return "", fmt.Errorf("mountpoint %s: not empty", path)
	}
	return dir, checkFUSE(allowOther)
}

// lockMountpoint takes an exclusive flock on the mountpoint directory; unlock
// releases it. A mount made meanwhile hides the directory but not the lock, since
// the lock is on the directory opened before.
func lockMountpoint(dir string) (unlock func(), err error) {
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, WithKind(ErrMount, fmt.Errorf("mountpoint %s: %w", dir, errors.Unwrap(err)))
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, WithKind(ErrMount, fmt.Errorf("lock mountpoint %s: %w", dir, err))
	}
	return func() { d.Close() }, nil
}

// fuseConf is where fusermount3 reads user_allow_other.
const fuseConf = "/etc/fuse.conf"

// checkFUSE checks what this user's mount will use: root opens /dev/fuse and
// mounts itself; anyone else goes through the setuid fusermount3, which opens
// /dev/fuse with the user's own rights (so a 0600 device is root's alone) and
// allows AllowOther only with user_allow_other in /etc/fuse.conf.
func checkFUSE(allowOther bool) error {
	if os.Geteuid() == 0 {
		fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("/dev/fuse unusable: %w", errors.Unwrap(err))
		}
		return fuse.Close()
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		var st unix.Stat_t
		unix.Stat("/dev/fuse", &st)
		return fmt.Errorf("/dev/fuse unusable by uid %d: %w (mode %#o: a user other than root needs read-write access, e.g. mode 0666)", os.Geteuid(), err, st.Mode&0o777)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found (install fuse3): a mount by a user other than root needs it")
	}
	if allowOther && !userAllowOther() {
		return fmt.Errorf("--allow-other: a user other than root needs user_allow_other in %s", fuseConf)
	}
	return nil
}

// userAllowOther reports whether fuse.conf has the user_allow_other line.
func userAllowOther() bool {
	b, err := os.ReadFile(fuseConf)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}
