package outlet

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/testdata"
)

// A destination is the write end the outlet gets and the read end the test
// holds, opened as a client hands them over: blocking descriptors wrapped by
// os.NewFile, which Go writes without its poller.
type destination struct {
	name string
	open func(t *testing.T) (w, r *os.File)
}

func fifo(t *testing.T) (w, r *os.File) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(rfd, false); err != nil {
		t.Fatal(err)
	}
	wfd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return files(t, path, wfd, rfd)
}

func pipe(t *testing.T) (w, r *os.File) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return files(t, "pipe", p[1], p[0])
}

func socketpair(t *testing.T) (w, r *os.File) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return files(t, "socket", p[0], p[1])
}

func files(t *testing.T, name string, wfd, rfd int) (w, r *os.File) {
	w, r = os.NewFile(uintptr(wfd), name), os.NewFile(uintptr(rfd), name)
	t.Cleanup(func() { w.Close(); r.Close() })
	return w, r
}

var destinations = []destination{{"fifo", fifo}, {"pipe", pipe}, {"socket", socketpair}}

// within runs fn and fails the test unless it returns within d: the bound
// turns a hang into a failure, it measures nothing.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// pattern is n bytes that show a reordering or a loss.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestDeliversInOrder: a destination that reads gets every byte, in order, and
// Close returns once it has them.
func TestDeliversInOrder(t *testing.T) {
	want := pattern(3 << 20)
	for _, d := range destinations {
		t.Run(d.name, func(t *testing.T) {
			w, r := d.open(t)
			var got bytes.Buffer
			read := make(chan error)
			go func() { _, err := io.Copy(&got, r); read <- err }()
			o := New(w, Options{Limit: len(want)}) // room for all: nothing may drop
			for rest := want; len(rest) > 0; {
				n := min(len(rest), 1000)
				o.Write(rest[:n])
				rest = rest[n:]
			}
			within(t, time.Minute, "Close", o.Close)
			w.Close() // the outlet's own descriptor is closed: the reader sees EOF
			if err := <-read; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("got %d bytes, want the %d written, in order", got.Len(), len(want))
			}
			if n := o.Dropped(); n != 0 {
				t.Errorf("Dropped = %d, want 0", n)
			}
		})
	}
}

// blocked is a destination whose Write never returns until released.
type blocked struct{ release chan struct{} }

func (b blocked) Write(p []byte) (int, error) {
	<-b.release
	return len(p), nil
}

// TestNeverBlocks: with a destination that takes nothing (a FIFO, pipe or socket
// nobody reads, a write that never returns), Write returns at once, drops what
// does not fit and counts it, Close returns, and the caller's file keeps its
// flags (it is shared with whoever handed it over).
func TestNeverBlocks(t *testing.T) {
	const limit, total = 64 << 10, 8 << 20
	chunk := pattern(32 << 10)
	cases := append([]destination(nil), destinations...)
	cases = append(cases, destination{"writer", nil})
	for _, d := range cases {
		t.Run(d.name, func(t *testing.T) {
			var dest io.Writer
			var w *os.File
			if d.open != nil {
				w, _ = d.open(t)
				dest = w
			} else {
				b := blocked{make(chan struct{})}
				defer close(b.release)
				dest = b
			}
			o := New(dest, Options{Limit: limit, Stall: 50 * time.Millisecond})
			within(t, time.Minute, "Write", func() {
				for range total / len(chunk) {
					if n, err := o.Write(chunk); n != len(chunk) || err != nil {
						t.Errorf("Write = %d, %v; want %d, nil", n, err, len(chunk))
					}
				}
			})
			within(t, time.Minute, "Close", o.Close)
			// Kept: at most the queue, the batch out, and what the kernel buffers.
			if n := o.Dropped(); n < total-2*limit-(1<<20) {
				t.Errorf("Dropped = %d of %d written, want all but the buffered", n, total)
			}
			if w != nil {
				fl, err := unix.FcntlInt(w.Fd(), unix.F_GETFL, 0)
				if err != nil || fl&unix.O_NONBLOCK != 0 {
					t.Errorf("caller's file flags %#x, %v: O_NONBLOCK set", fl, err)
				}
			}
		})
	}
}

// TestStuckFIFOReleased: once closed, an outlet whose FIFO takes nothing lets go
// of it: the FIFO is left open only by those who opened it.
func TestStuckFIFOReleased(t *testing.T) {
	w, r := fifo(t)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(r.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	o := New(w, Options{Limit: 4 << 10, Stall: 50 * time.Millisecond})
	for range 64 {
		o.Write(pattern(4 << 10))
	}
	if n := testdata.FDsOn(t, path); n != 3 {
		t.Fatalf("%d descriptors on the FIFO while the outlet runs, want 3 (reader, writer, outlet's)", n)
	}
	o.Close()
	if !testdata.Eventually(t, time.Minute, func() bool { return testdata.FDsOn(t, path) == 2 }) {
		t.Errorf("%d descriptors on the FIFO after Close, want 2: the outlet still holds it", testdata.FDsOn(t, path))
	}
}

// TestReaderGone: a destination whose reader went away fails the outlet, which
// then drops everything, without the process dying of SIGPIPE.
func TestReaderGone(t *testing.T) {
	for _, d := range destinations {
		t.Run(d.name, func(t *testing.T) {
			w, r := d.open(t)
			o := New(w, Options{})
			r.Close()
			o.Write([]byte("to nobody"))
			within(t, time.Minute, "Close", o.Close)
			if n := o.Dropped(); n != int64(len("to nobody")) {
				t.Errorf("Dropped = %d, want %d", n, len("to nobody"))
			}
		})
	}
}

// TestFIFOWithoutReader: a FIFO that lost its reader before the outlet started
// drops everything from the start.
func TestFIFOWithoutReader(t *testing.T) {
	w, r := fifo(t)
	r.Close()
	o := New(w, Options{})
	o.Write([]byte("lost"))
	o.Close()
	if n := o.Dropped(); n != 4 {
		t.Errorf("Dropped = %d, want 4", n)
	}
}

// TestWriteAllocs: past its first writes (the first drop logs), Write allocates
// only to grow its two buffers to their bound (4 KiB doubling to 64 KiB: 5 times
// each), whether the destination keeps up or not.
func TestWriteAllocs(t *testing.T) {
	const runs, growth = 10000, 10
	for _, tc := range []struct {
		name string
		dest io.Writer
	}{
		{"keeping up", io.Discard},
		{"dropping", blocked{make(chan struct{})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := New(tc.dest, Options{Limit: 64 << 10, Stall: 50 * time.Millisecond})
			defer o.Close()
			p := pattern(512)
			for range 200 {
				o.Write(p)
			}
			// testing.AllocsPerRun rounds down to whole allocations per call.
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				o.Write(p)
			}
			runtime.ReadMemStats(&after)
			if n := after.Mallocs - before.Mallocs; n > growth {
				t.Errorf("%d allocations in %d writes, want at most %d", n, runs, growth)
			}
		})
	}
}
