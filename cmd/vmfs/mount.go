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
		srv, err := f.mount(ctx, c.log, args)
		if err != nil {
			return err
		}
		c.log.Info("mounted; serving until unmounted or interrupted", zap.String("mountpoint", srv.Mountpoint))
		return serve(ctx, c.log, srv)
	}
	// The server resolves the payload and reports any error back with its exit code,
	// so the command does not resolve it too. The mountpoint and FUSE are checked
	// here as well (a few syscalls): without them no server can start.
	mnt, err := checkMountpoint(args[3], f.allowOther)
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

// mount resolves the payload and serves it at the mountpoint, which it checks and
// mounts holding the mountpoint's lock: concurrent mounts on one directory never
// stack, the first wins.
func (f *mountFlags) mount(ctx context.Context, log *zap.Logger, args []string) (*mounted, error) {
	mnt, err := checkMountpoint(args[3], f.allowOther)
	if err != nil {
		return nil, err
	}
	var p *payload.Payload
	if err := interruptible(ctx, func() (err error) { p, err = f.resolve(args[0], args[1], args[2]); return err }); err != nil {
		return nil, withCode(exitInput, err)
	}
	var unlock func()
	if err := interruptible(ctx, func() (err error) { unlock, err = lockMountpoint(mnt); return err }); err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := checkMountpoint(mnt, f.allowOther); err != nil {
		return nil, err
	}
	return mountPayload(log, p, mnt, f)
}

// lockMountpoint takes an exclusive flock on the mountpoint directory; unlock
// releases it. A mount made meanwhile hides the directory but not the lock, since
// the lock is on the directory opened before.
func lockMountpoint(mnt string) (unlock func(), err error) {
	d, err := os.OpenFile(mnt, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, withCode(exitMount, fmt.Errorf("mountpoint %s: %w", mnt, errors.Unwrap(err)))
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, withCode(exitMount, fmt.Errorf("lock mountpoint %s: %w", mnt, err))
	}
	return func() { d.Close() }, nil
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
	go func() { msg <- readReport(r) }()
	select {
	case m := <-msg:
		return readyResult(m, exited)
	case <-ctx.Done():
		stopServer(cmd.Process, exited, args[3])
		return withCode(exitMount, fmt.Errorf("interrupted while mounting; the server was stopped: %w", context.Cause(ctx)))
	case <-time.After(readyTimeout):
		stopServer(cmd.Process, exited, args[3])
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
	if err := fusedisk.Unmount(mnt, fsName(p.Pid), true); err != nil && !errors.Is(err, fusedisk.ErrNotMounted) {
		fmt.Fprintf(os.Stderr, "vmfs: %v\n", err)
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
	srv, err := f.mount(ctx, c.log, args)
	writeReport(ready, err)
	ready.Close()
	if err != nil {
		return err
	}
	return serve(ctx, c.log, srv)
}

// mountPayload serves p at mnt with vm.json, metadata.json and layout.json beside
// the disks.
func mountPayload(log *zap.Logger, p *payload.Payload, mnt string, f *mountFlags) (*mounted, error) {
	vm, err := indentJSON(vmConfig(p, mnt))
	if err != nil {
		return nil, err
	}
	meta, err := metadataJSON(p)
	if err != nil {
		return nil, err
	}
	disks := fuseDisks(p)
	lay, err := layoutJSON(disks)
	if err != nil {
		return nil, err
	}
	m, err := serveDisks(log, disks, map[string][]byte{"vm.json": vm, "metadata.json": meta, "layout.json": lay}, mnt, f)
	if err != nil {
		code := exitMount
		var se *fusedisk.SourceError
		if errors.Is(err, fusedisk.ErrSourceChanged) || errors.As(err, &se) {
			code = exitInput // a source that cannot be opened or changed is a bad input
		}
		return nil, withCode(code, err)
	}
	return m, nil
}

// mounted is a served payload: its server, and its sources, closed once it is
// unmounted.
type mounted struct {
	*fusedisk.Server
	srcs *fusedisk.Sources
}

// Wait returns once the mount is gone, and closes the sources.
func (m *mounted) Wait() {
	m.Server.Wait()
	m.srcs.Close()
}

// serveDisks does fusedisk's three steps: it opens the disks' sources, builds a
// tree of them and files, and mounts it at mnt.
func serveDisks(log *zap.Logger, disks []fusedisk.Disk, files map[string][]byte, mnt string, f *mountFlags) (*mounted, error) {
	srcs, err := fusedisk.OpenSources(disks, log)
	if err != nil {
		return nil, err
	}
	root, err := fusedisk.NewTree(srcs, fusedisk.TreeOptions{Disks: disks, Files: files, Dir: mnt, Passthrough: f.passthrough, Logger: log})
	if err == nil {
		var srv *fusedisk.Server
		if srv, err = fusedisk.Mount(mnt, root, fusedisk.MountOptions{FsName: fsName(os.Getpid()), AllowOther: f.allowOther, Logger: log}); err == nil {
			return &mounted{Server: srv, srcs: srcs}, nil
		}
	}
	srcs.Close()
	return nil, err
}

// serve runs until the mount goes away or ctx is cancelled, then unmounts.
func serve(ctx context.Context, log *zap.Logger, srv *mounted) error {
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", zap.String("mountpoint", srv.Mountpoint))
	if err := unmount(log, srv); err != nil {
		// The mount stays, dead once this server exits; vmfs unmount recovers it.
		return withCode(exitMount, err)
	}
	<-done
	return nil
}

// unmount removes srv's mount, detaching it lazily when busy: the kernel drops it
// when its last user closes it, and srv.Wait returns then.
func unmount(log *zap.Logger, srv *mounted) error {
	err := srv.Unmount()
	if errors.Is(err, fusedisk.ErrBusy) {
		log.Warn("mount busy; detaching it lazily", zap.String("mountpoint", srv.Mountpoint))
		err = srv.Detach()
	}
	return err
}

// checkMountpoint returns the absolute mountpoint after checking that it is an
// existing empty directory that is not already a vmfs mount, and that FUSE can
// mount there for this user.
func checkMountpoint(path string, allowOther bool) (string, error) {
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
	if err := checkFUSE(allowOther); err != nil {
		return "", withCode(exitMount, err)
	}
	return mnt, nil
}

// fuseConf is where fusermount3 reads user_allow_other.
const fuseConf = "/etc/fuse.conf"

// checkFUSE checks what this user's mount will use: root opens /dev/fuse and
// mounts itself; anyone else goes through the setuid fusermount3, which opens
// /dev/fuse with the user's own rights (so a 0600 device is root's alone) and
// allows --allow-other only with user_allow_other in /etc/fuse.conf.
func checkFUSE(allowOther bool) error {
	if os.Geteuid() == 0 {
		fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("/dev/fuse unusable: %w", errors.Unwrap(err))
		}
		return fuse.Close()
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		var st unix.Stat_t
		unix.Stat("/dev/fuse", &st)
		return fmt.Errorf("/dev/fuse unusable by uid %d: %w (mode %#o: a user other than root needs read-write access, e.g. mode 0666)", os.Geteuid(), err, st.Mode&0o777)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found (install fuse3): a mount by a user other than root needs it")
	}
	if allowOther && !userAllowOther() {
		return fmt.Errorf("--allow-other: a user other than root needs user_allow_other in %s", fuseConf)
	}
	return nil
}

// userAllowOther reports whether fuse.conf has the user_allow_other line.
func userAllowOther() bool {
	b, err := os.ReadFile(fuseConf)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
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
	// vmfs unmounts itself, so it knows what happened; the server sees its mount
	// go and exits. A killed or stopped server needs nothing of the mount.
	state := serverState(m.pid, mnt)
	err = fusedisk.Unmount(mnt, m.source, false)
	if errors.Is(err, fusedisk.ErrBusy) {
		if err = fusedisk.Unmount(mnt, m.source, true); err == nil {
			fmt.Fprintf(c.stderr, "vmfs: %s was busy: detached lazily; it goes away, and its server exits, when its last user closes it\n", mnt)
			return nil
		}
	}
	if err != nil {
		return withCode(exitMount, err)
	}
	switch state {
	case stateStopped:
		fmt.Fprintf(c.stderr, "vmfs: unmounted %s; its server %d is stopped and exits once continued (kill -CONT %d)\n", mnt, m.pid, m.pid)
	case stateServing:
		if !waitExit(m.pid, unmountTimeout) {
			return withCode(exitMount, fmt.Errorf("unmounted %s, but its server %d is still running after %v", mnt, m.pid, unmountTimeout))
		}
	}
	return nil
}

// waitExit waits up to d for process pid to exit, and reports whether it did.
func waitExit(pid int, d time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for deadline := time.Now().Add(d); ; {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return n > 0
	}
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
		state, apk := serverState(m.pid, m.point), "-"
		switch {
		case state == stateDead:
			state = "dead (run vmfs unmount)"
		case state == stateStopped:
			state = "stopped (SIGSTOP: kill -CONT to resume)"
		case !isTop(m):
			state += " (covered by another mount)"
		default:
			// A server may hang; list must not (the kernel aborts the abandoned
			// request when vmfs exits).
			tctx, cancel := context.WithTimeout(ctx, listTimeout)
			err := interruptible(tctx, func() (err error) { apk, err = mountedAPK(m.point); return err })
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				state, apk = "not answering", "-"
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", m.point, m.pid, state, apk)
	}
	return w.Flush()
}

// listTimeout bounds how long list waits for a server to answer.
const listTimeout = 2 * time.Second

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
