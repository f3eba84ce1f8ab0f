package qsd_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/internal/qsd"
	"vmfs/testdata"
)

// newQcow2 makes a QCOW2 image of size bytes with qemu-img, 0x11 at 1 MiB (64
// KiB), and opens it read-write.
func newQcow2(t *testing.T, size string) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.qcow2")
	out, err := exec.Command(testdata.RequireTool(t, "qemu-img"), "create", "-f", "qcow2", path, size).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	testdata.QemuIO(t, path, "qcow2", true, "write -P 0x11 1M 64k")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

func open(t *testing.T, f *os.File) *qsd.Image {
	t.Helper()
	testdata.RequireTool(t, "qemu-storage-daemon")
	im, err := qsd.Open(f, qsd.Options{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// The engine shows the virtual disk, and what it writes qemu-io reads back from a
// clean image.
func TestReadWriteAgainstQemuIO(t *testing.T) {
	path, f := newQcow2(t, "10M")
	im := open(t, f)
	if im.Size() != 10<<20 {
		t.Errorf("Size = %d, want %d", im.Size(), 10<<20)
	}
	got := make([]byte, 64<<10)
	if _, err := im.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x11}, len(got))) {
		t.Fatalf("ReadAt 1M: %v; want qemu-io's 0x11 bytes", err)
	}
	// 5 MiB in one call: more than one NBD request.
	data := bytes.Repeat([]byte{0x5a}, 5<<20)
	if _, err := im.WriteAt(data, 3<<20+512); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt([]byte{1}, 10<<20); err == nil {
		t.Error("WriteAt past the virtual disk succeeded")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(got, 0); err == nil {
		t.Error("ReadAt after Close succeeded")
	}
	testdata.QemuIO(t, path, "qcow2", false, "read -P 0x5a 3146240 5M", "read -P 0x11 1M 64k", "read -P 0 3M 512")
	testdata.QemuImgCheck(t, path)
}

// An acknowledged write survives the daemon's SIGKILL: it is in the file.
func TestWriteSurvivesKill(t *testing.T) {
	path, f := newQcow2(t, "10M")
	im := open(t, f)
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x77}, 64<<10), 5<<20); err != nil {
		t.Fatal(err)
	}
	pid := daemonPid(t)
	syscall.Kill(pid, syscall.SIGKILL)
	if !testdata.Eventually(t, 10*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }) {
		t.Fatal("daemon still alive")
	}
	if _, err := im.WriteAt([]byte{1}, 0); !errors.Is(err, qsd.ErrEngine) {
		t.Errorf("WriteAt with the daemon dead: %v, want ErrEngine", err)
	}
	im.Close()
	testdata.QemuIO(t, path, "qcow2", false, "read -P 0x77 5M 64k")
	testdata.QemuImgCheck(t, path)
}

// daemonPid finds the test's one qemu-storage-daemon.
func daemonPid(t *testing.T) int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range stats {
		b, _ := os.ReadFile(stat)
		// pid (comm) state ppid ...
		_, rest, _ := strings.Cut(string(b), ") ")
		if f := strings.Fields(rest); strings.Contains(string(b), "(qemu-storage-d") && len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(stat)))
			return pid
		}
	}
	t.Fatal("no qemu-storage-daemon child")
	return 0
}

// An image the daemon refuses fails Open with ErrEngine and what it said.
func TestRefusedImage(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "junk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("not a qcow2 image")
	_, err = qsd.Open(f, qsd.Options{})
	if !errors.Is(err, qsd.ErrEngine) || !strings.Contains(err.Error(), "qcow2") {
		t.Errorf("Open of junk: %v, want ErrEngine naming qcow2", err)
	}
}

// The daemon outlives the OS thread that started it (Pdeathsig follows a
// thread, not the process): a goroutine locked to its thread opens the image
// and ends, so that Go ends the thread; once the thread is gone the daemon
// still serves. The daemon dies with vmfs (TestStateKill in cmd/vmfs).
func TestThreadExit(t *testing.T) {
	path, f := newQcow2(t, "10M")
	testdata.RequireTool(t, "qemu-storage-daemon")
	type opened struct {
		im  *qsd.Image
		tid int
	}
	ch := make(chan opened)
	var o opened
	// Go keeps the main thread when its locked goroutine ends: then once more,
	// on another thread.
	for o.tid == 0 || o.tid == os.Getpid() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if unix.Gettid() == os.Getpid() {
				ch <- opened{tid: os.Getpid()}
				return
			}
			im, err := qsd.Open(f, qsd.Options{Timeout: 20 * time.Second})
			if err != nil {
				t.Error(err)
			}
			ch <- opened{im, unix.Gettid()}
		}()
		o = <-ch
	}
	if o.im == nil {
		t.FailNow()
	}
	defer o.im.Close()
	task := fmt.Sprintf("/proc/self/task/%d", o.tid)
	if !testdata.Eventually(t, 10*time.Second, func() bool { _, err := os.Stat(task); return err != nil }) {
		t.Fatal("the locked thread did not end")
	}
	if _, err := o.im.WriteAt(bytes.Repeat([]byte{0x66}, 4096), 0); err != nil {
		t.Fatalf("WriteAt once the thread that opened the image ended: %v", err)
	}
	if err := o.im.Close(); err != nil {
		t.Fatal(err)
	}
	testdata.QemuIO(t, path, "qcow2", false, "read -P 0x66 0 4k")
}
