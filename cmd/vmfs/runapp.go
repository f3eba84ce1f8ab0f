package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"vmfs/cmd/vmfs/payload"
	"vmfs/launcher"
	"vmfs/layout"
	"vmfs/metadata"
)

// runFlags are the flags of `vmfs run-app`, in `vm run-app`'s idiom.
type runFlags struct {
	inputFlags
	mount          string
	console, log   string
	dryRun         bool
	skipVerify     bool
	requireVerdict bool
	timeout        time.Duration
	vm             launcher.Options
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	f.inputFlags.register(fs)
	fs.StringVar(&f.mount, "mount", "", "run from this existing `vmfs mount` instead of mounting the payload (no positional arguments then)")
	fs.StringVar(&f.console, "console", "", "write the guest console to this file (default: stdout)")
	fs.StringVar(&f.log, "log", "", "write the VMM's own messages to this file (default: stderr)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the VMM command line and exit")
	fs.BoolVar(&f.skipVerify, "skip-verify", false, "boot even when the APK does not match its idsig")
	fs.BoolVar(&f.requireVerdict, "require-verdict", false, "fail unless the guest prints a passing VMFS-VERDICT line (the vmfs test guest does)")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop the VM after this long (0: never)")
	fs.StringVar(&f.vm.VMM, "vmm", launcher.VMMAuto, "auto (crosvm when installed, else QEMU), crosvm or qemu")
	fs.StringVar(&f.vm.Crosvm, "crosvm", "", "crosvm binary (default: crosvm in PATH)")
	fs.StringVar(&f.vm.Qemu, "qemu", "", "QEMU binary (default: qemu-system-x86_64 in PATH)")
	fs.StringVar(&f.vm.Accel, "accel", "tcg", "QEMU accelerator: tcg or kvm")
	fs.Uint32VarP(&f.vm.MemMiB, "mem", "m", 0, "guest memory in MiB (default: the VM config's)")
	fs.IntVar(&f.vm.CPUs, "cpus", 0, "number of vCPUs (default: 1)")
}

func runRunApp(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) (err error) {
	var f runFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	want := 3 // apk idsig config_path
	if f.mount != "" {
		want = 0
	}
	if args, err = positional(fs, want); err != nil {
		return err
	}

	// Resolve: from an existing mount, or lay out the payload now.
	var vm *metadata.VMConfig
	var apk, idsig string
	var p *payload.Payload
	if f.mount != "" {
		if vm, apk, idsig, err = fromMount(f.mount); err != nil {
			return err
		}
		err = launcher.CheckBootFiles(vm)
	} else {
		c.log.Debug("phase: resolving the payload")
		if err = interruptible(ctx, func() (err error) { p, err = f.resolve(args[0], args[1], args[2]); return err }); err == nil {
			apk, idsig = p.APK, p.Idsig
			if err = launcher.CheckBootFiles(p.OSConfig); err != nil {
				err = fmt.Errorf("vm config %s: %w", p.OSConfigPath, err)
			}
		}
	}
	if err != nil {
		return withCode(exitInput, err)
	}

	if !f.skipVerify && !f.dryRun {
		c.log.Debug("phase: pre-flight: verifying the APK against its idsig")
		if err := preflight(ctx, apk, idsig); err != nil {
			return err
		}
	}

	if p != nil {
		c.log.Debug("phase: mounting")
		// A private mountpoint for this VM only, gone when run-app ends.
		mnt, err := os.MkdirTemp("", "vmfs-run-")
		if err != nil {
			return err
		}
		defer removeDir(c.log, mnt, &err)
		srv, err := mountPayload(c.log, p, mnt, &mountFlags{inputFlags: f.inputFlags})
		if err != nil {
			return err
		}
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		defer unmountAfterVM(c.log, srv, done, &err)
		vm = vmConfig(p, mnt)
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}

	if f.dryRun {
		return printCommand(c.stdout, vm, f.vm)
	}
	return f.boot(c, ctx, vm)
}

// boot runs the VM to its end, streaming the console and watching for a verdict.
func (f *runFlags) boot(c *command, ctx context.Context, vm *metadata.VMConfig) error {
	var console io.Writer = c.stdout
	if f.console != "" {
		cf, err := os.Create(f.console)
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("console: %w", err))
		}
		defer cf.Close()
		console = cf
	}
	watch := &verdictWatcher{}
	lo := f.vm
	lo.Log = f.log
	machine, err := launcher.Launch(ctx, vm, lo, launcher.RunOptions{
		Stdout:  io.MultiWriter(console, watch),
		Stderr:  c.stderr,
		Logger:  c.log,
		Timeout: f.timeout,
	})
	if err != nil {
		return withCode(exitVMM, err)
	}
	c.log.Info("vm started", zap.Int("pid", machine.Pid()), zap.Int("cid", machine.CID()))
	// Not ctx: when it is done the VM is being stopped, and we wait for that.
	werr := machine.Wait(context.Background())
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	var ee *launcher.ExitError
	switch {
	case errors.As(werr, &ee) && ee.Code > 0:
		return withCode(ee.Code, werr) // the VMM's status, passed through
	case werr != nil:
		return werr
	}
	return watch.result(f.requireVerdict)
}

// fromMount reads what run-app needs from an existing vmfs mount.
func fromMount(mnt string) (vm *metadata.VMConfig, apk, idsig string, err error) {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return nil, "", "", err
	}
	if m, err := findMount(abs); err != nil || m == nil || !serverAlive(m.pid, abs) {
		return nil, "", "", withCode(exitMount, fmt.Errorf("%s: not a live vmfs mount", mnt))
	}
	if vm, err = metadata.LoadVMConfig(filepath.Join(abs, "vm.json")); err != nil {
		return nil, "", "", withCode(exitMount, err)
	}
	b, err := os.ReadFile(filepath.Join(abs, "layout.json"))
	if err != nil {
		return nil, "", "", withCode(exitMount, err)
	}
	var doc map[string]layout.Description
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, "", "", withCode(exitMount, fmt.Errorf("%s/layout.json: %w", mnt, err))
	}
	for _, p := range doc["payload"].Partitions {
		switch {
		case p.Label == layout.APKLabel && len(p.Extents) > 0:
			apk = p.Extents[0].Source
		case p.Label == layout.IdsigLabel && len(p.Extents) > 0:
			idsig = p.Extents[0].Source
		}
	}
	if apk == "" || idsig == "" {
		return nil, "", "", withCode(exitMount, fmt.Errorf("%s/layout.json: no apk or idsig partition", mnt))
	}
	return vm, apk, idsig, nil
}

// preflight verifies the APK against its idsig before anything boots, as
// virtualizationservice does; a signal stops the wait (the read is harmless).
func preflight(ctx context.Context, apk, idsig string) error {
	err := interruptible(ctx, func() error { return metadata.VerifyFiles(apk, idsig) })
	var se *signalError
	if err != nil && !errors.As(err, &se) {
		return fmt.Errorf("pre-flight: %w (--skip-verify boots anyway)", err)
	}
	return err
}

// unmountAfterVM stops serving once the VMM is gone; a busy mount is detached.
func unmountAfterVM(log *zap.Logger, srv *mounted, done <-chan struct{}, errp *error) {
	if err := unmount(log, srv); err != nil {
		if *errp == nil {
			*errp = withCode(exitMount, err)
		}
		return
	}
	<-done
}

func removeDir(log *zap.Logger, dir string, errp *error) {
	if err := os.Remove(dir); err != nil {
		log.Error("cannot remove the temporary mountpoint", zap.String("dir", dir), zap.Error(err))
		if *errp == nil {
			*errp = err
		}
	}
}

// printCommand prints the VMM command line, one shell-quoted word at a time.
func printCommand(w io.Writer, vm *metadata.VMConfig, o launcher.Options) error {
	_, bin, args, err := launcher.Command(vm, o)
	if err != nil {
		return withCode(exitVMM, err)
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
