package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/cmd/vmfs/payload"
	"vmfs/fusedisk"
	"vmfs/layout"
)

// mountFlags are the flags of `vmfs mount`.
type mountFlags struct {
	inputFlags
	foreground  bool
	allowOther  bool
	passthrough bool
	logFile     string
	readyFd     int
}

func (f *mountFlags) register(fs *pflag.FlagSet) {
	f.inputFlags.register(fs)
	fs.BoolVar(&f.foreground, "foreground", false, "stay attached and log to stderr")
	fs.BoolVar(&f.allowOther, "allow-other", false, "let other users read the mount")
	fs.BoolVar(&f.passthrough, "passthrough", false, "let the kernel read 4 KiB-aligned whole files directly (root, kernel >= 6.9); such reads skip the source-change guard")
	fs.StringVar(&f.logFile, "log", "", "where the background server logs (default: nowhere)")
	fs.IntVar(&f.readyFd, "ready-fd", 0, "internal: report readiness on this fd")
	fs.MarkHidden("ready-fd")
}

const readyTimeout = 60 * time.Second

func runMount(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var f mountFlags
	f.register(fs)
	args, err := parse(fs, args, 4)
	if err != nil {
		return err
	}
	switch {
	case f.readyFd > 0:
		return f.serveReporting(c, ctx, args)
	case f.foreground:
		srv, err := f.mount(c.log, args)
		if err != nil {
			return err
		}
		c.log.Info("mounted; serving until unmounted or interrupted", zap.String("mountpoint", srv.Mountpoint))
		return serve(ctx, c.log, srv)
	}
	// The server resolves the payload and reports any error back with its exit code,
	// so the command does not resolve it too. The mountpoint and /dev/fuse are
	// checked here as well (a few syscalls): without them no server can start.
	mnt, err := checkMountpoint(args[3])
	if err != nil {
		return err
	}
	for _, i := range []int{0, 1} { // the server runs from /; the config path is inside the APK
		if args[i], err = filepath.Abs(args[i]); err != nil {
			return err
		}
	}
	return f.startServer(ctx, []string{args[0], args[1], args[2], mnt})
}

// mount checks the mountpoint, resolves the payload and serves it.
func (f *mountFlags) mount(log *zap.Logger, args []string) (*fusedisk.Server, error) {
	mnt, err := checkMountpoint(args[3])
	if err != nil {
		return nil, err
	}
	p, err := f.resolve(args[0], args[1], args[2])
	if err != nil {
		return nil, withCode(exitInput, err)
	}
	return mountPayload(log, p, mnt, f)
}

// startServer re-executes vmfs detached as the mount's server, like sshfs, and
// returns once the server reports the mount ready, or with the server's error.
func (f *mountFlags) startServer(ctx context.Context, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmdArgs, err := f.serverArgs()
	if err != nil {
		w.Close()
		return err
	}
	cmdArgs = append(cmdArgs, "--")
	cmd := exec.Command(self, append(cmdArgs, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if f.logFile != "" {
		lf, err := os.OpenFile(f.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
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
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 64*1024))
		msg <- string(b)
	}()
	select {
	case m := <-msg:
		return readyResult(m, exited)
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		<-msg
		return withCode(exitMount, errors.New("interrupted while mounting; the server was stopped"))
	case <-time.After(readyTimeout):
		cmd.Process.Signal(syscall.SIGTERM)
		return withCode(exitMount, fmt.Errorf("the server did not report ready in %v; stopped it", readyTimeout))
	}
}

// serverArgs repeats the flags for the server, with paths made absolute since the
// server runs from /.
func (f *mountFlags) serverArgs() ([]string, error) {
	args := []string{"mount", "--ready-fd=3"}
	path := func(flag, p string) error {
		abs, err := filepath.Abs(p)
		args = append(args, "--"+flag+"="+abs)
		return err
	}
	for _, d := range f.apexDirs {
		if err := path("apex-dir", d); err != nil {
			return nil, err
		}
	}
	if err := path("os-dir", f.osDir); err != nil {
		return nil, err
	}
	if f.flags.Changed("apex-info-list") {
		if err := path("apex-info-list", f.apexInfoList); err != nil {
			return nil, err
		}
	}
	for flag, on := range map[string]bool{"random-guids": f.randomGUIDs, "allow-other": f.allowOther, "passthrough": f.passthrough} {
		if on {
			args = append(args, "--"+flag)
		}
	}
	return args, nil
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

// serveReporting is the background server: it mounts, tells the parent how that
// went, and serves.
func (f *mountFlags) serveReporting(c *command, ctx context.Context, args []string) error {
	ready := os.NewFile(uintptr(f.readyFd), "ready")
	report := func(err error) {
		if err == nil {
			fmt.Fprint(ready, "ok\n")
		} else {
			fmt.Fprintf(ready, "%d %s\n", exitCodeFor(err), strings.ReplaceAll(err.Error(), "\n", " "))
		}
		ready.Close()
	}
	srv, err := f.mount(c.log, args)
	report(err)
	if err != nil {
		return err
	}
	return serve(ctx, c.log, srv)
}

// mountPayload serves p at mnt with vm.json and metadata.json beside the disks.
func mountPayload(log *zap.Logger, p *payload.Payload, mnt string, f *mountFlags) (*fusedisk.Server, error) {
	vm, err := indentJSON(vmConfig(p, mnt))
	if err != nil {
		return nil, err
	}
	meta, err := metadataJSON(p)
	if err != nil {
		return nil, err
	}
	srv, err := fusedisk.Mount(mnt, fusedisk.Options{
		Disks:       fuseDisks(p),
		Files:       map[string][]byte{"vm.json": vm, "metadata.json": meta},
		FsName:      fsName(os.Getpid()),
		Passthrough: f.passthrough,
		AllowOther:  f.allowOther,
		Logger:      log,
	})
	if err != nil {
		var code = exitMount
		if errors.Is(err, fusedisk.ErrSourceChanged) {
			code = exitInput
		}
		return nil, withCode(code, err)
	}
	return srv, nil
}

// serve runs until the mount goes away or ctx is cancelled, then unmounts.
func serve(ctx context.Context, log *zap.Logger, srv *fusedisk.Server) error {
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", zap.String("mountpoint", srv.Mountpoint))
	if err := srv.Unmount(); err != nil {
		// Busy: detach now; the kernel drops the mount when its last user closes it.
		log.Warn("mount busy; detaching it lazily", zap.String("mountpoint", srv.Mountpoint), zap.Error(err))
		if err := lazyUnmount(srv.Mountpoint); err != nil {
			return withCode(exitMount, fmt.Errorf("unmount %s: %w", srv.Mountpoint, err))
		}
	}
	<-done
	return nil
}

// checkMountpoint returns the absolute mountpoint after checking that it is an
// existing empty directory that is not already a vmfs mount, and that FUSE works.
func checkMountpoint(path string) (string, error) {
	mnt, err := filepath.Abs(path)
	if err != nil {
		return "", withCode(exitMount, err)
	}
	if m, err := findMount(mnt); err == nil && m != nil {
		return "", withCode(exitMount, fmt.Errorf("mountpoint %s: already a vmfs mount", path))
	}
	st, err := os.Stat(mnt)
	if err != nil {
		return "", withCode(exitMount, fmt.Errorf("mountpoint %s: %w", path, errors.Unwrap(err)))
	}
	if !st.IsDir() {
		return "", withCode(exitMount, fmt.Errorf("mountpoint %s: not a directory", path))
	}
	d, err := os.Open(mnt)
	if err != nil {
		return "", withCode(exitMount, fmt.Errorf("mountpoint %s: %w", path, err))
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return "", withCode(exitMount, fmt.Errorf("mountpoint %s: not empty", path))
	}
	fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return "", withCode(exitMount, fmt.Errorf("/dev/fuse unusable: %w", errors.Unwrap(err)))
	}
	fuse.Close()
	return mnt, nil
}

func lazyUnmount(mnt string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(mnt, unix.MNT_DETACH)
	}
	return exec.Command("fusermount3", "-u", "-z", mnt).Run()
}

func plainUnmount(mnt string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(mnt, 0)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -u: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

const unmountTimeout = 10 * time.Second

func runUnmount(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	args, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	mnt, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	m, err := findMount(mnt)
	if err != nil {
		return err
	}
	if m == nil {
		return withCode(exitMount, fmt.Errorf("%s: not a vmfs mount", args[0]))
	}
	if serverAlive(m.pid, mnt) {
		// The server unmounts itself on SIGTERM (lazily when busy) and exits.
		if err := unix.Kill(m.pid, unix.SIGTERM); err != nil {
			return fmt.Errorf("stop server %d: %w", m.pid, err)
		}
		deadline := time.Now().Add(unmountTimeout)
		for serverAlive(m.pid, mnt) {
			if time.Now().After(deadline) {
				return withCode(exitMount, fmt.Errorf("server %d of %s still running after %v (the mount is busy and was detached)", m.pid, mnt, unmountTimeout))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if m, _ := findMount(mnt); m == nil {
			return nil
		}
	}
	// The server is gone (killed): free the mountpoint ourselves.
	if err := plainUnmount(mnt); err != nil {
		if err := lazyUnmount(mnt); err != nil {
			return withCode(exitMount, fmt.Errorf("unmount %s: %w", mnt, err))
		}
		fmt.Fprintf(c.stderr, "vmfs: %s was busy: detached lazily; it goes away when its last user closes it\n", mnt)
	}
	return nil
}

func runList(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ms, err := vmfsMounts()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MOUNTPOINT\tPID\tSTATE\tAPK")
	for _, m := range ms {
		state, apk := "serving", "-"
		if !serverAlive(m.pid, m.point) {
			state = "dead (run vmfs unmount)"
		} else if a, err := mountedAPK(m.point); err == nil {
			apk = a
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", m.point, m.pid, state, apk)
	}
	return w.Flush()
}

// mountedAPK reads the APK a mount serves from its layout.json.
func mountedAPK(mnt string) (string, error) {
	b, err := os.ReadFile(filepath.Join(mnt, "layout.json"))
	if err != nil {
		return "", err
	}
	var doc map[string]layout.Description
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", err
	}
	for _, p := range doc["payload"].Partitions {
		if p.Label == layout.APKLabel && len(p.Extents) > 0 {
			return p.Extents[0].Source, nil
		}
	}
	return "", errors.New("no apk partition")
}
