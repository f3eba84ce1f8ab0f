package launcher

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeFile creates a file with the given bytes and returns its path.
func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// within runs fn and fails the test unless it returns within d: the bound turns
// a hang into a failure, it measures nothing.
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

// unreadPipe returns the write end of a pipe whose read end the test holds and
// never reads, as a client could hand over its console: a blocking descriptor.
func unreadPipe(t *testing.T) *os.File {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	w, r := os.NewFile(uintptr(p[1]), "unread"), os.NewFile(uintptr(p[0]), "unread")
	t.Cleanup(func() { w.Close(); r.Close() })
	return w
}

// unreadFIFO returns a FIFO opened for writing whose reader the test holds and
// never reads.
func unreadFIFO(t *testing.T) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "console")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return w
}

// unreadSocket returns one end of a stream socket pair whose other end the test
// holds and never reads.
func unreadSocket(t *testing.T) *os.File {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, r := os.NewFile(uintptr(p[0]), "unread socket"), os.NewFile(uintptr(p[1]), "unread socket")
	t.Cleanup(func() { w.Close(); r.Close() })
	return w
}
