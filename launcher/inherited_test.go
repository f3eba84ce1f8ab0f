package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"vmfs/internal/inputfile"
	"vmfs/metadata"
	"vmfs/testdata"
)

func TestInheritedPath(t *testing.T) {
	var h Inherited
	a, b := nullFile(t), nullFile(t)
	for _, tc := range []struct {
		f    *os.File
		want string
	}{
		{a, "/proc/self/fd/3"}, {b, "/proc/self/fd/4"}, {a, "/proc/self/fd/3"}, // once in the set
	} {
		if got := h.Path(tc.f); got != tc.want {
			t.Errorf("Path(fd %d) = %s, want %s", tc.f.Fd(), got, tc.want)
		}
	}
	for path, want := range map[string]*os.File{
		"/proc/self/fd/3": a, "/proc/self/fd/4": b,
		"/proc/self/fd/5": nil, "/proc/self/fd/2": nil, "/proc/self/fd/03": nil, "/tmp/kernel": nil,
	} {
		if got := h.file(path); got != want {
			t.Errorf("file(%s) = %v, want %v", path, got, want)
		}
	}
}

func nullFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// testGuest is the config of the test guest `make guest` builds (build/guest):
// a kernel and an initramfs whose agent prints guestStarted first.
func testGuest(t *testing.T) *metadata.VMConfig {
	t.Helper()
	cfg, err := metadata.LoadVMConfig("../build/guest/microdroid.json")
	if err != nil {
		testdata.Missing(t, "no test guest (run make guest): %v", err)
	}
	return cfg
}

const guestStarted = "vmfs-guest: checking the payload disk"

// lineWatcher is a console writer that closes seen once a line holds want.
type lineWatcher struct {
	want string
	seen chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.want)
	w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestQemuInheritedFiles: QEMU running as nobody boots a kernel and initrd and
// opens a read-only and a writable disk that lie in a directory only root may
// enter, through descriptors it inherits: it reopens /proc/self/fd/N, where the
// kernel checks each file's own permissions for nobody (the kernel, initrd and
// read-only disk are root's and world-readable, the writable disk is nobody's),
// not the directory's. By their paths, the same files are out of its reach.
func TestQemuInheritedFiles(t *testing.T) {
	testdata.RequireRoot(t)
	qemu := testdata.RequireTool(t, QemuBinary)
	guest := testGuest(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := func(name string) string {
		return writeFile(t, filepath.Join(dir, name), make([]byte, 1<<20))
	}
	cfg := &metadata.VMConfig{
		Kernel:    copyFile(t, guest.Kernel, filepath.Join(dir, "vmlinuz"), 0o644),
		Initrd:    copyFile(t, guest.Initrd, filepath.Join(dir, "initrd"), 0o644),
		Params:    guest.Params,
		MemoryMiB: guest.MemoryMiB,
		Disks:     []metadata.DiskImage{{Image: disk("ro.img")}, {Image: disk("rw.img"), Writable: true}},
	}
	if err := os.Chmod(cfg.Disks[1].Image, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg.Disks[1].Image, testdata.Nobody, testdata.Nobody); err != nil {
		t.Fatal(err)
	}
	o := Options{VMM: VMMQemu, Qemu: qemu}

	t.Run("by path", func(t *testing.T) {
		var stderr bytes.Buffer
		vm, err := Launch(context.Background(), cfg, o, RunOptions{Stderr: &stderr, Credential: nobody, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatalf("Launch: %v", err)
		}
		t.Cleanup(func() { vm.Stop(0) })
		var ee *ExitError
		if err := wait(t, vm); !errors.As(err, &ee) || !strings.Contains(stderr.String(), "Permission denied") {
			t.Errorf("Wait = %v, want an exit for want of permission; qemu stderr: %s", err, &stderr)
		}
	})

	t.Run("inherited", func(t *testing.T) {
		var files Inherited
		open := func(path string, flag int) string {
			f, err := os.OpenFile(path, flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return files.Path(f)
		}
		in := *cfg
		in.Kernel, in.Initrd = open(cfg.Kernel, os.O_RDONLY), open(cfg.Initrd, os.O_RDONLY)
		in.Disks = []metadata.DiskImage{
			{Image: open(cfg.Disks[0].Image, os.O_RDONLY)},
			{Image: open(cfg.Disks[1].Image, os.O_RDWR), Writable: true},
		}
		console := &lineWatcher{want: guestStarted, seen: make(chan struct{})}
		var stderr bytes.Buffer
		vm, err := Launch(context.Background(), &in, o, RunOptions{
			Stdout: console, Stderr: &stderr, Credential: nobody, Files: files, Logger: zaptest.NewLogger(t),
			Timeout: 5 * time.Minute, // a safety net for a hung guest
		})
		if err != nil {
			t.Fatalf("Launch: %v", err)
		}
		t.Cleanup(func() { vm.Stop(0) })
		exited := make(chan error, 1)
		go func() { exited <- vm.Wait(context.Background()) }()
		select {
		case <-console.seen:
		case err := <-exited:
			t.Fatalf("qemu ended before the guest ran: %v\nstderr: %s\nconsole: %s", err, &stderr, console)
		}
		if uid := status(t, vm.Pid())["Uid"]; uid != "65534 65534 65534 65534" {
			t.Errorf("qemu runs as %q, want nobody", uid)
		}
		// Its kernel and initrd are copies in memory, which it may reopen by
		// /proc/self/fd/N even under Landlock.
		links := map[string]bool{}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", vm.Pid()))
		for _, fd := range fds {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", vm.Pid(), fd.Name()))
			links[l] = true
		}
		if !links["/memfd:vmfs kernel (deleted)"] || !links["/memfd:vmfs initrd (deleted)"] {
			t.Errorf("qemu's descriptors: %v, want the copies of the kernel and initrd in memory", links)
		}
		if err := vm.Stop(time.Minute); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if err := <-exited; err != nil {
			t.Errorf("Wait after Stop = %v, want nil; qemu stderr: %s", err, &stderr)
		}
	})
}

// TestLaunchChecksInheritedFiles: Launch checks the file an inherited path
// names, not the launcher's own descriptor of that number, and names it by its
// own name.
func TestLaunchChecksInheritedFiles(t *testing.T) {
	bin, _ := argvRecorder(t)
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var files Inherited
	cfg := &metadata.VMConfig{Kernel: files.Path(d)}
	vm, err := Launch(context.Background(), cfg, Options{VMM: VMMQemu, Qemu: bin}, RunOptions{Files: files})
	if vm != nil {
		vm.Stop(0)
	}
	var nr *inputfile.NotRegularError
	if !errors.Is(err, ErrConfig) || !errors.As(err, &nr) || nr.Path != dir {
		t.Errorf("Launch with a directory as kernel = %v, want ErrConfig and a NotRegularError naming %s", err, dir)
	}
}

// TestLaunchRefusesLargeBootFiles: QEMU gets an inherited kernel as a copy in
// memory, and one larger than 1 GiB is a config error naming it, not a copy.
func TestLaunchRefusesLargeBootFiles(t *testing.T) {
	bin, _ := argvRecorder(t)
	big := filepath.Join(t.TempDir(), "vmlinuz")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(maxInMemory + 1); err != nil { // sparse
		t.Fatal(err)
	}
	var files Inherited
	cfg := &metadata.VMConfig{Kernel: files.Path(f)}
	vm, err := Launch(context.Background(), cfg, Options{VMM: VMMQemu, Qemu: bin}, RunOptions{Files: files})
	if vm != nil {
		vm.Stop(0)
	}
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), "larger than 1024 MiB") {
		t.Errorf("Launch with a kernel of 1 GiB + 1 byte = %v, want ErrConfig naming %s", err, big)
	}
}
