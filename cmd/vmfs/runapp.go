package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/launcher"
	"vmfs/service"
)

// vmFlags are the flags of a command that boots a VM, in `vm run`'s idiom.
type vmFlags struct {
	service        serviceFlags
	console, log   string
	dryRun         bool
	requireVerdict bool
	detach         bool
	timeout        time.Duration
	protected      bool
	cpuTopology    string
	vm             launcher.Options
}

func (f *vmFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.console, "console", "", "write the guest console to this file (default: stdout)")
	fs.StringVar(&f.log, "log", "", "write the VMM's own messages to this file (default: stderr)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the VMM command line and exit")
	fs.BoolVar(&f.requireVerdict, "require-verdict", false, "fail unless the guest prints a passing VMFS-VERDICT line (the vmfs test guest does)")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop the VM after this long (0: never)")
	registerVMM(fs, &f.vm)
	fs.StringVar(&f.vm.Via, "via", launcher.ViaExtents, "how the VMM reads a read-only disk: extents (the originals themselves, through the mount's VMDK or extent composite, where the mount has them) or flat (the mount's flat image; crosvm: its partition composite)")
	fs.Uint32VarP(&f.vm.MemMiB, "mem", "m", 0, "guest memory in MiB (default: the VM config's)")
	fs.IntVar(&f.vm.CPUs, "cpus", 0, "number of vCPUs (default: 1)")
	fs.StringVar(&f.cpuTopology, "cpu-topology", "", "one_cpu or match_host (as many vCPUs as host CPUs), as vm run-app's --cpu-topology")
	fs.BoolVarP(&f.protected, "protected", "p", false, "a protected VM: refused, this host has no pKVM")
	f.service.register(fs)
	fs.BoolVarP(&f.detach, "daemonize", "d", false, "through a vmfs service: return once the VM runs, printing its name and CID (vmfs stop ends it)")
}

// registerVMM registers the flags that pick the VMM and its binary.
func registerVMM(fs *pflag.FlagSet, o *launcher.Options) {
	fs.StringVar(&o.VMM, "vmm", launcher.VMMAuto, "auto (crosvm when installed, else QEMU), crosvm or qemu")
	fs.StringVar(&o.Crosvm, "crosvm", "", "crosvm binary (default: crosvm in PATH)")
	fs.StringVar(&o.Qemu, "qemu", "", "QEMU binary (default: qemu-system-x86_64 in PATH)")
	fs.StringVar(&o.Accel, "accel", "tcg", "QEMU accelerator: tcg or kvm")
}

// check says before anything runs what of the command line cannot be done: a
// protected VM, an unknown CPU topology, a console file that cannot be made.
func (f *vmFlags) check(fs *pflag.FlagSet) error {
	if f.protected {
		return usagef("--protected: protected VMs need pKVM and crosvm's --protected-vm, which this host cannot run")
	}
	if err := launcher.CheckVia(f.vm.Via); err != nil {
		return usagef("--%v", err)
	}
	switch f.cpuTopology {
	case "", "one_cpu":
	case "match_host":
		if fs.Changed("cpus") {
			return usagef("--cpu-topology match_host and --cpus: give one")
		}
		f.vm.CPUs = runtime.NumCPU()
	default:
		return usagef("--cpu-topology %q: want one_cpu or match_host", f.cpuTopology)
	}
	if f.console == "" {
		return nil
	}
	// The console is written if it is there (a FIFO, /dev/null), else made.
	err := unix.Access(f.console, unix.W_OK)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Access(filepath.Dir(f.console), unix.W_OK)
	}
	if err != nil {
		return withCode(exitUsage, fmt.Errorf("console: %s: %w", f.console, err))
	}
	return nil
}

// options are the run's options. Through a service, the VMM and accelerator
// go only where the command line names them (else the service's own apply),
// and the binaries never: the service runs its own.
func (f *vmFlags) options(c *command, fs *pflag.FlagSet, throughService bool) (vmfs.RunOptions, error) {
	o := vmfs.RunOptions{
		RequireVerdict: f.requireVerdict, VM: f.vm, Console: f.console,
		Stdout: c.stdout, Stderr: c.stderr, Timeout: f.timeout, Logger: c.log,
	}
	o.VM.Log = f.log
	if f.dryRun {
		o.DryRun = c.stdout
	}
	if !throughService {
		return o, needsService(fs, "daemonize")
	}
	if !fs.Changed("vmm") {
		o.VM.VMM = ""
	}
	if !fs.Changed("accel") {
		o.VM.Accel = ""
	}
	return o, notThroughService(fs, "crosvm", "qemu", "via")
}

// started prints a detached VM as `vm run -d` does: its name and CID.
func started(c *command, vm *service.VMStatus, err error) error {
	if err == nil && vm != nil {
		_, err = fmt.Fprintf(c.stdout, "%s %d\n", vm.Name, vm.CID)
	}
	return err
}

// runFlags are the flags of `vmfs run-app`, in `vm run-app`'s idiom.
type runFlags struct {
	specFlags
	vmFlags
	mount         string
	name          string
	skipVerify    bool
	noPassthrough bool
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	f.specFlags.register(fs)
	fs.StringVar(&f.mount, "mount", "", "run from the mountpoint of an existing vmfs mount (through a service: a payload's name or mountpoint) instead of mounting the payload (no positional arguments then)")
	fs.BoolVar(&f.skipVerify, "skip-verify", false, "boot even when the APK does not match its idsig")
	registerNoPassthrough(fs, &f.noPassthrough)
	f.vmFlags.register(fs)
	fs.StringVar(&f.name, "name", "", "a name for the VM (QEMU's -name); through a vmfs service also the name of the payload made for the run (default: one the service makes)")
}

func runRunApp(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var f runFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.mount != "" {
		if _, err := positional(fs, 0); err != nil {
			return err
		}
		if fs.Changed("no-passthrough") {
			return usagef("--no-passthrough: --mount runs from a mount made already, served as it was mounted")
		}
	} else if _, err := f.payloadArgs(fs, ""); err != nil {
		return err
	}
	args = fs.Args()
	if err := f.check(fs); err != nil {
		return err
	}
	cl, err := f.service.client(ctx, c.log)
	if err != nil {
		return err
	}
	if cl != nil {
		payload, ok, err := servicePayload(ctx, cl, f.mount)
		if err != nil {
			return err
		}
		if ok {
			return f.runThrough(c, ctx, fs, cl, payload, args)
		}
		if f.detach {
			// A service answers, but --mount is none of its payloads.
			if _, err := vmfs.Open(ctx, f.mount); err != nil {
				return err
			}
			return usagef("--daemonize: %s is a vmfs mount of its own, not a payload of the service: only the service runs a VM detached", inputfile.Quote(f.mount))
		}
	}
	o, err := f.options(c, fs, false)
	if err != nil {
		return err
	}
	o.Mount, o.SkipVerify, o.VM.Name, o.NoPassthrough = f.mount, f.skipVerify, f.name, f.noPassthrough
	if f.mount == "" {
		if o.Spec, err = f.spec(args); err != nil {
			return err
		}
	}
	return vmfs.RunApp(ctx, o)
}

// servicePayload is the payload of the service cl that --mount names: a name,
// or a directory (a payload's, or where one is exposed). ok is false for a
// mount of a server of its own, which the command runs from itself.
func servicePayload(ctx context.Context, cl *service.Client, mount string) (name string, ok bool, err error) {
	if !strings.Contains(mount, "/") {
		return mount, true, nil
	}
	st, err := cl.List(ctx)
	if err != nil {
		return "", false, err
	}
	m, err := vmfs.ReadManifest(mount)
	if err != nil || m.Server.Pid != st.Pid {
		return "", false, nil
	}
	return filepath.Base(m.Dir), true, nil
}

// runThrough asks the service cl to boot the payload.
func (f *runFlags) runThrough(c *command, ctx context.Context, fs *pflag.FlagSet, cl *service.Client, payload string, args []string) error {
	o, err := f.options(c, fs, true)
	if err == nil {
		err = notThroughService(fs, "no-passthrough")
	}
	if err != nil {
		return err
	}
	o.Mount, o.SkipVerify, o.VM.Name = payload, f.skipVerify, f.name
	if payload == "" {
		if o.Spec, err = f.clientSpec(args); err != nil {
			return err
		}
	}
	vm, err := cl.RunApp(ctx, o, f.name, f.detach)
	if !f.detach {
		return err
	}
	return started(c, vm, err)
}

// runRunVM is `vmfs run`: boot a raw VM config, as `vm run` does.
func runRunVM(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var f vmFlags
	f.register(fs)
	args, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if err := f.check(fs); err != nil {
		return err
	}
	cl, err := f.service.client(ctx, c.log)
	if err != nil {
		return err
	}
	o, err := f.options(c, fs, cl != nil)
	if err != nil {
		return err
	}
	if cl == nil {
		return vmfs.RunVM(ctx, args[0], o)
	}
	vm, err := cl.RunVM(ctx, args[0], o, f.detach)
	if !f.detach {
		return err
	}
	return started(c, vm, err)
}
