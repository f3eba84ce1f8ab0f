package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/launcher"
)

// runFlags are the flags of `vmfs run-app`, in `vm run-app`'s idiom.
type runFlags struct {
	specFlags
	mount          string
	console, log   string
	dryRun         bool
	skipVerify     bool
	requireVerdict bool
	timeout        time.Duration
	protected      bool
	cpuTopology    string
	vm             launcher.Options
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	f.specFlags.register(fs)
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
	fs.StringVar(&f.cpuTopology, "cpu-topology", "", "one_cpu or match_host (as many vCPUs as host CPUs), as `vm run-app`")
	fs.StringVar(&f.vm.Name, "name", "", "a name for the VM (QEMU's -name; shown in its log line)")
	fs.BoolVarP(&f.protected, "protected", "p", false, "a protected VM: refused, this host has no pKVM")
}

func runRunApp(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var f runFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	want := f.payloadArgs()
	if f.mount != "" {
		want = 0
	}
	args, err := positional(fs, want)
	if err != nil {
		return err
	}
	if f.protected {
		return usagef("--protected: protected VMs need pKVM and crosvm's --protected-vm, which this host cannot run")
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
	// A console file that cannot be made is a bad command line, said before anything runs.
	if f.console != "" {
		if err := unix.Access(filepath.Dir(f.console), unix.W_OK); err != nil {
			return withCode(exitUsage, fmt.Errorf("console: %s: %w", f.console, err))
		}
	}
	o := vmfs.RunOptions{
		Mount: f.mount, SkipVerify: f.skipVerify, RequireVerdict: f.requireVerdict,
		VM: f.vm, Console: f.console, Stdout: c.stdout, Stderr: c.stderr, Timeout: f.timeout, Logger: c.log,
	}
	o.VM.Log = f.log
	if f.mount == "" {
		if o.Spec, err = f.spec(args); err != nil {
			return err
		}
	}
	if f.dryRun {
		o.DryRun = c.stdout
	}
	return vmfs.RunApp(ctx, o)
}
