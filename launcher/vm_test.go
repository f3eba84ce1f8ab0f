package launcher

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"vmfs/testdata"

	"go.uber.org/zap/zaptest"

	"vmfs/metadata"
)

// groupGone reports whether no process is left in process group pgid.
func groupGone(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

func startVM(t *testing.T, ctx context.Context, argv0 string, args []string, o RunOptions) *VM {
	t.Helper()
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	vm, err := Start(ctx, argv0, args, o)
	if err != nil {
		t.Fatalf("Start %s: %v", argv0, err)
	}
	// A failing test must not leave a VMM behind.
	t.Cleanup(func() { vm.Stop(0) })
	return vm
}

// startShell runs script, which must print "ready" once set up, and returns then.
func startShell(t *testing.T, ctx context.Context, script string, o RunOptions) (*VM, string) {
	t.Helper()
	sh := testdata.RequireTool(t, "sh")
	r, w := io.Pipe()
	o.Stdout = w
	vm := startVM(t, ctx, sh, []string{"-c", script}, o)
	if line, err := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		t.Fatalf("read from vmm: %q, %v; want ready", line, err)
	}
	go io.Copy(io.Discard, r)
	return vm, sh
}

// wait is vm.Wait bounded by the test's deadline, as a safety net, not an assertion.
func wait(t *testing.T, vm *VM) error {
	t.Helper()
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-5*time.Second))
		defer cancel()
	}
	err := vm.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("vmm %d still running near the test deadline", vm.Pid())
	}
	return err
}

func TestExitStatusPassThrough(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	for _, tc := range []struct {
		name   string
		script string
		want   error
	}{
		{"exit 0", "exit 0", nil},
		{"exit 3", "exit 3", &ExitError{Path: sh, Code: 3}},
		{"killed", "kill -KILL $$", &ExitError{Path: sh, Code: -1, Signal: syscall.SIGKILL}},
		{"terminated", "kill -TERM $$", &ExitError{Path: sh, Code: -1, Signal: syscall.SIGTERM}},
		// The VMM's leftovers die with it; its own status still comes through.
		{"leaves a child", "sleep 1000 & exit 5", &ExitError{Path: sh, Code: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := startVM(t, context.Background(), sh, []string{"-c", tc.script}, RunOptions{})
			err := wait(t, vm)
			if !reflect.DeepEqual(err, tc.want) {
				t.Errorf("Wait = %#v (%v), want %#v", err, err, tc.want)
			}
			if !groupGone(vm.Pid()) {
				t.Errorf("process group %d still has members after Wait", vm.Pid())
			}
		})
	}
}

func TestOutputStreams(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	var stdout, stderr bytes.Buffer
	vm := startVM(t, context.Background(), sh, []string{"-c", "echo console; echo diagnostics >&2; read x || echo stdin-eof"},
		RunOptions{Stdout: &stdout, Stderr: &stderr})
	if err := wait(t, vm); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if got, want := stdout.String(), "console\nstdin-eof\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := stderr.String(), "diagnostics\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

func TestWaitConcurrent(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	vm := startVM(t, context.Background(), sh, []string{"-c", "exec sleep 1000"}, RunOptions{})

	// A done ctx abandons the wait and leaves the VMM alone.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := vm.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait(cancelled ctx) = %v, want context.Canceled", err)
	}
	if groupGone(vm.Pid()) {
		t.Fatal("an abandoned Wait stopped the vmm")
	}

	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = vm.Wait(context.Background()) })
	}
	if err := vm.Stop(time.Minute); err != nil { // sh dies of SIGTERM
		t.Fatalf("Stop: %v", err)
	}
	wg.Wait()
	want := &ExitError{Path: sh, Code: -1, Signal: syscall.SIGTERM}
	for i, err := range errs {
		if !reflect.DeepEqual(err, want) {
			t.Errorf("Wait #%d = %v, want %v", i, err, want)
		}
		if err != errs[0] {
			t.Errorf("Wait #%d returned a different error value than #0", i)
		}
	}
	if err := vm.Stop(time.Minute); err != nil {
		t.Errorf("Stop after exit: %v", err)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	// The shell and its child both ignore SIGTERM; only SIGKILL ends them.
	vm, sh := startShell(t, context.Background(), `trap "" TERM; sleep 1000 & echo ready; wait`, RunOptions{})
	if err := vm.Stop(100 * time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !groupGone(vm.Pid()) {
		t.Errorf("process group %d still has members after Stop", vm.Pid())
	}
	want := &ExitError{Path: sh, Code: -1, Signal: syscall.SIGKILL}
	if err := wait(t, vm); !reflect.DeepEqual(err, want) {
		t.Errorf("Wait = %v, want %v", err, want)
	}
}

func TestStartErrors(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	missing := filepath.Join(t.TempDir(), "no-such-vmm")
	if vm, err := Start(context.Background(), missing, nil, RunOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start(%s) = %v, %v; want fs.ErrNotExist", missing, vm, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if vm, err := Start(ctx, sh, []string{"-c", "exit 0"}, RunOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Start(cancelled ctx) = %v, %v; want context.Canceled", vm, err)
	}
}

// idleQemu starts QEMU, as QemuArgs has it, on firmware that prints "R" to the
// serial console and halts forever, and returns once the guest has printed: by
// then QEMU has set up its signal handlers.
func idleQemu(t *testing.T, ctx context.Context, o RunOptions) *VM {
	t.Helper()
	qemu := testdata.RequireTool(t, QemuBinary)
	// mov dx, 0x3f8; mov al, 'R'; out dx, al
	cfg := &metadata.VMConfig{Bootloader: tinyBIOS(t, []byte{0xba, 0xf8, 0x03, 0xb0, 'R', 0xee})}
	args, err := QemuArgs(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	o.Stdout = w
	vm := startVM(t, ctx, qemu, args, o)
	if b, err := bufio.NewReader(r).ReadByte(); b != 'R' {
		t.Fatalf("guest console said %q, %v; want R", b, err)
	}
	go io.Copy(io.Discard, r)
	return vm
}

func TestQemuStop(t *testing.T) {
	var stderr bytes.Buffer
	vm := idleQemu(t, context.Background(), RunOptions{Stderr: &stderr})
	if err := vm.Stop(time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !groupGone(vm.Pid()) {
		t.Errorf("process group %d still has members after Stop", vm.Pid())
	}
	// QEMU shuts down cleanly on SIGTERM and exits 0.
	if err := wait(t, vm); err != nil {
		t.Errorf("Wait after Stop = %v, want nil; qemu stderr: %s", err, &stderr)
	}
	if !strings.Contains(stderr.String(), "terminating on signal 15") {
		t.Errorf("qemu stderr %q does not say it got SIGTERM", &stderr)
	}
}

func TestQemuTimeout(t *testing.T) {
	vm := idleQemu(t, context.Background(), RunOptions{Timeout: 200 * time.Millisecond})
	if err := wait(t, vm); !errors.Is(err, ErrTimeout) {
		t.Errorf("Wait = %v, want ErrTimeout", err)
	}
	if !groupGone(vm.Pid()) {
		t.Errorf("process group %d still has members after the timeout", vm.Pid())
	}
}

func TestContextCancelStopsGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The shell leaves a second member in the group.
	vm, _ := startShell(t, ctx, `sleep 1000 & echo ready; wait`, RunOptions{})
	cancel()
	if err := wait(t, vm); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	if !groupGone(vm.Pid()) {
		t.Errorf("process group %d still has members after cancel", vm.Pid())
	}
}

// tinyBIOS writes a 64 KiB firmware image whose reset vector (its last 16 bytes,
// where an x86 CPU starts in real mode) runs code, then halts.
func tinyBIOS(t *testing.T, code []byte) string {
	t.Helper()
	rom := make([]byte, 64<<10)
	vector := append(code, 0xf4, 0xeb, 0xfd) // hlt; jmp back to hlt
	copy(rom[len(rom)-16:], vector)
	return writeFile(t, filepath.Join(t.TempDir(), "bios.bin"), rom)
}

func TestQemuGuestExitStatus(t *testing.T) {
	qemu := testdata.RequireTool(t, QemuBinary)
	for _, tc := range []struct {
		name string
		code []byte
		want error
	}{
		// out 0xf4, 1: isa-debug-exit makes QEMU exit with (1<<1)|1.
		{"debug exit", []byte{0xb0, 0x01, 0xe6, 0xf4}, &ExitError{Path: qemu, Code: 3}},
		// out 0xcf9, 6: a hard reset, which -no-reboot turns into a clean exit.
		{"reset", []byte{0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &metadata.VMConfig{Bootloader: tinyBIOS(t, tc.code)}
			args, err := QemuArgs(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
			var stderr bytes.Buffer
			vm := startVM(t, context.Background(), qemu, args, RunOptions{Stderr: &stderr})
			if err := wait(t, vm); !reflect.DeepEqual(err, tc.want) {
				t.Errorf("Wait = %v, want %v; qemu stderr: %s", err, tc.want, &stderr)
			}
		})
	}
}
