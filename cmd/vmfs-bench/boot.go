package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"vmfs/launcher"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/verdict"
)

// bootTimeout bounds one boot; the guest agent gives up after a minute itself.
const bootTimeout = 3 * time.Minute

// p5 times `vmfs run-app` from its start until the test guest prints its verdict,
// and the same guest booted by QEMU from a flat image copied beforehand: the argv
// comes from the same launcher, only the disk differs. The APK is the signed sample
// grown by -boot-size random bytes and signed again, since the guest checks the
// whole APK against its idsig through dm-verity.
func (b *bench) p5(ctx context.Context) (bootResult, error) {
	guest, notRun, err := b.bootGuest()
	if notRun != "" || err != nil {
		return bootResult{NotRun: notRun}, err
	}
	accel := b.cfg.accel
	opts := launcher.Options{VMM: launcher.VMMQemu, Accel: accel}
	_, qemu, err := launcher.Resolve(opts)
	if err != nil {
		return bootResult{}, err
	}
	vmPath := filepath.Join(guest, "microdroid.json")
	in := b.in
	in.apk, in.osDir = testdata.APKPath(), guest
	res := bootResult{Accel: accel}
	if b.cfg.bootSize > 0 {
		if _, err := exec.LookPath("apksigner"); err != nil {
			res.Note = "apksigner is not installed, so the sample APK is used as it is"
		} else if in.apk, in.idsig, err = writeSignedAPK(b.tmp, b.cfg.bootSize); err != nil {
			return res, err
		}
	}
	st, err := os.Stat(in.apk)
	if err != nil {
		return res, err
	}
	res.APKBytes = st.Size()
	flat := filepath.Join(b.tmp, "boot-flat.img")
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		run := exec.Command(b.cfg.vmfs, "run-app", "--vmm", "qemu", "--accel", accel, "--require-verdict",
			"--os-dir", guest, "--apex-info-list", in.apexInfoList, in.apk, in.idsig, testdata.ConfigPath)
		tv, _, err := timeVerdict(ctx, execVerdict(run))
		if err != nil {
			return res, fmt.Errorf("vmfs run-app: %w", err)
		}

		start := time.Now()
		p, err := resolve(in)
		if err != nil {
			return res, err
		}
		if err := copyFlat(p, flat); err != nil {
			return res, err
		}
		tc := time.Since(start)
		vm, err := metadata.LoadVMConfig(vmPath)
		if err != nil {
			return res, err
		}
		vm.Disks = append(vm.Disks, metadata.DiskImage{Image: flat})
		args, err := launcher.QemuArgs(vm, opts)
		if err != nil {
			return res, err
		}
		tf, _, err := timeVerdict(ctx, execVerdict(exec.Command(qemu, args...)))
		if err != nil {
			return res, fmt.Errorf("qemu on the flat image: %w", err)
		}
		if err := os.Remove(flat); err != nil {
			return res, err
		}
		res.Vmfs = append(res.Vmfs, tv.Seconds())
		res.Flat = append(res.Flat, tf.Seconds())
		res.Copy = append(res.Copy, tc.Seconds())
		b.logf("P5 rep %d/%d (%s): run-app %.2f s, copy %.3f s + flat boot %.2f s", rep+1, b.cfg.reps, accel, tv.Seconds(), tc.Seconds(), tf.Seconds())
	}
	return res, nil
}

// bootGuest is the test guest P5 boots (-guest, made absolute), or why P5
// cannot run here.
func (b *bench) bootGuest() (guest, notRun string, err error) {
	if guest, err = filepath.Abs(b.cfg.guest); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(guest, "microdroid.json")); err != nil {
		return "", fmt.Sprintf("no test guest at %s (`make guest` builds it)", b.cfg.guest), nil
	}
	if err := exec.Command(b.cfg.vmfs, "run-app", "--help").Run(); err != nil {
		return "", fmt.Sprintf("%s has no working `run-app` (%v)", b.cfg.vmfs, err), nil
	}
	if _, _, err := launcher.Resolve(launcher.Options{VMM: launcher.VMMQemu, Accel: b.cfg.accel}); err != nil {
		return "", err.Error(), nil
	}
	return guest, "", nil
}

// bootRun runs a VM until it ends, its guest console going to stdout and its
// messages to stderr; ctx done stops it.
type bootRun func(ctx context.Context, stdout, stderr io.Writer) error

// execVerdict runs cmd as a bootRun.
func execVerdict(cmd *exec.Cmd) bootRun {
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// SIGTERM, not SIGKILL, so that run-app unmounts its private mount.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return err
		}
		defer context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGTERM) })()
		return cmd.Wait()
	}
}

// timeVerdict runs run until it returns and returns the passing verdict its
// console printed and the time from its start until then. A failing or missing
// verdict is an error.
func timeVerdict(ctx context.Context, run bootRun) (time.Duration, *verdict.Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	out, console := io.Pipe()
	var stderr lockedBuffer
	type seen struct {
		took time.Duration
		v    *verdict.Verdict
	}
	found := make(chan seen, 1)
	start := time.Now()
	go func() {
		var s seen
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if got, err := verdict.Parse(sc.Text()); err == nil && got != nil && s.v == nil {
				s.took, s.v = time.Since(start), got
			}
		}
		io.Copy(io.Discard, out)
		found <- s
	}()
	werr := run(ctx, console, &stderr)
	console.Close()
	s := <-found
	switch {
	case ctx.Err() != nil:
		return 0, nil, fmt.Errorf("no end after %v: %w", bootTimeout, ctx.Err())
	case s.v == nil:
		return 0, nil, fmt.Errorf("no verdict (%v): %s", werr, lastLine(stderr.String()))
	case !s.v.OK:
		return 0, nil, fmt.Errorf("the guest failed: %s", strings.Join(s.v.Failed(), "; "))
	case werr != nil:
		return 0, nil, fmt.Errorf("%w: %s", werr, lastLine(stderr.String()))
	}
	return s.took, s.v, nil
}

// lockedBuffer is a bytes.Buffer a VM's output may still reach (RunApp's
// outlets wait for no destination) while timeVerdict reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
