package confine

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/fusedisk"
	"vmfs/internal/inputfile"
	"vmfs/internal/wire"
)

// helperName is the name (argv[0]) a helper process runs under: a binary that
// links this package is the helper when started so (see init).
const helperName = "vmfs-mount-helper"

// helperTimeout bounds one request to a helper process. An unmount that waits
// longer is stuck: the caller gets an error, not a hang.
const helperTimeout = time.Minute

// HelperOptions are the only things a helper process changes.
type HelperOptions struct {
	// Dev is the device (st_dev) of a FUSE mount: the only filesystem whose
	// trees it attaches and detaches, and the only FUSE connection it aborts.
	Dev uint64 `json:"dev"`
	// Source is that mount's source (FUSE fsname): the only vmfs mounts it
	// unmounts by path.
	Source string `json:"source"`
	// Remove are the only files it removes (never a directory).
	Remove []string `json:"remove"`
}

// Helper makes, for a process confined by Landlock, the changes the kernel then
// denies it whatever the rules: a landlocked process may not mount, move a
// mount or unmount, may not open the abort file of a fusectl it mounts, and
// removing a file would take the right to remove any file of its directory.
// Helper is a fusedisk.Mounter, and removes files. Until Start, it makes the
// changes itself, in this process; from Start, which must come before Apply,
// a helper process does, unconfined, taking only the requests below, each
// checked against its HelperOptions. The helper process ignores SIGINT,
// SIGTERM and SIGHUP (a service's stop needs it) and exits once Close closes
// its socket, or this process dies.
type Helper struct {
	mu   sync.Mutex // one request at a time
	cmd  *exec.Cmd
	conn *wire.Conn // nil before Start
}

var _ fusedisk.Mounter = (*Helper)(nil)

// Start starts the helper process, allowed what o says: this very binary, run
// again under helperName.
func (h *Helper) Start(o HelperOptions) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "helper"), os.NewFile(uintptr(fds[1]), "helper")
	defer theirs.Close()
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return err
	}
	conn := wire.New(c.(*net.UnixConn))
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{helperName}, ExtraFiles: []*os.File{theirs}, Stderr: os.Stderr}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return fmt.Errorf("start the mount helper: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmd, h.conn = cmd, conn
	if err := conn.Send(o, nil, helperTimeout); err != nil {
		return errors.Join(fmt.Errorf("mount helper: %w", err), h.close())
	}
	return nil
}

// Close ends the helper process, if started, and waits for it.
func (h *Helper) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.close()
}

func (h *Helper) close() error {
	if h.conn == nil {
		return nil
	}
	h.conn.Close()
	h.conn = nil
	return h.cmd.Wait()
}

// The requests a helper process takes.
const (
	opMove    = "move"    // files: a detached tree of Dev, an empty directory
	opUnmount = "unmount" // Path: a vmfs mount of Source; Lazy
	opDetach  = "detach"  // files: the root of a mount of Dev
	opAbort   = "abort"   // Conn: Dev's FUSE connection
	opRemove  = "remove"  // Path: one of Remove
)

type helperRequest struct {
	Op   string `json:"op"`
	Path string `json:"path,omitempty"`
	Lazy bool   `json:"lazy,omitempty"`
	Conn uint32 `json:"conn,omitempty"`
}

// helperReply is a helper process's answer: the error, and the fusedisk error
// it wraps ("busy", "not-mounted"), so that callers can still tell them apart.
type helperReply struct {
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

var errKinds = map[string]error{"busy": fusedisk.ErrBusy, "not-mounted": fusedisk.ErrNotMounted}

// replyError is an error a helper process reported.
type replyError struct {
	msg  string
	kind error
}

func (e *replyError) Error() string { return e.msg }
func (e *replyError) Unwrap() error { return e.kind }

// do has the helper process carry out req, or, before Start, direct.
func (h *Helper) do(req helperRequest, direct func() error, files ...*os.File) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return direct()
	}
	if err := h.conn.Send(req, files, helperTimeout); err != nil {
		return fmt.Errorf("mount helper: %w", err)
	}
	var rep helperReply
	got, err := h.conn.Receive(&rep, helperTimeout)
	inputfile.CloseAll(got...)
	if err != nil {
		return fmt.Errorf("mount helper: %w", err)
	}
	if rep.Error != "" {
		return &replyError{rep.Error, errKinds[rep.Kind]}
	}
	return nil
}

// Move attaches tree, a detached tree of the mount of Dev, on the empty
// directory at.
func (h *Helper) Move(tree, at *os.File) error {
	return h.do(helperRequest{Op: opMove}, func() error { return fusedisk.Direct{}.Move(tree, at) }, tree, at)
}

// Unmount unmounts the vmfs mount of Source at point.
func (h *Helper) Unmount(point string, lazy bool) error {
	return h.do(helperRequest{Op: opUnmount, Path: point, Lazy: lazy}, func() error { return fusedisk.Direct{}.Unmount(point, lazy) })
}

// Detach lazily unmounts the mount of Dev whose root is root.
func (h *Helper) Detach(root *os.File) error {
	return h.do(helperRequest{Op: opDetach}, func() error { return fusedisk.Direct{}.Detach(root) }, root)
}

// Abort aborts the FUSE connection of Dev, conn.
func (h *Helper) Abort(conn uint32) error {
	return h.do(helperRequest{Op: opAbort, Conn: conn}, func() error { return fusedisk.Direct{}.Abort(conn) })
}

// Remove removes path, one of Remove.
func (h *Helper) Remove(path string) error {
	return h.do(helperRequest{Op: opRemove, Path: path}, func() error { return os.Remove(path) })
}

func init() {
	if len(os.Args) == 1 && os.Args[0] == helperName {
		os.Exit(runHelper())
	}
}

// runHelper takes its options, then serves the requests that come on
// descriptor 3 until it is closed.
func runHelper() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "%s: %v\n", helperName, err)
		return 1
	}
	f := os.NewFile(3, "helper")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fail(err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fail(errors.New("descriptor 3 is not its socket"))
	}
	conn := wire.New(uc)
	var o HelperOptions
	if _, err := conn.Receive(&o, helperTimeout); err != nil {
		return fail(err)
	}
	for {
		var req helperRequest
		files, err := conn.Receive(&req, 0)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			return fail(err)
		}
		rep := helperReply{}
		if err := o.serve(req, files); err != nil {
			rep.Error = err.Error()
			for kind, target := range errKinds {
				if errors.Is(err, target) {
					rep.Kind = kind
				}
			}
		}
		inputfile.CloseAll(files...)
		if err := conn.Send(rep, nil, helperTimeout); err != nil {
			return fail(err)
		}
	}
}

// serve carries out one request, if o allows it.
func (o HelperOptions) serve(req helperRequest, files []*os.File) error {
	direct := fusedisk.Direct{}
	switch {
	case req.Op == opMove && len(files) == 2:
		if err := errors.Join(o.ours("the tree to attach", files[0]), emptyDir(files[1])); err != nil {
			return err
		}
		return direct.Move(files[0], files[1])
	case req.Op == opUnmount && len(files) == 0:
		return fusedisk.Unmount(req.Path, o.Source, req.Lazy)
	case req.Op == opDetach && len(files) == 1:
		if err := o.ours("the mount to detach", files[0]); err != nil {
			return err
		}
		return direct.Detach(files[0])
	case req.Op == opAbort && len(files) == 0:
		if req.Conn != unix.Minor(o.Dev) {
			return fmt.Errorf("FUSE connection %d: not that of the mount it serves", req.Conn)
		}
		return direct.Abort(req.Conn)
	case req.Op == opRemove && len(files) == 0 && slices.Contains(o.Remove, req.Path):
		if err := unix.Unlink(req.Path); err != nil {
			return &os.PathError{Op: "remove", Path: req.Path, Err: err}
		}
		return nil
	}
	return fmt.Errorf("request %q with %d files: not one the mount helper takes", req.Op, len(files))
}

// ours refuses f, what, unless it is of the filesystem at o.Dev.
func (o HelperOptions) ours(what string, f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st.Dev != o.Dev {
		return fmt.Errorf("%s is not of the mount it serves", what)
	}
	return nil
}

// emptyDir refuses dir unless it is an empty directory: a mount on it hides
// nothing.
func emptyDir(dir *os.File) error {
	// A descriptor of its own: the one sent shares its offset with the sender's.
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the target: %w", err)
	}
	d := os.NewFile(uintptr(fd), "target")
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return errors.New("the target is not empty")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("the target: %w", err)
	}
	return nil
}
