// Command vmfs turns an Android app payload (APK, idsig, config path, APEXes) into a
// bootable GPT disk served zero-copy by an embedded FUSE filesystem, and boots it.
//
// It only parses flags, calls the vmfs packages and reports; one error line on
// stderr and a documented exit code per failure class.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"vmfs"
	"vmfs/launcher"
	"vmfs/service"
)

// Exit codes, one per failure class (scripts branch on them).
const (
	exitFailure = 1 // verification failed, the VM failed, or anything else
	exitUsage   = 2 // bad command line
	exitInput   = 3 // a bad or missing input file
	exitMount   = 4 // the mountpoint or FUSE refused
	exitVMM     = 5 // the VMM could not be started
)

// codeError carries an exit code with an error.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code, err}
}

func usagef(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// command holds what every subcommand writes to and logs with.
type command struct {
	stdout, stderr io.Writer
	log            *zap.Logger
}

type subcommand struct {
	name, args, summary string
	run                 func(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error
}

var subcommands = []subcommand{
	{"inspect", "[flags] <apk> <idsig> <config_path> (android13: <apk> <idsig> <instance> <config_path>; android14+: <apk> <idsig> <instance> with --config-path or --payload-binary-name)", "print the payload disk's partition table and the VM config, without mounting", runInspect},
	{"verify", "<apk> <idsig>", "check an APK against its APK Signature Scheme v4 idsig", runVerify},
	{"create-idsig", "<apk> <idsig>", "write the v4 idsig of an APK (its merkle tree and root hash), as `vm create-idsig`", runCreateIdsig},
	{"create-partition", "[flags] <path> <size>", "create a VM's writable partition image (an instance image, encrypted storage), as `vm create-partition`", runCreatePartition},
	{"mount", "[flags] <apk> <idsig> <config_path> <mountpoint> (the payload as for inspect)", "serve the payload disk at mountpoint (in the background; through a service: add it there, the mountpoint optional)", runMount},
	{"unmount", "<mountpoint> | <name> | --dir <service dir>", "stop a vmfs mount and wait for its server (through a service: remove a payload)", runUnmount},
	{"list", "", "list active vmfs mounts, and a service's payloads and VMs", runList},
	{"run-app", "[flags] <apk> <idsig> <config_path> (as for inspect) | --mount <mountpoint>", "mount the payload on a private mountpoint, boot it (crosvm or QEMU) and clean up", runRunApp},
	{"run", "[flags] <vm_config.json>", "boot a raw VM config, as `vm run`", runRunVM},
	{"serve", "[flags]", "serve many payloads in one mount, and the VMs booting them, over a control socket (in the foreground)", runServe},
	{"stop", "<cid> | <name>", "stop a VM of the vmfs service", runStop},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: vmfs <command> [flags] [args]\n\nCommands:\n")
	for _, s := range subcommands {
		fmt.Fprintf(w, "  %-12s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nRun 'vmfs <command> --help' for a command's flags.\n")
}

func (c *command) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		usage(c.stderr)
		return withCode(exitUsage, errors.New("no command"))
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(c.stdout)
		return nil
	}
	for _, s := range subcommands {
		if s.name != args[0] {
			continue
		}
		fs := pflag.NewFlagSet("vmfs "+s.name, pflag.ContinueOnError)
		fs.SetOutput(c.stderr)
		fs.Usage = func() {
			fmt.Fprintf(c.stdout, "Usage: vmfs %s %s\n\n%s.\n\nFlags:\n%s", s.name, s.args, s.summary, fs.FlagUsages())
		}
		return s.run(c, ctx, fs, args[1:])
	}
	usage(c.stderr)
	return usagef("unknown command %q", args[0])
}

// parse parses flags and checks the count of positional arguments.
func parse(fs *pflag.FlagSet, args []string, want int) ([]string, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return positional(fs, want)
}

func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	return nil
}

// positional returns the arguments left after the flags, want of them.
func positional(fs *pflag.FlagSet, want int) ([]string, error) {
	if fs.NArg() != want {
		return nil, usagef("%s: want %d arguments, got %d (see --help)", fs.Name(), want, fs.NArg())
	}
	return fs.Args(), nil
}

func newLogger(verbose bool) *zap.Logger {
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.TimeKey = ""
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.Lock(os.Stderr), level)
	return zap.New(core)
}

func main() {
	// First, before anything can block: a signal must always reach vmfs's handler.
	ctx, stop := signalContext()
	log := newLogger(os.Getenv("VMFS_DEBUG") != "")
	c := &command{stdout: os.Stdout, stderr: os.Stderr, log: log}
	err := c.run(ctx, os.Args[1:])
	stop()
	log.Sync()
	os.Exit(c.exit(err))
}

// signalContext is cancelled by SIGINT, SIGTERM or SIGHUP (a closed terminal) with
// a *signalError cause, so a command can report which one stopped it (exit 130,
// 143 or 129).
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	// A closed stdout or stderr (vmfs run-app | head) must fail a write, not
	// kill vmfs before it cleans up: with SIGPIPE notified, writes get EPIPE.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		if sig, ok := <-ch; ok {
			cancel(&signalError{sig.(syscall.Signal)})
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(ch)
		cancel(nil)
	}
}

// exit prints err as one line and returns its exit code.
func (c *command) exit(err error) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(c.stderr, "vmfs: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
	return exitCodeFor(err)
}

// exitCodeFor is the exit code of a command that failed with err: a signal's,
// then the first of several errors' (a run's, before its cleanup's), then by kind.
func exitCodeFor(err error) int {
	var ce *codeError
	var se *signalError
	var ee *launcher.ExitError
	if errors.As(err, &se) {
		return 128 + int(se.sig)
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		return exitCodeFor(j.Unwrap()[0])
	}
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ee) && ee.Code > 0:
		return ee.Code // the VMM's status, passed through
	case errors.Is(err, vmfs.ErrInput):
		return exitInput
	case errors.Is(err, vmfs.ErrMount):
		return exitMount
	case errors.Is(err, vmfs.ErrVMM):
		return exitVMM
	case errors.Is(err, service.ErrRequest), errors.Is(err, vmfs.ErrArgument):
		return exitUsage
	}
	return exitFailure
}

// signalError reports that vmfs stopped because of a signal.
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string { return "interrupted by " + e.sig.String() }
