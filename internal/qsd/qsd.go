// Package qsd shows the virtual disk of an open QCOW2 image through
// qemu-storage-daemon: it starts the daemon, serves it the image's bytes, and
// reads and writes the virtual disk it exports. It owns that engine and the
// NBD on both sides of it, nothing else: it reads no header (the caller checks
// what the image holds) and imports no other vmfs package.
//
// # No paths
//
// The daemon opens nothing by name, so that it works for a process confined by
// Landlock (which checks even a reopen of /proc/self/fd/N against the file's
// own path) and run as another user. QEMU 7.2's daemon has no add-fd or getfd,
// so the image does not reach it at all: its qcow2 node sits on an NBD node
// whose server is this package, on one end of a socketpair the daemon
// inherits, reading and writing the caller's descriptor. The daemon exports
// the qcow2 node over NBD on a listening socket it inherits; that socket has
// an abstract name the kernel picks (a listening socket needs one), the client
// connects to it before the daemon starts, with a backlog of one, and then
// shuts it for reading, so that the kernel refuses every other connection: no
// one else ever reaches the export. Everything is set up on the daemon's
// command line; no monitor is needed.
//
// # Writes
//
// The export is writethrough: the daemon writes the QCOW2 metadata a write
// changed to the file before it replies, so an acknowledged write is in the
// file (in the host's page cache) even if vmfs and the daemon are killed just
// after. The daemon never asks for the file to be synced (cache.no-flush):
// Sync flushes the daemon and then syncs the file itself. The daemon takes no
// image locks (it has no file): the one-writer lock is the caller's.
//
// # Failures
//
// The daemon gets SIGKILL when vmfs dies (Pdeathsig, from a thread kept for
// the daemon's life), every exchange with it is bounded by Options.Timeout,
// and one that fails or times out kills it: later calls fail at once, never
// hang.
package qsd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options say how Open runs the daemon.
type Options struct {
	// Binary is the daemon; "" means DefaultBinary, found in PATH.
	Binary string
	// Credential, when set, runs the daemon as that user (it opens nothing by name).
	Credential *syscall.Credential
	// Timeout bounds each exchange with the daemon; 0 means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds each exchange with the daemon unless Options.Timeout says.
const DefaultTimeout = 30 * time.Second

// ErrEngine is matched (errors.Is) by the errors of an engine that failed: it
// could not start, refused the image, timed out or died.
var ErrEngine = errors.New("qemu-storage-daemon")

// Image is the virtual disk of a QCOW2 image, served by its own daemon. It is
// safe for concurrent use; requests go to the daemon one at a time.
type Image struct {
	f       *os.File // the caller's; synced, never closed
	cmd     *exec.Cmd
	nbd     *nbdConn      // to the daemon's export
	backend *net.UnixConn // the daemon's NBD connection to f
	timeout time.Duration
	stderr  *tail
	exited  chan struct{} // closed once the daemon has exited
	mu      sync.Mutex    // one NBD request at a time; guards broken
	broken  error
}

// DefaultBinary is the daemon run unless Options.Binary names another.
const DefaultBinary = "qemu-storage-daemon"

// backendSize is the size the daemon sees its image file have. QEMU cannot
// grow an NBD node, and QCOW2 grows its file as it allocates clusters, so the
// file is shown as large as a QCOW2 file can be; past its end it reads zeros.
const backendSize = 1 << 56

// Open starts a daemon serving the QCOW2 image f, which must be open read-write,
// and returns its virtual disk. f stays the caller's: Close does not close it.
func Open(f *os.File, o Options) (*Image, error) {
	bin := o.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEngine, err)
	}
	backend, child, err := socketpair()
	if err != nil {
		return nil, err
	}
	lis, client, err := nbdListener()
	if err != nil {
		backend.Close()
		child.Close()
		return nil, err
	}
	im := &Image{f: f, backend: backend, timeout: timeout, stderr: &tail{}, exited: make(chan struct{})}
	// fd 3 is the image file's NBD server, fd 4 the export's listener, with
	// one connection queued: ours. backing null: a backing file would be
	// opened by name (the caller refuses those).
	im.cmd = exec.Command(path,
		"--blockdev", `{"driver":"nbd","node-name":"file","server":{"type":"fd","str":"3"},"cache":{"no-flush":true}}`,
		"--blockdev", `{"driver":"qcow2","node-name":"disk","file":"file","backing":null}`,
		"--nbd-server", "addr.type=fd,addr.str=4,max-connections=1",
		"--export", "type=nbd,id=e,node-name=disk,name=disk,writable=on,writethrough=on")
	im.cmd.ExtraFiles = []*os.File{child, lis}
	im.cmd.Stderr = im.stderr
	im.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: o.Credential}
	err = im.start()
	// Only the daemon holds these now: when it dies, the export's queued
	// connection is reset and nothing waits on it.
	child.Close()
	lis.Close()
	if err != nil {
		backend.Close()
		client.Close()
		return nil, fmt.Errorf("%w: start %s: %v", ErrEngine, path, err)
	}
	go serveFile(backend, f, backendSize)
	im.nbd = &nbdConn{c: client, timeout: timeout}
	if err := im.nbd.handshake("disk"); err != nil {
		im.kill()
		return nil, im.failure(err)
	}
	return im, nil
}

// start starts the daemon from a thread locked until it has exited. The kernel
// sends the parent-death signal when the thread that forked a child ends, not
// the process, and Go ends a thread only when a goroutine locked to it returns
// locked: so the daemon's thread is not lent to a goroutine that might, and
// this one unlocks before it returns, for the thread may have forked other
// children (a VMM) before. When vmfs dies, all its threads do, and the signal
// comes.
func (im *Image) start() error {
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := im.cmd.Start()
		started <- err
		if err == nil {
			im.cmd.Wait()
			close(im.exited)
		}
	}()
	return <-started
}

// failure is err with what the daemon last said, if it said anything.
func (im *Image) failure(err error) error {
	if s := im.stderr.String(); s != "" {
		return fmt.Errorf("%w: %v (it said: %s)", ErrEngine, err, s)
	}
	return fmt.Errorf("%w: %v", ErrEngine, err)
}

// Size is the image's virtual size.
func (im *Image) Size() int64 { return im.nbd.size }

// ReadAt reads the virtual disk.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	return im.io(nbdRead, p, off)
}

// WriteAt writes the virtual disk; the bytes are in the file when it returns.
func (im *Image) WriteAt(p []byte, off int64) (int, error) {
	return im.io(nbdWrite, p, off)
}

// io moves p at off in requests of at most maxRequest bytes.
func (im *Image) io(op uint16, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > im.nbd.size {
		return 0, fmt.Errorf("qsd: %d bytes at %d: outside the virtual disk (%d bytes)", len(p), off, im.nbd.size)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	done := 0
	for done < len(p) {
		n := min(len(p)-done, maxRequest)
		if err := im.request(op, off+int64(done), p[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// request sends one NBD request; any failure but the daemon's own error reply
// breaks the engine for good. Callers hold mu.
func (im *Image) request(op uint16, off int64, p []byte) error {
	if im.broken != nil {
		return im.broken
	}
	err := im.nbd.request(op, off, p)
	var re *replyError
	if err != nil && !errors.As(err, &re) {
		im.broken = im.failure(err)
		im.kill()
		return im.broken
	}
	return err
}

// Sync puts every write into the file and syncs it: NBD flush, then fdatasync.
func (im *Image) Sync() error {
	im.mu.Lock()
	err := im.request(nbdFlush, 0, nil)
	im.mu.Unlock()
	if err != nil {
		return err
	}
	return os.NewSyscallError("fdatasync", unix.Fdatasync(int(im.f.Fd())))
}

// Close syncs the image and stops the daemon: NBD disconnect and SIGTERM, or
// SIGKILL when it does not go.
func (im *Image) Close() error {
	err := im.Sync()
	im.mu.Lock()
	if im.broken == nil {
		im.nbd.disconnect()
		im.broken = fmt.Errorf("%w: closed", ErrEngine)
		im.cmd.Process.Signal(syscall.SIGTERM)
	}
	im.mu.Unlock()
	select {
	case <-im.exited:
	case <-time.After(im.timeout):
		err = errors.Join(err, fmt.Errorf("%w: did not stop in %v; killed", ErrEngine, im.timeout))
	}
	im.kill()
	return err
}

// kill ends the daemon and its sockets, and waits until it is gone.
func (im *Image) kill() {
	im.cmd.Process.Kill()
	im.backend.Close()
	im.nbd.c.Close()
	<-im.exited
}

// tail keeps the last bytes the daemon wrote to stderr, for errors.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// socketpair returns a connected pair of Unix stream sockets: ours as a
// *net.UnixConn, the daemon's as a file.
func socketpair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	c, err := fileConn(fds[0], "nbd-file")
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return c, os.NewFile(uintptr(fds[1]), "nbd-file"), nil
}

// nbdListener returns a listening socket no one but the returned client can
// ever connect to (see "No paths"), the client connected.
func nbdListener() (lis *os.File, client *net.UnixConn, err error) {
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	lis = os.NewFile(uintptr(lfd), "nbd")
	defer func() {
		if err != nil {
			lis.Close()
		}
	}()
	// An empty name: the kernel picks an abstract one (autobind).
	if err := unix.Bind(lfd, &unix.SockaddrUnix{}); err != nil {
		return nil, nil, os.NewSyscallError("bind", err)
	}
	// A backlog of 0 takes one pending connection.
	if err := unix.Listen(lfd, 0); err != nil {
		return nil, nil, os.NewSyscallError("listen", err)
	}
	addr, err := unix.Getsockname(lfd)
	if err != nil {
		return nil, nil, os.NewSyscallError("getsockname", err)
	}
	cfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	// Non-blocking: if someone else took the one place, this fails at once.
	if err := unix.Connect(cfd, addr); err != nil {
		unix.Close(cfd)
		return nil, nil, fmt.Errorf("%w: NBD socket taken before vmfs connected: %v", ErrEngine, err)
	}
	if err := unix.Shutdown(lfd, unix.SHUT_RD); err != nil {
		unix.Close(cfd)
		return nil, nil, os.NewSyscallError("shutdown", err)
	}
	client, err = fileConn(cfd, "nbd")
	return lis, client, err
}

// fileConn makes a *net.UnixConn of fd, which it takes over.
func fileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
