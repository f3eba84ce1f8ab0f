package fusedisk

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// MountOptions say how Mount mounts a tree.
type MountOptions struct {
	// FsName shows as the mount's source in /proc/self/mountinfo.
	FsName string
	// AllowOther lets other users in; each file stays as closed as its sources.
	AllowOther bool
	// ReadaheadKiB sets the mount's kernel readahead (root only). The kernel caps
	// FUSE readahead at 128 KiB at mount time, which splits sequential reads into
	// 128 KiB requests; a larger window lets them reach MaxWrite. 0 means 1024.
	ReadaheadKiB int
	Debug        bool
	Logger       *zap.Logger // default zap.NewNop()
}

// Server is a mounted vmfs tree.
type Server struct {
	Mountpoint string
	fsName     string
	srv        *fuse.Server
}

// cacheTimeout is how long the kernel may keep entries and attributes: the
// content of a tree never changes.
const cacheTimeout = 24 * time.Hour

// Mount mounts root (see NewTree) at dir, an existing directory, read-only, and
// returns once the kernel has the mount. Root mounts directly and raises the
// mount's readahead; any other user mounts through fusermount3.
func Mount(dir string, root fs.InodeEmbedder, o MountOptions) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	srv, err := fs.Mount(dir, root, fsOptions(o))
	if err != nil {
		return nil, fmt.Errorf("mount %s: the kernel's FUSE refused: %w", dir, err)
	}
	if os.Geteuid() == 0 {
		kib := o.ReadaheadKiB
		if kib == 0 {
			kib = defaultReadaheadKiB
		}
		if err := setReadahead(dir, kib); err != nil {
			log.Warn("cannot raise readahead; sequential reads stay at 128 KiB requests", zap.Error(err))
		}
	}
	return &Server{Mountpoint: dir, fsName: o.FsName, srv: srv}, nil
}

// fsOptions are go-fuse's options for a mount of a tree.
func fsOptions(o MountOptions) *fs.Options {
	timeout := cacheTimeout
	return &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		// A mode of 0 means no one but root, not go-fuse's default of 0644.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:       o.FsName,
			Name:         subtype,
			MaxWrite:     maxRead,
			MaxReadAhead: maxRead,
			AllowOther:   o.AllowOther,
			DirectMount:  os.Geteuid() == 0,
			// The kernel enforces read-only before any request reaches vmfs.
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			// The kernel checks each node's owner, group and mode (see permOf).
			Options:                  []string{"ro", "default_permissions"},
			ExplicitDataCacheControl: true,
			Debug:                    o.Debug,
		},
	}
}

const defaultReadaheadKiB = 1024

// setReadahead writes the read_ahead_kb of the mount's backing device info.
func setReadahead(mnt string, kib int) error {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(strconv.Itoa(kib)), 0)
}

// Wait blocks until the tree is unmounted (by Unmount, fusermount -u or umount).
// The sources stay open: their owner closes them once Wait has returned.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount removes exactly this mount (see Unmount); Wait returns once it is gone.
func (s *Server) Unmount() error { return Unmount(s.Mountpoint, s.fsName, false) }

// Detach removes this mount lazily: at once from the tree, and for good when its
// last open file is closed, which is when Wait returns.
func (s *Server) Detach() error { return Unmount(s.Mountpoint, s.fsName, true) }
