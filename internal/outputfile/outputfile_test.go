package outputfile

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	blockDev := ""
	if os.Geteuid() == 0 { // a loop device's node: opening it writes nothing
		blockDev = filepath.Join(dir, "loop")
		if err := unix.Mknod(blockDev, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))); err != nil {
			t.Fatal(err)
		}
	}
	open := func(path string) (*os.File, error) {
		t.Helper()
		done := make(chan struct{})
		var f *os.File
		var err error
		go func() { f, err = Open(path); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second): // a blocked open(2) never returns
			t.Fatalf("Open(%s) blocked", path)
		}
		return f, err
	}

	for _, tc := range []struct{ path, want string }{
		{fifo, "a FIFO with no reader"},
		{dir, "a directory"},
		{filepath.Join(dir, "sock"), "a socket"},
		{filepath.Join(dir, "none", "file"), "no such file"},
		{blockDev, "a block device"},
	} {
		if tc.path == "" {
			continue
		}
		f, err := open(tc.path)
		if err == nil {
			f.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), tc.path+": ") {
			t.Errorf("Open(%s): %v, want an error naming it and saying %q", tc.path, err, tc.want)
		}
	}
	if _, err := open(fifo); !errors.Is(err, ErrNoReader) {
		t.Errorf("FIFO with no reader: %v, want ErrNoReader", err)
	}

	// A FIFO with a reader and a character device are taken as they are.
	r, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, p := range []string{fifo, "/dev/null"} {
		f, err := open(p)
		if err != nil {
			t.Errorf("Open(%s): %v", p, err)
			continue
		}
		if _, err := f.Write([]byte("x")); err != nil {
			t.Errorf("write to %s: %v", p, err)
		}
		f.Close()
	}

	// A regular file is truncated, and left blocking.
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := open(regular)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	f.Close()
	if err != nil || flags&unix.O_NONBLOCK != 0 {
		t.Errorf("regular file flags %#x %v: still O_NONBLOCK", flags, err)
	}
	if b, _ := os.ReadFile(regular); len(b) != 0 {
		t.Errorf("regular file not truncated: %q", b)
	}
	f, err = open(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}
