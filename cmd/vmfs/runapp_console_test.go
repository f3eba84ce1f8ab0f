package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/testdata"
)

// fullConsole makes a FIFO for --console in dir, full to the brim, whose
// reader the test holds and never reads: every write to it blocks. Anyone may
// open it.
func fullConsole(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "console")
	if err := unix.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	r, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(r) })
	w, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(w)
	// Pages first, then bytes into the last one's slack.
	for _, chunk := range [][]byte{make([]byte, 4096), {0}} {
		for {
			if _, err := unix.Write(w, chunk); err == unix.EAGAIN {
				break
			} else if err != nil {
				t.Fatalf("fill the console FIFO: %v", err)
			}
		}
	}
	return path
}

// TestRunAppConsoleNobodyReads: a --console FIFO that is full and never read
// neither stalls the VM nor hides its verdict: the run ends on its own with the
// guest's passing verdict, or on SIGTERM, and leaves nothing behind. (The
// console used to be copied to it by a goroutine the VMM's reaping waited for:
// the run hung for good, SIGTERM included.)
func TestRunAppConsoleNobodyReads(t *testing.T) {
	testdata.RequireFUSE(t)
	t.Run("ends on its own", func(t *testing.T) {
		tmp := t.TempDir()
		r := start(t, tmp, guestArgs(t, testdata.APKPath(), "--require-verdict", "--console", fullConsole(t, t.TempDir()))...)
		if code := r.exit(t, 3*time.Minute); code != 0 {
			t.Errorf("exit %d, want 0 (the verdict passes the watcher whatever the console does):\n%s", code, r.output())
		}
		if left := leftovers(t, tmp); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		// QEMU, once its console output is in its stdout pipe and so bound for
		// the FIFO before the pipe can end, whatever becomes of the VMM.
		qemu := testdata.RequireTool(t, "qemu-system-x86_64")
		wrapper := filepath.Join(t.TempDir(), "qemu")
		script := "#!/bin/sh\necho console output\necho console written >&2\nexec " + qemu + ` "$@"` + "\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := t.TempDir()
		r := start(t, tmp, guestArgs(t, testdata.APKPath(), "--qemu", wrapper, "--console", fullConsole(t, t.TempDir()))...)
		r.waitFor(t, "console written")
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.exit(t, time.Minute); code != 128+int(syscall.SIGTERM) {
			t.Errorf("exit %d, want %d:\n%s", code, 128+int(syscall.SIGTERM), r.output())
		}
		if left := leftovers(t, tmp); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
}
