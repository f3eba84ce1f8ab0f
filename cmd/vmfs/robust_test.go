package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/internal/proc"
	"vmfs/testdata"
)

// running is a vmfs process whose output lines the test can wait for.
type running struct {
	cmd   *exec.Cmd
	lines chan string // stdout and stderr, line by line, closed at exit
	out   strings.Builder
	mu    sync.Mutex
}

// start runs vmfs with VMFS_DEBUG (so that it logs its phases) and TMPDIR=tmp.
func start(t *testing.T, tmp string, args ...string) *running {
	t.Helper()
	return startProgram(t, tmp, vmfsBin, args...)
}

// startProgram runs name with args as start runs vmfs.
func startProgram(t *testing.T, tmp, name string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(name, args...), lines: make(chan string, 1024)}
	r.cmd.Env = append(os.Environ(), "VMFS_DEBUG=1", "TMPDIR="+tmp)
	pr, pw := io.Pipe()
	r.cmd.Stdout, r.cmd.Stderr = pw, pw
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			select {
			case r.lines <- sc.Text():
			default: // nobody waits for it
			}
		}
		close(r.lines)
	}()
	go func() { r.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	return r
}

// waitFor waits for a line containing s and returns it.
func (r *running) waitFor(t *testing.T, s string) string {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				t.Fatalf("vmfs exited before printing %q:\n%s", s, r.output())
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			t.Fatalf("no %q in 3 minutes:\n%s", s, r.output())
		}
	}
}

// exit waits up to d for vmfs to exit and returns its exit code; -1 when a
// signal killed it.
func (r *running) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	if !proc.WaitExit(r.cmd.Process.Pid, d) {
		t.Fatalf("vmfs still running after %v:\n%s", d, r.output())
	}
	for range r.lines { // the output is complete once the process is reaped
	}
	return r.cmd.ProcessState.ExitCode()
}

func (r *running) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// TestRunAppSignals: SIGTERM or SIGINT at each phase, sent once vmfs says it is
// there, leaves no VMM, no mount and no temporary mountpoint, and exits
// 128+signal.
func TestRunAppSignals(t *testing.T) {
	testdata.RequireFUSE(t)
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		phase string // a line vmfs prints on reaching the phase
	}{
		{"term while resolving", syscall.SIGTERM, "phase: resolving"},
		{"int during pre-flight", syscall.SIGINT, "phase: pre-flight"},
		{"term while mounting", syscall.SIGTERM, "phase: mounting"},
		{"int while booting", syscall.SIGINT, "vmm started"},
		{"term while running", syscall.SIGTERM, "vmfs-guest: checking"}, // the guest agent's first console line
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			r := start(t, tmp, guestArgs(t, testdata.APKPath())...)
			r.waitFor(t, tc.phase)
			r.cmd.Process.Signal(tc.sig)
			if code := r.exit(t, time.Minute); code != 128+int(tc.sig) {
				t.Errorf("exit %d, want %d:\n%s", code, 128+int(tc.sig), r.output())
			}
			if left := leftovers(t, tmp); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if out, _ := exec.Command("pgrep", "-f", tmp).Output(); len(out) > 0 {
				t.Errorf("processes still use %s: %s", tmp, out)
			}
		})
	}
}

// mountFixture mounts the sample payload at a fresh directory in the background
// and returns the mountpoint and the server's pid.
func mountFixture(t *testing.T) (string, int) {
	t.Helper()
	testdata.RequireFUSE(t)
	mnt := t.TempDir()
	if r := runVmfs(t, "", append([]string{"mount"}, fixtureArgs(mnt)...)...); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	m, err := vmfs.Status(context.Background(), mnt)
	if err != nil || m == nil {
		t.Fatalf("mount not in mountinfo: %v", err)
	}
	t.Cleanup(func() {
		syscall.Kill(m.Pid, syscall.SIGCONT)
		runVmfs(t, "", "unmount", mnt)
	})
	return mnt, m.Pid
}

// mountsAt lists the mounts at point, bottom first, as "fstype source".
func mountsAt(t *testing.T, point string) []string {
	t.Helper()
	ms, err := fusedisk.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Point == point {
			out = append(out, m.FSType+" "+m.Source)
		}
	}
	return out
}

// TestUnmountCovered: with a tmpfs on top of a vmfs mount, unmount refuses and
// leaves both; the server still stops on SIGTERM; once the tmpfs is gone,
// unmount recovers the vmfs mount.
func TestUnmountCovered(t *testing.T) {
	testdata.RequireRoot(t)
	mnt, pid := mountFixture(t)
	if err := unix.Mount("vmfs-test-cover", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	r := runVmfs(t, "", "unmount", mnt)
	if r.code != exitMount || !strings.Contains(r.stderr, "tmpfs") || !strings.Contains(r.stderr, "on top") {
		t.Errorf("unmount under a tmpfs: exit %d: %q", r.code, r.stderr)
	}
	if got := mountsAt(t, mnt); len(got) != 2 || got[1] != "tmpfs vmfs-test-cover" {
		t.Fatalf("mounts at %s after the refused unmount: %v, want the vmfs mount under the tmpfs", mnt, got)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if !proc.WaitExit(pid, 30*time.Second) {
		t.Fatal("a covered server ignores SIGTERM")
	}
	if got := mountsAt(t, mnt); len(got) != 2 {
		t.Fatalf("the stopping server removed a mount that is not its own: %v", got)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if r := runVmfs(t, "", "unmount", mnt); r.code != 0 {
		t.Fatalf("unmount once uncovered: exit %d: %s", r.code, r.stderr)
	}
	if got := mountsAt(t, mnt); len(got) != 0 {
		t.Errorf("left mounted: %v", got)
	}
}

// TestConcurrentMounts: eight mounts at once on one directory give one mount.
func TestConcurrentMounts(t *testing.T) {
	testdata.RequireFUSE(t)
	mnt := t.TempDir()
	t.Cleanup(func() {
		for len(mountsAt(t, mnt)) > 0 && runVmfs(t, "", "unmount", mnt).code == 0 {
		}
	})
	codes := make([]int, 8)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = runVmfs(t, "", append([]string{"mount"}, fixtureArgs(mnt)...)...).code
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		if c == 0 {
			ok++
		} else if c != exitMount {
			t.Errorf("a losing mount exited %d, want %d", c, exitMount)
		}
	}
	if got := mountsAt(t, mnt); ok != 1 || len(got) != 1 {
		t.Errorf("%d mounts succeeded, mounts at %s: %v; want one", ok, mnt, got)
	}
}

// TestStoppedServer: list and unmount never block on a stopped server, and
// unmount says what it did; the server exits once continued.
func TestStoppedServer(t *testing.T) {
	testdata.RequireRoot(t) // a stopped server's mount needs no server to go, as root
	mnt, pid := mountFixture(t)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	r := runWithin(t, 30*time.Second, "list")
	if r.code != 0 || !strings.Contains(r.stdout, mnt) || !strings.Contains(r.stdout, "stopped") {
		t.Errorf("list: exit %d: %q %q", r.code, r.stdout, r.stderr)
	}
	r = runWithin(t, 30*time.Second, "unmount", mnt)
	if r.code != 0 || !strings.Contains(r.stderr, "stopped") {
		t.Errorf("unmount: exit %d: %q", r.code, r.stderr)
	}
	if got := mountsAt(t, mnt); len(got) != 0 {
		t.Errorf("still mounted: %v", got)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	if !proc.WaitExit(pid, 30*time.Second) {
		t.Error("the server does not exit once continued")
	}
}

// runWithin runs vmfs and fails the test if it takes longer than d.
func runWithin(t *testing.T, d time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmfsBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("vmfs %v: still running after %v", args, d)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// waitsOnFUSE reports whether process pid, or a child of it, has a thread that
// waits for a FUSE server's answer.
func waitsOnFUSE(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		if wchan, _ := os.ReadFile(task + "/wchan"); string(wchan) == "request_wait_answer" {
			return true
		}
		children, _ := os.ReadFile(task + "/children")
		for _, c := range strings.Fields(string(children)) {
			if child, err := strconv.Atoi(c); err == nil && waitsOnFUSE(child) {
				return true
			}
		}
	}
	return false
}

// TestStuckInputSignals: an input that blocks (a file of a stopped FUSE server)
// holds no command: SIGTERM ends verify, inspect and mount promptly with 143, and
// mount stops the server it started.
func TestStuckInputSignals(t *testing.T) {
	for name, args := range map[string]func(apk string) []string{
		"verify": func(apk string) []string { return []string{"verify", apk, testdata.IdsigPath()} },
		"inspect": func(apk string) []string {
			return append([]string{"inspect"}, append(fixtureFlags(), apk, testdata.IdsigPath(), testdata.ConfigPath)...)
		},
		"mount": func(apk string) []string {
			return append([]string{"mount"}, append(fixtureFlags(), apk, testdata.IdsigPath(), testdata.ConfigPath, t.TempDir())...)
		},
	} {
		t.Run(name, func(t *testing.T) {
			// A stuck server of its own: a lookup left pending by another subtest's
			// killed process would hold this one's in the dentry cache instead.
			stuck, pid := mountFixture(t)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
			tmp := t.TempDir()
			r := start(t, tmp, args(filepath.Join(stuck, "partitions", "microdroid-apk"))...)
			// Sent once vmfs (or the server it started) waits for the stopped
			// server: the kernel shows that wait in /proc, with no event to wait on.
			if !testdata.Eventually(t, time.Minute, func() bool { return waitsOnFUSE(r.cmd.Process.Pid) }) {
				t.Fatalf("vmfs never waited on the stopped server:\n%s", r.output())
			}
			r.cmd.Process.Signal(syscall.SIGTERM)
			if code := r.exit(t, 30*time.Second); code != 128+int(syscall.SIGTERM) {
				t.Errorf("exit %d, want 143:\n%s", code, r.output())
			}
			if left := leftovers(t, tmp, stuck); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// TestForegroundSIGHUP: a foreground mount whose terminal goes (SIGHUP)
// unmounts and exits, leaving no dead mount.
func TestForegroundSIGHUP(t *testing.T) {
	testdata.RequireFUSE(t)
	mnt := t.TempDir()
	r := start(t, "", append([]string{"mount", "--foreground"}, fixtureArgs(mnt)...)...)
	r.waitFor(t, "serving until unmounted")
	r.cmd.Process.Signal(syscall.SIGHUP)
	if code := r.exit(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d:\n%s", code, r.output())
	}
	if got := mountsAt(t, mnt); len(got) != 0 {
		t.Errorf("left mounted: %v", got)
	}
}

// TestRunAppMissingKernel: a kernel the OS config names but that is not there is
// a bad input reported before anything mounts or boots.
func TestRunAppMissingKernel(t *testing.T) {
	testdata.RequireFUSE(t)
	dir, tmp := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "microdroid.json"), []byte(`{"kernel":"vmlinuz","params":"console=ttyS0"}`), 0o644)
	marker := filepath.Join(dir, "vmm-ran")
	qemu := filepath.Join(dir, "qemu")
	os.WriteFile(qemu, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	r := runVmfs(t, tmp, "run-app", "--vmm", "qemu", "--qemu", qemu, "--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", dir,
		testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath)
	if want := filepath.Join(dir, "vmlinuz"); r.code != exitInput || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("exit %d: %q; want exit %d naming %s", r.code, r.stderr, exitInput, want)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the VMM was started")
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestReadyReportBounded: a server error of any length reaches the command as
// one bounded line, and the server never blocks writing it.
func TestReadyReportBounded(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	huge := withCode(exitInput, errors.New(strings.Repeat("x", 1<<20)))
	go func() { writeReport(w, huge); w.Close() }()
	m := readReport(r)
	exited := make(chan error, 1)
	exited <- nil
	err = readyResult(m, exited)
	if len(m) > maxReport+64 || exitCodeFor(err) != exitInput || len(err.Error()) > maxReport+16 {
		t.Errorf("report of %d bytes, exit %d, error of %d bytes", len(m), exitCodeFor(err), len(err.Error()))
	}
}

// TestRunAppOutputFIFO: a --console or --log FIFO no one reads ends run-app at
// once, on its own and through a service, with one line naming it (exit 3) and
// nothing left behind; it used to wait in open(2) for a reader, deaf to SIGTERM.
// A FIFO whose reader stops reading holds no run either: SIGTERM ends it promptly.
func TestRunAppOutputFIFO(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	// An OS config whose kernel is there, and a "QEMU" that says it ran and then
	// writes to its console without end.
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("k"), 0o644)
	os.WriteFile(filepath.Join(dir, "microdroid.json"), []byte(`{"kernel":"vmlinuz","params":"console=ttyS0"}`), 0o644)
	marker := filepath.Join(dir, "vmm-ran")
	qemu := filepath.Join(dir, "qemu")
	os.WriteFile(qemu, []byte("#!/bin/sh\ntouch "+marker+"\nexec yes\n"), 0o755)
	standalone := []string{"run-app", "--vmm", "qemu", "--qemu", qemu, "--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", dir}
	payload := []string{testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath}
	fifo := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "out.fifo")
		if err := unix.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// ended waits for r to end on its own, else SIGTERMs it, and returns its exit code.
	ended := func(t *testing.T, r *running) int {
		t.Helper()
		pid := r.cmd.Process.Pid
		if !proc.WaitExit(pid, 20*time.Second) {
			t.Error("still running after 20 s: blocked on the FIFO")
			r.cmd.Process.Signal(syscall.SIGTERM)
			if !proc.WaitExit(pid, 20*time.Second) {
				t.Error("and still running 20 s after SIGTERM")
				r.cmd.Process.Kill()
			}
		}
		return r.exit(t, time.Minute)
	}

	s := startServe(t)
	for _, c := range []struct {
		name    string
		service bool
		flags   []string // the FIFO follows
	}{
		{"console", false, []string{"--console"}},
		{"log", false, []string{"--console", "/dev/null", "--log"}},
		{"console through a service", true, []string{"--console"}},
		{"log through a service", true, []string{"--console", "/dev/null", "--log"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(marker)
			out, tmp := fifo(t), t.TempDir()
			args := append(append([]string{}, standalone...), c.flags...)
			if c.service {
				args = append([]string{"run-app", "--socket", s.sock}, c.flags...)
			}
			args = append(append(args, out), payload...)
			r := start(t, tmp, args...)
			if code := ended(t, r); code != exitInput {
				t.Errorf("exit %d, want %d", code, exitInput)
			}
			lines := strings.Split(strings.TrimSpace(r.output()), "\n")
			want := strings.TrimPrefix(c.flags[len(c.flags)-1], "--") // "vmm log" standalone, "log" through a service
			if last := lines[len(lines)-1]; strings.Count(r.output(), "vmfs: ") != 1 || !strings.Contains(last, want+" "+out+": a FIFO with no reader") {
				t.Errorf("want one error line saying %q, got:\n%s", want+" "+out+": a FIFO with no reader", r.output())
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the VMM was started")
			}
			if left := leftovers(t, tmp, s.mnt); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if c.service {
				if rows := s.list(); len(rows) != 0 {
					t.Errorf("payloads left in the service: %+v", rows)
				}
			}
		})
	}

	t.Run("console with a reader that stopped reading", func(t *testing.T) {
		out, tmp := fifo(t), t.TempDir()
		reader, err := os.OpenFile(out, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		r := start(t, tmp, append(append(append([]string{}, standalone...), "--console", out), payload...)...)
		r.waitFor(t, "vm started")
		// Once the FIFO holds all it can, vmfs waits to write the console.
		size, err := unix.FcntlInt(reader.Fd(), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !testdata.Eventually(t, time.Minute, func() bool {
			n, err := unix.IoctlGetInt(int(reader.Fd()), unix.TIOCINQ)
			return err == nil && n >= size
		}) {
			t.Fatal("the FIFO never filled")
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.exit(t, 30*time.Second); code != 128+int(syscall.SIGTERM) {
			t.Errorf("exit %d, want 143:\n%s", code, r.output())
		}
		if left := leftovers(t, tmp, s.mnt); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
}
