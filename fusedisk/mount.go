package fusedisk

import (
	"errors"
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
	// Writable mounts read-write, for a tree with writable sources (see
	// "Writes"): its other files stay read-only, refused by vmfs, not the kernel.
	Writable bool
	Debug    bool
	Logger   *zap.Logger // default zap.NewNop()
	// Mounter ends the mount (Server.Stop); nil means Direct.
	Mounter Mounter
}

// Server is a mounted vmfs tree. It finds its mount by its mount ID, never by
// its path: a mountpoint reached through a symlink, or renamed since, is still
// unmounted.
type Server struct {
	Mountpoint string // as given to Mount
	// Passthrough are the files the kernel reads from their originals itself
	// (see "Passthrough"), by path in the tree, sorted.
	Passthrough []string
	fsName      string
	srv         *fuse.Server
	log         *zap.Logger
	mt          Mounter
	id          int           // the mount's ID (see MountInfo)
	conn        uint32        // its FUSE connection, as fusectl names it
	done        chan struct{} // closed once the connection has ended
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
	tree := treeOf(root)
	passNodes := tree.passNodes()
	opts := fsOptions(o)
	if len(passNodes) == 0 {
		// Passthrough would make the mount a stacked filesystem for nothing.
		opts.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	// fs.Mount, with passthrough armed between INIT and the first request.
	srv, err := fuse.NewServer(fs.NewNodeFS(root, opts), dir, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: the kernel's FUSE refused: %w", dir, err)
	}
	pass := armPassthrough(srv, tree, passNodes, log)
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: the kernel's FUSE refused: %w", dir, err)
	}
	s := &Server{Mountpoint: dir, Passthrough: pass, fsName: o.FsName, srv: srv, log: log, mt: orDirect(o.Mounter), done: make(chan struct{})}
	go func() { srv.Wait(); close(s.done) }()
	stx, err := statMount(unix.AT_FDCWD, dir)
	if err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	s.id, s.conn = int(stx.Mnt_id), stx.Dev_minor
	if os.Geteuid() == 0 {
		kib := o.ReadaheadKiB
		if kib == 0 {
			kib = defaultReadaheadKiB
		}
		if err := setReadahead(stx, kib); err != nil {
			log.Warn("cannot raise readahead; sequential reads stay at 128 KiB requests", zap.Error(err))
		}
	}
	return s, nil
}

// fsOptions are go-fuse's options for a mount of a tree.
func fsOptions(o MountOptions) *fs.Options {
	timeout := cacheTimeout
	flags, ro := uintptr(syscall.MS_RDONLY), []string{"ro"}
	if o.Writable {
		flags, ro = 0, nil
	}
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
			DirectMountFlags: flags | syscall.MS_NOSUID | syscall.MS_NODEV,
			// The kernel checks each node's owner, group and mode (see permOf).
			Options:                  append(ro, "default_permissions"),
			ExplicitDataCacheControl: true,
			Debug:                    o.Debug,
		},
	}
}

const defaultReadaheadKiB = 1024

// setReadahead writes the read_ahead_kb of the backing device info of the
// mount's root, root.
func setReadahead(root *unix.Statx_t, kib int) error {
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", root.Dev_major, root.Dev_minor)
	return os.WriteFile(bdi, []byte(strconv.Itoa(kib)), 0)
}

// Wait blocks until the mount's FUSE connection has ended: once no mount of it
// is left in any mount namespace and no file of it is open (see Stop), or once
// it is aborted. The sources stay open: their owner closes them after Wait.
func (s *Server) Wait() { <-s.done }

// Unmount removes exactly this mount, wherever it is now (see Unmount). Another
// mount namespace may still hold a copy of it: Wait returns once none does.
func (s *Server) Unmount() error { return s.unmount(false) }

// Detach removes this mount lazily: at once from the tree, and for good when its
// last open file is closed.
func (s *Server) Detach() error { return s.unmount(true) }

func (s *Server) unmount(lazy bool) error {
	ms, err := Mounts()
	if err != nil {
		return err
	}
	m := byID(ms, s.id)
	if m == nil || m.FSType != FSType || s.fsName != "" && m.Source != s.fsName || m.Root != "/" {
		return fmt.Errorf("%s: %w", s.Mountpoint, ErrNotMounted)
	}
	return unmount(s.mt, ms, m, lazy)
}

// stopGrace is how long Stop lets what still holds a mount it unmounted go by
// itself before it aborts the connection.
const stopGrace = 2 * time.Second

// Stop ends the mount whatever holds it, and returns once its connection has
// ended (Wait returns): it unmounts it here, lazily when busy, and gives what
// still holds it stopGrace to let go. Past that, it aborts the FUSE connection
// (see fusectl.Abort): a copy in another mount namespace (unshare -Urm lets any
// user make one) or a file open in a detached mount would otherwise keep it up
// for as long as they like. Their requests fail with ENOTCONN from then on. A
// mount covered by another is left as it is (a *CoveredError).
func (s *Server) Stop() error {
	err := s.Unmount()
	if errors.Is(err, ErrBusy) {
		s.log.Warn("mount busy; detaching it lazily", zap.String("mountpoint", s.Mountpoint))
		err = s.Detach()
	}
	if err != nil && !errors.Is(err, ErrNotMounted) {
		return err
	}
	if s.waited(stopGrace) {
		return nil
	}
	s.log.Warn("mount still held (a file open in it, a copy in another mount namespace): aborting its FUSE connection",
		zap.String("mountpoint", s.Mountpoint), zap.Duration("after", stopGrace))
	if err := s.mt.Abort(s.conn); err != nil {
		return fmt.Errorf("%s: unmounted, but still held elsewhere until this process exits: %w", s.Mountpoint, err)
	}
	if !s.waited(stopGrace) {
		return fmt.Errorf("%s: its FUSE connection still serves after it was aborted", s.Mountpoint)
	}
	return nil
}

// waited reports whether the connection ends within d.
func (s *Server) waited(d time.Duration) bool {
	select {
	case <-s.done:
		return true
	case <-time.After(d):
		return false
	}
}
