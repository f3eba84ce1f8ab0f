package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrTimeout is wrapped by Wait's error when RunOptions.Timeout passed and the
// VMM was stopped because of it.
var ErrTimeout = errors.New("vm timed out")

// DefaultStopGrace is how long the VMM gets between SIGTERM and SIGKILL when vmfs
// stops it because the Start context is done or the timeout passed.
const DefaultStopGrace = 5 * time.Second

// groupDrainLimit bounds the wait for killed group members to be reaped.
const groupDrainLimit = 5 * time.Second

// RunOptions say where a VMM's output goes and how long it may run.
//
// Stdout and Stderr are written from goroutines of the launcher's, which read
// pipes the VMM writes; the VMM never holds the writers themselves. A Write that
// blocks stalls the VMM's output, so wrap a destination that may block (a
// client's file) in an outlet (vmfs/internal/outlet). Whatever a writer does,
// Wait and Stop return once the VMM's group is gone, at most outputDrainLimit
// later. Stdout and Stderr are written concurrently.
type RunOptions struct {
	Stdout    io.Writer     // VMM stdout (the console when Options.Console is ""); nil discards
	Stderr    io.Writer     // VMM stderr, its own messages; nil discards
	Logger    *zap.Logger   // nil means zap.NewNop()
	Timeout   time.Duration // stop the VMM after this long and report ErrTimeout; 0 = never
	StopGrace time.Duration // SIGTERM to SIGKILL delay for those stops; 0 = DefaultStopGrace
	// Credential runs the VMM as that user, group and supplementary groups
	// (none when Groups is empty), with no capabilities; nil runs it as this
	// process. Another user than this process's needs CAP_SETUID and CAP_SETGID.
	Credential *syscall.Credential
	// Files are the files the VMM inherits; its config names them by Files.Path.
	Files Inherited
}

// ExitError passes through the status of a VMM that did not exit with 0.
type ExitError struct {
	Path   string         // the VMM binary as given to Start
	Code   int            // exit status, or -1 when a signal killed the VMM
	Signal syscall.Signal // the signal that killed the VMM, or 0
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("vmm %s killed by signal %d (%v)", e.Path, int(e.Signal), e.Signal)
	}
	return fmt.Sprintf("vmm %s exited with status %d", e.Path, e.Code)
}

// VM is a running VMM process and, once it has exited, its result.
type VM struct {
	path     string
	cmd      *exec.Cmd
	out      *outputs
	pid      int // also the process group ID
	cid      int
	log      *zap.Logger
	grace    time.Duration
	cleanups []func() error // run once, by reap, after the VMM is reaped

	done chan struct{} // closed once err is final and cleanup has run
	err  error

	// mu guards exited and cause. Group signals are sent while holding it and
	// only before exited is set, so they never reach a recycled group ID: until
	// reap collects the VMM, its pid (the group ID) stays reserved.
	mu     sync.Mutex
	exited bool  // the VMM has exited; it may still be an unreaped zombie
	cause  error // why vmfs stopped the VMM itself; Wait reports it instead of the status
}

// Start runs argv0 with args in a new process group and returns at once.
//
// ctx bounds the VM's life: when it is done, the VMM is stopped as by
// Stop(o.StopGrace) and Wait reports an error wrapping ctx.Err(). A ctx that is
// already done starts nothing. The VMM's stdin is /dev/null: runs are
// non-interactive, and a VMM outside the terminal's foreground group must not
// read the terminal. Pdeathsig SIGKILL ends the VMM if vmfs dies first (Linux
// ties it to the OS thread that started the VMM, so do not call Start from a
// goroutine that locks its thread and exits while the VM runs).
func Start(ctx context.Context, argv0 string, args []string, o RunOptions) (*VM, error) {
	return start(ctx, argv0, args, o, 0, nil)
}

// start is Start plus a CID to report and cleanups to run once after the VMM
// has exited (or at once, if it cannot start).
func start(ctx context.Context, argv0 string, args []string, o RunOptions, cid int, cleanups []func() error) (*VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, errors.Join(fmt.Errorf("start vmm %s: %w", argv0, err), runAll(cleanups))
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	grace := o.StopGrace
	if grace == 0 {
		grace = DefaultStopGrace
	}
	cmd := exec.Command(argv0, args...)
	out := &outputs{}
	var err error
	if cmd.Stdout, err = out.pipe("stdout", o.Stdout); err == nil {
		cmd.Stderr, err = out.pipe("stderr", o.Stderr)
	}
	cmd.ExtraFiles = o.Files.files
	// The kernel clears a parent-death signal when the credentials change; Go
	// sets it after switching them, so it holds for a VMM of another user too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: o.Credential}
	if err == nil {
		err = cmd.Start()
	}
	out.closeChild()
	if err != nil {
		out.closeReaders()
		return nil, errors.Join(fmt.Errorf("start vmm: %w", err), runAll(cleanups))
	}
	vm := &VM{
		path:     argv0,
		cmd:      cmd,
		out:      out,
		pid:      cmd.Process.Pid,
		cid:      cid,
		log:      log.With(zap.Int("vmm_pid", cmd.Process.Pid)),
		grace:    grace,
		cleanups: cleanups,
		done:     make(chan struct{}),
	}
	vm.log.Info("vmm started", zap.String("path", argv0), zap.Strings("args", args))
	out.copy(vm.log)
	go vm.reap()
	go vm.watch(ctx, o.Timeout)
	return vm, nil
}

// Pid returns the VMM's process ID, which is also its process group ID.
func (vm *VM) Pid() int { return vm.pid }

// CID returns the guest's vsock CID, or 0 when the VMM was given none.
func (vm *VM) CID() int { return vm.cid }

// Wait blocks until the VMM has exited and cleanup has run, or until ctx is done;
// a done ctx only abandons this wait (returning ctx.Err()) and leaves the VMM
// running. Wait is safe to call from many goroutines and more than once; every
// call reports the same result: nil for exit status 0, *ExitError for any other
// status, or, when vmfs stopped the VMM itself, an error wrapping ErrTimeout or
// the Start context's error.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
		return vm.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop sends SIGTERM to the VMM's process group, SIGKILL after grace, and
// returns once the VMM has exited and cleanup has run; Wait then reports the
// VMM's status as it is. It takes no context: a stop abandoned half way would
// leave the VMM running. Safe to call concurrently, and after the VMM exited.
func (vm *VM) Stop(grace time.Duration) error {
	return vm.stop(nil, grace)
}

// stop is Stop, recording cause for Wait if it is the first to signal.
func (vm *VM) stop(cause error, grace time.Duration) error {
	if err := vm.signal(syscall.SIGTERM, cause); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-vm.done:
		return nil
	case <-t.C:
	}
	vm.log.Warn("vmm still running after SIGTERM; sending SIGKILL", zap.Duration("grace", grace))
	if err := vm.signal(syscall.SIGKILL, nil); err != nil {
		return err
	}
	<-vm.done
	return nil
}

// signal sends sig to the VMM's process group unless the VMM has exited.
func (vm *VM) signal(sig syscall.Signal, cause error) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.exited {
		return nil
	}
	if vm.cause == nil {
		vm.cause = cause
	}
	if err := unix.Kill(-vm.pid, sig); err != nil {
		return fmt.Errorf("stop vmm %s: send %v to group %d: %w", vm.path, sig, vm.pid, err)
	}
	return nil
}

// watch stops the VMM when ctx is done or the timeout passes.
func (vm *VM) watch(ctx context.Context, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var cause error
	select {
	case <-vm.done:
		return
	case <-ctx.Done():
		cause = fmt.Errorf("vmm %s stopped: %w", vm.path, ctx.Err())
	case <-expired:
		cause = fmt.Errorf("vmm %s: %w after %v", vm.path, ErrTimeout, timeout)
	}
	vm.log.Info("stopping vmm", zap.NamedError("cause", cause))
	if err := vm.stop(cause, vm.grace); err != nil {
		vm.log.Error("stop vmm", zap.Error(err))
	}
}

// reap waits for the VMM to exit, kills what is left of its group, collects
// its status, runs cleanup, and publishes the result. It runs once per VM.
func (vm *VM) reap() {
	// Wait without reaping, so the group ID stays reserved while we kill the group.
	var info unix.Siginfo
	var err error
	for {
		err = unix.Waitid(unix.P_PID, vm.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		vm.log.Warn("waitid on vmm", zap.Error(err))
	}
	vm.mu.Lock()
	vm.exited = true
	// Helpers and children the VMM left behind go with it.
	if err := unix.Kill(-vm.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		vm.log.Warn("kill what is left of the vmm's group", zap.Error(err))
	}
	cause := vm.cause
	vm.mu.Unlock()

	status := vm.status(vm.cmd.Wait())
	vm.awaitEmptyGroup()
	vm.out.drain(vm.log)
	vm.log.Info("vmm exited", zap.NamedError("status", status))
	result := status
	if cause != nil {
		result = cause
	}
	// Join only on a cleanup failure, so an *ExitError reaches Wait's callers as is.
	if err := runAll(vm.cleanups); err != nil {
		result = errors.Join(result, err)
	}
	vm.err = result
	close(vm.done)
}

// awaitEmptyGroup waits, within groupDrainLimit, until the VMM's process group is
// gone, so that no killed helper still holds VM files (disk images on a FUSE
// mount) when Wait returns. A killed member leaves the group only once its new
// parent, usually init, reaps it; until then its group ID is not reused.
func (vm *VM) awaitEmptyGroup() {
	deadline := time.Now().Add(groupDrainLimit)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if errors.Is(unix.Kill(-vm.pid, 0), unix.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			vm.log.Warn("vmm's process group not empty after kill", zap.Duration("waited", groupDrainLimit))
			return
		}
		time.Sleep(delay)
	}
}

// status turns cmd.Wait's error into Wait's: nil, *ExitError, or a wait failure.
func (vm *VM) status(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err != nil {
			return fmt.Errorf("wait for vmm %s: %w", vm.path, err)
		}
		return nil
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return fmt.Errorf("wait for vmm %s: %w", vm.path, err)
	case ws.Signaled():
		return &ExitError{Path: vm.path, Code: -1, Signal: ws.Signal()}
	}
	return &ExitError{Path: vm.path, Code: ws.ExitStatus()}
}

// runAll runs every cleanup and joins their errors.
func runAll(cleanups []func() error) error {
	var errs []error
	for _, c := range cleanups {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
