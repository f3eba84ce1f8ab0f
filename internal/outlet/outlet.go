// Package outlet hands bytes to a destination that may stop taking them (a FIFO
// or socket nobody reads, a file on a stuck mount) without ever blocking the
// writer: Write queues a bounded amount and drops what does not fit, counting
// it, and one goroutine per Outlet delivers the queue. It owns only that.
//
// A FIFO, pipe or socket is written without blocking, through a descriptor of
// the outlet's own (a FIFO reopened with O_NONBLOCK, a socket written with
// MSG_DONTWAIT), so the caller's open file keeps its flags; once closed, an
// outlet whose peer takes nothing for Options.Stall ends its goroutine. A write
// to anything else (a regular file, a terminal, an io.Writer) cannot be
// interrupted: the goroutine may stay in it, but Close stops waiting for it.
package outlet

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Defaults for Options left zero.
const (
	DefaultLimit = 256 << 10
	DefaultStall = 2 * time.Second
)

// Options bound an Outlet and name it in its log.
type Options struct {
	Limit  int           // bytes queued at most; beyond that Write drops; 0 = DefaultLimit
	Stall  time.Duration // how long Close waits for a destination that takes nothing; 0 = DefaultStall
	Name   string        // what the destination is, for the log: "console", "vmm stderr"
	Logger *zap.Logger   // the first drop is logged here, once; nil = zap.NewNop()
}

// ErrStalled ends the delivery to a pollable destination that took nothing for
// Options.Stall after Close.
var ErrStalled = errors.New("destination took nothing")

// Outlet is an io.Writer whose Write never blocks and never fails.
type Outlet struct {
	w     io.Writer // the destination when fd is -1
	fd    int       // the outlet's own non-blocking descriptor of a FIFO or socket, or -1
	sock  bool      // fd is a socket: written with MSG_DONTWAIT
	limit int
	stall time.Duration
	name  string
	log   *zap.Logger

	dropped  atomic.Int64
	warned   atomic.Bool
	progress chan struct{} // ticks when a write delivered something
	done     chan struct{} // closed when the goroutine has ended

	// mu guards the fields below; wake is signalled when pending grows or the
	// outlet closes. pending and spare are distinct buffers: Write appends to
	// pending while the goroutine delivers the other, then they swap.
	mu      sync.Mutex
	wake    sync.Cond
	pending []byte
	spare   []byte
	closed  bool
	failed  error // the destination failed: everything from then on is dropped
}

// New starts an outlet to w, which it does not close. w must not be nil.
func New(w io.Writer, o Options) *Outlet {
	out := &Outlet{
		w: w, fd: -1,
		limit: o.Limit, stall: o.Stall, name: o.Name, log: o.Logger,
		progress: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	out.wake.L = &out.mu
	if out.limit <= 0 {
		out.limit = DefaultLimit
	}
	if out.stall <= 0 {
		out.stall = DefaultStall
	}
	if out.log == nil {
		out.log = zap.NewNop()
	}
	if f, ok := w.(*os.File); ok {
		out.fd, out.sock, out.failed = ownDescriptor(f)
	}
	go out.run()
	return out
}

// ownDescriptor gives a FIFO or pipe (reopened) or a socket (duplicated) a
// descriptor the outlet can write without blocking and without touching f's
// flags, which f shares with whoever handed it over. It returns -1 for other
// files and when the reopen fails (no /proc, a sandbox): those are written as
// they are. A FIFO without a reader fails the outlet, as a write would.
func ownDescriptor(f *os.File) (fd int, sock bool, failed error) {
	fd = -1
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, false, nil
	}
	rc.Control(func(raw uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(raw), &st) != nil {
			return
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFSOCK:
			if d, err := unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0); err == nil {
				fd, sock = d, true
			}
		case unix.S_IFIFO:
			// Reopening yields write access whatever f was opened for: only
			// for a file that grants it.
			fl, err := unix.FcntlInt(raw, unix.F_GETFL, 0)
			if err != nil || fl&unix.O_ACCMODE == unix.O_RDONLY {
				return
			}
			d, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(raw)), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
			switch {
			case err == nil:
				fd = d
			case errors.Is(err, unix.ENXIO): // the FIFO has no reader
				failed = &os.PathError{Op: "open", Path: f.Name(), Err: unix.EPIPE}
			}
		}
	})
	return fd, sock, failed
}

// Write queues what fits of p and drops the rest. It returns len(p), nil: a
// destination that fails or falls behind must not stop the writers beside it
// (in an io.MultiWriter) nor the producer.
func (o *Outlet) Write(p []byte) (int, error) {
	o.mu.Lock()
	n := 0
	if !o.closed && o.failed == nil {
		n = min(len(p), o.limit-len(o.pending))
		if n > 0 {
			o.pending = appendBounded(o.pending, p[:n], o.limit)
			o.wake.Signal()
		}
	}
	cause := o.failed
	o.mu.Unlock()
	if n < len(p) {
		o.drop(len(p)-n, cause)
	}
	return len(p), nil
}

// appendBounded appends p to b, growing b to at most limit bytes of capacity:
// len(b)+len(p) must not exceed limit. Once grown, it allocates nothing.
func appendBounded(b, p []byte, limit int) []byte {
	if cap(b)-len(b) < len(p) {
		nb := make([]byte, len(b), min(limit, max(2*cap(b), len(b)+len(p), 4<<10)))
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}

// drop counts n bytes lost and logs the first loss.
func (o *Outlet) drop(n int, cause error) {
	o.dropped.Add(int64(n))
	if !o.warned.CompareAndSwap(false, true) {
		return
	}
	if cause != nil {
		o.log.Warn("output lost: its destination failed; dropping the rest", zap.String("output", o.name), zap.Error(cause))
		return
	}
	o.log.Warn("output lost: its destination is not keeping up; dropping what does not fit", zap.String("output", o.name), zap.Int("queued_bytes", o.limit))
}

// Dropped returns how many bytes were dropped so far.
func (o *Outlet) Dropped() int64 { return o.dropped.Load() }

// Close stops taking bytes (later writes are dropped) and waits for the queue
// to be delivered, but not for a destination that takes nothing for
// Options.Stall. It does not close the destination. Safe to call more than once.
func (o *Outlet) Close() {
	o.mu.Lock()
	o.closed = true
	o.wake.Signal()
	o.mu.Unlock()
	t := time.NewTimer(o.stall)
	defer t.Stop()
	for {
		select {
		case <-o.done:
			return
		case <-o.progress:
			t.Reset(o.stall)
		case <-t.C:
			return
		}
	}
}

// run delivers the queue until the outlet is closed and drained, or fails.
func (o *Outlet) run() {
	defer close(o.done)
	if o.fd >= 0 {
		defer unix.Close(o.fd)
	}
	for {
		o.mu.Lock()
		for len(o.pending) == 0 && !o.closed && o.failed == nil {
			o.wake.Wait()
		}
		if len(o.pending) == 0 {
			o.mu.Unlock()
			return
		}
		batch := o.pending
		o.pending, o.spare = o.spare[:0], nil
		o.mu.Unlock()

		n, err := o.deliver(batch)

		o.mu.Lock()
		o.spare = batch[:0]
		lost := 0
		if err != nil {
			o.failed = err
			lost = len(batch) - n + len(o.pending)
			o.pending = o.pending[:0]
		}
		o.mu.Unlock()
		if err != nil {
			o.drop(lost, err)
			return
		}
	}
}

// deliver writes b and returns how much of it went out.
func (o *Outlet) deliver(b []byte) (int, error) {
	if o.fd < 0 {
		n, err := o.w.Write(b)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		o.tick()
		return n, err
	}
	off := 0
	for off < len(b) {
		var n int
		var err error
		if o.sock {
			n, err = unix.SendmsgN(o.fd, b[off:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		} else {
			n, err = unix.Write(o.fd, b[off:])
		}
		switch {
		case n > 0:
			off += n
			o.tick()
		case err == unix.EINTR:
		case err != unix.EAGAIN:
			return off, err
		default:
			if err := o.awaitRoom(); err != nil {
				return off, err
			}
		}
	}
	return off, nil
}

// awaitRoom waits until the descriptor takes more (or reports an error, which
// the next write returns). While the outlet is open it waits as long as it
// takes, the queue dropping what does not fit; once it is closed, for Stall.
func (o *Outlet) awaitRoom() error {
	fds := []unix.PollFd{{Fd: int32(o.fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, int(o.stall.Milliseconds()))
		switch {
		case err == unix.EINTR:
		case err != nil:
			return os.NewSyscallError("poll", err)
		case n > 0:
			return nil
		case o.isClosed():
			return ErrStalled
		}
	}
}

func (o *Outlet) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

// tick tells Close that the destination took something.
func (o *Outlet) tick() {
	select {
	case o.progress <- struct{}{}:
	default:
	}
}
