package vmfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"vmfs/internal/inputfile"
	"vmfs/internal/outlet"
	"vmfs/internal/outputfile"
	"vmfs/launcher"
	"vmfs/metadata"
)

// RunOptions configure RunApp, in `vm run-app`'s idiom.
type RunOptions struct {
	Spec  Spec   // the payload, mounted on a private mountpoint for the run
	Mount string // or an existing mount to run from (Spec is then unused)
	// SkipVerify boots an APK that does not match its idsig; RequireVerdict fails
	// unless the guest prints a passing verdict line (the vmfs test guest does).
	SkipVerify, RequireVerdict bool
	NoPassthrough              bool // the private mount's (see MountOptions)
	VM                         launcher.Options
	Console                    string        // the guest console goes to this file; "" means Stdout
	Stdout, Stderr             io.Writer     // nil discards; Stderr gets the VMM's own messages
	Timeout                    time.Duration // stop the VM after this long; 0: never
	DryRun                     io.Writer     // print the VMM command line here instead of booting
	Logger                     *zap.Logger
	// Credential runs the VMM as another user, with no capabilities (nil: as
	// this process); Files are the files it inherits, which the VM config names
	// by Files.Path. A service uses both to run a client's VM with the
	// client's rights (see launcher.RunOptions).
	Credential *syscall.Credential
	Files      launcher.Inherited
}

// RunApp boots an app payload as `vm run-app` does: it resolves and verifies the
// payload (the APK against its idsig, before anything boots), mounts it on a
// private mountpoint, launches the VMM, streams the console while watching for the
// guest's verdict, and then unmounts and removes the mountpoint whatever happened.
// Every cleanup error is returned along with the run's own. A VMM that exits
// non-zero gives a *launcher.ExitError; one that cannot start, an ErrVMM error;
// when ctx is done, the VM is stopped and ctx's cause returned.
//
// Missing state files (Spec.Instance, Spec.Storage, Spec.InstanceIDFile) are made
// first, as `vm run-app` makes them (PrepareState), and removed again when the VM
// never starts (AVF leaves them): a run that fails leaves nothing behind. Each state
// file is locked for the run (see Mount): a second run on it is refused.
func RunApp(ctx context.Context, o RunOptions) (err error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	started := false
	if o.Mount == "" {
		created, err := PrepareState(o.Spec)
		if err != nil {
			return err
		}
		defer func() {
			if !started {
				created.Remove()
			}
		}()
	}
	t, err := target(ctx, o)
	if err != nil {
		return err
	}
	t.started = &started
	if !o.SkipVerify && o.DryRun == nil {
		o.Logger.Debug("phase: pre-flight: verifying the APK against its idsig")
		if err := t.verify(ctx); err != nil {
			if context.Cause(ctx) == nil {
				err = fmt.Errorf("pre-flight: %w (--skip-verify boots anyway)", err)
			}
			return err
		}
	}
	if t.payload != nil {
		return runPrivately(ctx, t, o)
	}
	return launchOrPrint(ctx, t, o)
}

// runPrivately mounts the payload on a private mountpoint for the run, runs, and
// unmounts and removes the mountpoint, joining every cleanup error to the result.
// err is the named result, never redeclared in an inner block: the deferred joins
// must reach it.
func runPrivately(ctx context.Context, t *runTarget, o RunOptions) (err error) {
	o.Logger.Debug("phase: mounting")
	dir, err := os.MkdirTemp("", "vmfs-run-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, removeMountpoint(dir)) }()
	srv, err := Mount(ctx, t.payload, dir, MountOptions{Kind: "run-app", NoPassthrough: o.NoPassthrough, Logger: o.Logger})
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, srv.Unmount())
	}()
	t.vm, t.disks = srv.VMConfig, srv.Manifest
	return launchOrPrint(ctx, t, o)
}

// launchOrPrint boots the VM, or prints its command line for a dry run.
func launchOrPrint(ctx context.Context, t *runTarget, o RunOptions) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	o.VM.FlatImages, o.VM.WritableImages, o.VM.Extents = t.disks.FlatImages(), t.disks.WritableImages(), t.disks.ExtentImages()
	vm := *t.vm
	if t.profile != metadata.Android12.String() {
		// Android 13 to 15 write the same metadata for a config path; the test
		// guest learns which one it checks from this (Microdroid ignores it).
		vm.Params = strings.TrimSpace(vm.Params + " vmfs.profile=" + t.profile)
	}
	if o.DryRun != nil {
		return PrintCommand(o.DryRun, &vm, o.VM)
	}
	return boot(ctx, &vm, o, t.started)
}

// runTarget is what a run boots: the VM config (once mounted), the APK and idsig
// to verify, the payload to mount (nil when running from an existing mount) and
// the manifest of the mount that serves its disks.
type runTarget struct {
	vm         *metadata.VMConfig
	profile    string
	apk, idsig string
	payload    *Payload
	disks      *Manifest
	started    *bool // set once the VMM runs
}

// verify checks the APK against its idsig: the payload's own files, or those a
// mount's manifest names.
func (t *runTarget) verify(ctx context.Context) error {
	if t.payload != nil {
		return t.payload.Verify(ctx)
	}
	return Verify(ctx, t.apk, t.idsig)
}

func target(ctx context.Context, o RunOptions) (*runTarget, error) {
	if o.Mount != "" {
		m, err := Open(ctx, o.Mount)
		if err != nil {
			return nil, err
		}
		vm, err := metadata.LoadVMConfig(m.VMConfig)
		if err != nil {
			return nil, WithKind(ErrMount, err)
		}
		t := &runTarget{vm: vm, profile: m.Profile, apk: m.Inputs.APK, idsig: m.Inputs.Idsig, disks: m}
		return t, WithKind(ErrInput, launcher.CheckBootFiles(vm))
	}
	o.Logger.Debug("phase: resolving the payload")
	p, err := Resolve(ctx, o.Spec)
	if err != nil {
		return nil, err
	}
	if err := launcher.CheckBootFiles(p.OSConfig); err != nil {
		return nil, WithKind(ErrInput, fmt.Errorf("vm config %s: %w", p.OSConfigPath, err))
	}
	return &runTarget{profile: p.Profile.String(), apk: p.APK, idsig: p.Idsig, payload: p}, nil
}

// Verify checks an APK against its v4 idsig, reading the whole APK. A file that
// cannot be read as an input gives an ErrInput error; a mismatch, another error;
// when ctx is done first, ctx's cause.
func Verify(ctx context.Context, apk, idsig string) error {
	return verifying(ctx, func() error { return metadata.VerifyFiles(apk, idsig) })
}

// CreateIdsig writes the v4 idsig of apk to idsig, as `vm create-idsig` does: the
// merkle tree and root hash of the APK, no signing info. A file that cannot be
// read or written is an ErrInput error.
func CreateIdsig(ctx context.Context, apk, idsig string) error {
	return interruptible(ctx, func() error { return WithKind(ErrInput, metadata.CreateIdsig(apk, idsig)) })
}

// boot runs the VM to its end, streaming the console and watching for a verdict;
// started is set once the VMM runs.
func boot(ctx context.Context, vm *metadata.VMConfig, o RunOptions, started *bool) error {
	console := o.Stdout
	if o.Console != "" {
		cf, err := outputfile.Open(o.Console)
		if err != nil {
			return WithKind(ErrInput, fmt.Errorf("console %w", err))
		}
		defer cf.Close()
		// A console whose reader stopped reading (a full FIFO) must not hold the
		// VMM's output, and with it the run, once the run is being stopped.
		defer context.AfterFunc(ctx, func() { cf.SetWriteDeadline(time.Now()) })()
		console = cf
	}
	m, err := Start(ctx, vm, o, console)
	if err != nil {
		return err
	}
	*started = true
	return m.Outcome(ctx, o.RequireVerdict)
}

// Machine is a VM started by Start: its VMM, and the watcher of its guest's
// verdict on the console.
type Machine struct {
	VM  *launcher.VM
	out *vmOutput
}

// Start starts the VM vm describes under ctx (see launcher.Start), its console
// going to console (nil: nowhere) and to a watcher of the guest's verdict;
// o.Stdout, o.Console, o.Spec and o.Mount are not used. crosvm first takes the
// writer lock of each state file a mount's composite names read-write
// (lockForCrosvm): one open through a view of the mount is an ErrInput error. A VMM that cannot start
// is an ErrVMM error; when ctx is done first, nothing starts and ctx's cause is
// returned.
func Start(ctx context.Context, vm *metadata.VMConfig, o RunOptions, console io.Writer) (*Machine, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	out := &vmOutput{}
	stdout := io.Writer(&out.watch)
	if console != nil {
		stdout = io.MultiWriter(&out.watch, out.add(console, "console", o.Logger))
	}
	var stderr io.Writer
	if o.Stderr != nil {
		stderr = out.add(o.Stderr, "vmm stderr", o.Logger)
	}
	if vmm, _, err := launcher.Resolve(o.VM); err == nil && vmm == launcher.VMMCrosvm {
		locked, err := lockForCrosvm(ctx, vm, o.VM.FlatImages, &o.Files)
		if err != nil {
			out.close()
			return nil, err
		}
		defer inputfile.CloseAll(locked...) // crosvm has its own copies
	}
	machine, err := launcher.Launch(ctx, vm, o.VM, launcher.RunOptions{
		Stdout:     stdout,
		Stderr:     stderr,
		Logger:     o.Logger,
		Timeout:    o.Timeout,
		Credential: o.Credential,
		Files:      o.Files,
	})
	if err != nil {
		out.close()
		if cause := context.Cause(ctx); cause != nil {
			return nil, cause // a signal came just before the start: nothing was started
		}
		var bad *outputfile.Error
		if errors.As(err, &bad) {
			return nil, WithKind(ErrInput, err) // the log file
		}
		return nil, WithKind(ErrVMM, err)
	}
	o.Logger.Info("vm started", zap.String("name", o.VM.Name), zap.Int("pid", machine.Pid()), zap.Int("cid", machine.CID()))
	return &Machine{VM: machine, out: out}, nil
}

// Outcome waits for the VM, started under ctx, to end and says how its run
// went: ctx's cause when ctx stopped it, the VMM's failure, or, when
// requireVerdict is set, the guest's verdict unless it passed.
func (m *Machine) Outcome(ctx context.Context, requireVerdict bool) error {
	// Not ctx: when it is done the VM is being stopped, and we wait for that.
	werr := m.VM.Wait(context.Background())
	m.out.close()
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if werr != nil {
		return werr
	}
	return m.out.watch.result(requireVerdict)
}

// vmOutput is where a VM's output goes: the verdict watcher, in memory, and the
// destinations of the run (a console file, a client), each behind an outlet so
// that one nobody reads (a FIFO kept full, a stuck mount) neither stalls the
// VMM nor keeps the verdict from the watcher.
type vmOutput struct {
	watch   verdictWatcher
	outlets []*outlet.Outlet
}

func (v *vmOutput) add(w io.Writer, name string, log *zap.Logger) io.Writer {
	o := outlet.New(w, outlet.Options{Name: name, Logger: log})
	v.outlets = append(v.outlets, o)
	return o
}

// close delivers what the outlets hold, all at once, but waits for no stuck
// destination.
func (v *vmOutput) close() {
	var wg sync.WaitGroup
	for _, o := range v.outlets {
		wg.Go(o.Close)
	}
	wg.Wait()
}

// removeMountpoint removes a private mountpoint once it is unmounted.
func removeMountpoint(dir string) error {
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("cannot remove the temporary mountpoint: %w", err)
	}
	return nil
}

// PrintCommand prints the VMM command line for vm, one shell-quoted word at a
// time; a VMM that cannot be found is an ErrVMM error.
func PrintCommand(w io.Writer, vm *metadata.VMConfig, o launcher.Options) error {
	_, bin, args, err := launcher.Command(vm, o)
	if err != nil {
		return WithKind(ErrVMM, err)
	}
	words := []string{shellQuote(bin)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	_, err = fmt.Fprintln(w, strings.Join(words, " "))
	return err
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
