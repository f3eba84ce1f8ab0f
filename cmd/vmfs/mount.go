package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/service"
)

// mountFlags are the flags of `vmfs mount`.
type mountFlags struct {
	specFlags
	service       serviceFlags
	name          string
	foreground    bool
	allowOther    bool
	noPassthrough bool
	logFile       string
	readyFd       int
}

func (f *mountFlags) register(fs *pflag.FlagSet) {
	f.specFlags.register(fs)
	fs.BoolVar(&f.foreground, "foreground", false, "stay attached and log to stderr")
	fs.BoolVar(&f.allowOther, "allow-other", false, "let other users read the mount (only what its sources let them read)")
	registerNoPassthrough(fs, &f.noPassthrough)
	fs.StringVar(&f.logFile, "log", "", "where the background server logs (default: nowhere)")
	fs.IntVar(&f.readyFd, "ready-fd", 0, "internal: report readiness on this fd")
	fs.MarkHidden("ready-fd")
	f.service.register(fs)
	fs.StringVar(&f.name, "name", "", "through a vmfs service: the payload's name (default: one the service makes); the mountpoint is optional then")
}

const readyTimeout = 60 * time.Second

func runMount(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var f mountFlags
	f.register(fs)
	raw := args
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// The background server is the command's own: it never asks a service.
	if f.readyFd == 0 && !f.foreground {
		cl, err := f.service.client(ctx, c.log)
		if err != nil {
			return err
		}
		if cl != nil {
			return f.mountThrough(c, ctx, cl, fs)
		}
	}
	if err := needsService(fs, "name"); err != nil {
		return err
	}
	if _, err := f.payloadArgs(fs, " <mountpoint>"); err != nil {
		return err
	}
	args = fs.Args()
	switch {
	case f.readyFd > 0:
		return f.serveReporting(c, ctx, args)
	case f.foreground:
		srv, err := f.mount(ctx, c.log, args)
		if err != nil {
			return err
		}
		c.log.Info("mounted; serving until unmounted or interrupted", zap.String("mountpoint", srv.Dir))
		return serve(ctx, c.log, srv)
	}
	// The server resolves the payload and reports any error back with its exit
	// code, so the command does not resolve it too. The mountpoint and FUSE are
	// checked here as well (a few syscalls): without them no server can start.
	mnt, err := vmfs.CheckMountpoint(args[len(args)-1], f.allowOther)
	if err != nil {
		return err
	}
	return startServer(ctx, f.logFile, mnt, raw)
}

// mountThrough adds the payload to the service cl, exposed at the mountpoint
// when one is given, and prints its directory in the service's mount.
func (f *mountFlags) mountThrough(c *command, ctx context.Context, cl *service.Client, fs *pflag.FlagSet) error {
	if err := notThroughService(fs, "allow-other", "no-passthrough", "log"); err != nil {
		return err
	}
	n, err := f.payloadArgs(fs, " [<mountpoint>]")
	if err != nil {
		return err
	}
	args := fs.Args()
	spec, err := f.clientSpec(args)
	if err != nil {
		return err
	}
	mnt := ""
	if len(args) > n {
		mnt = args[n]
	}
	p, err := cl.Add(ctx, f.name, spec, mnt)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, p.Dir)
	return err
}

// mount makes the missing state files, resolves the payload and serves it at the
// mountpoint; a state file it made goes again when the mount fails.
func (f *mountFlags) mount(ctx context.Context, log *zap.Logger, args []string) (srv *vmfs.Server, err error) {
	spec, err := f.spec(args)
	if err != nil {
		return nil, err
	}
	created, err := vmfs.PrepareState(spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			created.Remove()
		}
	}()
	p, err := vmfs.Resolve(ctx, spec)
	if err != nil {
		return nil, err
	}
	return vmfs.Mount(ctx, p, args[len(args)-1], vmfs.MountOptions{AllowOther: f.allowOther, NoPassthrough: f.noPassthrough, Kind: "mount", Logger: log})
}

// startServer re-executes vmfs detached as the mount's server, like sshfs, with
// the command's own arguments in its working directory, and returns once the
// server reports the mount ready, or with the server's error.
func startServer(ctx context.Context, logFile, mnt string, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{"mount", "--ready-fd=3"}, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logFile != "" {
		lf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			w.Close()
			return err
		}
		defer lf.Close()
		cmd.Stderr = lf
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return err
	}
	// The server is detached; reap it only if it dies before it is ready.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	msg := make(chan string, 1)
	go func() { msg <- readReport(r) }()
	select {
	case m := <-msg:
		return readyResult(m, exited)
	case <-ctx.Done():
		stopServer(cmd.Process, exited, mnt)
		return withCode(exitMount, fmt.Errorf("interrupted while mounting; the server was stopped: %w", context.Cause(ctx)))
	case <-time.After(readyTimeout):
		stopServer(cmd.Process, exited, mnt)
		return withCode(exitMount, fmt.Errorf("the server did not report ready in %v; stopped it", readyTimeout))
	}
}

// maxReport bounds the server's readiness report; longer errors are cut.
const maxReport = 4096

// readReport reads the server's report, at most maxReport bytes of it, and drains
// the rest so that a server writing more never blocks.
func readReport(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxReport+64))
	io.Copy(io.Discard, r)
	return string(b)
}

// writeReport writes the readiness report: "ok", or the exit code and the error
// on one line of at most maxReport bytes.
func writeReport(w io.Writer, err error) {
	if err == nil {
		fmt.Fprint(w, "ok\n")
		return
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(msg) > maxReport {
		msg = msg[:maxReport] + "…"
	}
	fmt.Fprintf(w, "%d %s\n", exitCodeFor(err), msg)
}

// readyResult turns the server's report ("ok" or "<code> <message>") into an error.
func readyResult(m string, exited <-chan error) error {
	if m == "ok\n" {
		return nil
	}
	code, text, ok := strings.Cut(strings.TrimSpace(m), " ")
	n, err := strconv.Atoi(code)
	if !ok || err != nil {
		werr := <-exited
		return withCode(exitMount, fmt.Errorf("the server exited without reporting (%v)", werr))
	}
	<-exited
	return withCode(n, errors.New(text))
}

// stopGrace is how long a server that is not ready gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// stopServer ends a server that is not ready: SIGTERM, then SIGKILL when it does
// not exit; a mount it made all the same goes with it.
func stopServer(p *os.Process, exited <-chan error, mnt string) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopGrace):
		p.Kill()
		<-exited
	}
	if st, _ := vmfs.Status(context.Background(), mnt); st != nil && st.Pid == p.Pid {
		vmfs.UnmountDir(context.Background(), mnt)
	}
}

// serveReporting is the background server: it mounts, tells the parent how that
// went, and serves.
func (f *mountFlags) serveReporting(c *command, ctx context.Context, args []string) error {
	ready := os.NewFile(uintptr(f.readyFd), "ready")
	srv, err := f.mount(ctx, c.log, args)
	writeReport(ready, err)
	ready.Close()
	if err != nil {
		return err
	}
	os.Chdir("/") // started in the command's directory, which it must not keep busy
	return serve(ctx, c.log, srv)
}

// serve runs until the mount goes away or ctx is cancelled, then unmounts.
func serve(ctx context.Context, log *zap.Logger, srv *vmfs.Server) error {
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", zap.String("mountpoint", srv.Dir))
	// An error leaves the mount, dead once this server exits; vmfs unmount recovers it.
	return srv.Unmount()
}

func runUnmount(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var sf serviceFlags
	sf.register(fs)
	serviceDir := fs.Bool("dir", false, "the argument is a killed vmfs service's directory: remove its mount and every mount exposing its payloads")
	args, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *serviceDir {
		return unmountService(c, ctx, args[0])
	}
	cl, err := sf.client(ctx, c.log)
	if err != nil {
		return err
	}
	if cl != nil {
		if handled, err := unmountThrough(ctx, cl, args[0]); handled {
			return err
		}
	}
	u, err := vmfs.UnmountDir(ctx, args[0])
	switch {
	case err != nil:
		return err
	case u.Detached:
		fmt.Fprintf(c.stderr, "vmfs: %s was busy: detached lazily; it goes away, and its server exits, when its last user closes it\n", args[0])
	case u.State == vmfs.StateStopped:
		fmt.Fprintf(c.stderr, "vmfs: unmounted %s; its server %d is stopped and exits once continued (kill -CONT %d)\n", args[0], u.Pid, u.Pid)
	}
	return nil
}

// listStates are how list shows a server's state.
var listStates = map[string]string{
	vmfs.StateDead:    "dead (run vmfs unmount)",
	vmfs.StateStopped: "stopped (SIGSTOP: kill -CONT to resume)",
	vmfs.StateCovered: "covered by another mount",
}

func runList(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var sf serviceFlags
	sf.register(fs)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	cl, err := sf.client(ctx, c.log)
	if err != nil {
		return err
	}
	servicePid := 0
	if cl != nil {
		if servicePid, err = listService(c, ctx, cl); err != nil {
			return err
		}
	}
	all, err := vmfs.List(ctx)
	if err != nil {
		return err
	}
	// The service's mount and the mounts exposing its payloads are listed above.
	var ms []vmfs.MountStatus
	for _, m := range all {
		if m.Pid != servicePid || servicePid == 0 {
			ms = append(ms, m)
		}
	}
	if cl != nil {
		if len(ms) == 0 {
			return nil
		}
		fmt.Fprintln(c.stdout)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MOUNTPOINT\tPID\tSTATE\tKIND\tPROFILE\tAPK\tINSTANCE")
	for _, m := range ms {
		state, kind, profile, apk, instance := m.State, "-", "-", "-", "-"
		if s, ok := listStates[state]; ok {
			state = s
		}
		if m.Manifest != nil {
			kind, profile, apk = m.Manifest.Server.Kind, m.Manifest.Profile, inputfile.Quote(m.Manifest.Inputs.APK)
			if in := m.Manifest.Inputs.Instance; in != "" {
				instance = inputfile.Quote(in)
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", inputfile.Quote(m.Dir), m.Pid, state, kind, profile, apk, instance)
	}
	return w.Flush()
}
