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
	guest, err := filepath.Abs(b.cfg.guest)
	if err != nil {
		return bootResult{}, err
	}
	vmPath := filepath.Join(guest, "microdroid.json")
	if _, err := os.Stat(vmPath); err != nil {
		return bootResult{NotRun: fmt.Sprintf("no test guest at %s (`make guest` builds it)", b.cfg.guest)}, nil
	}
	if err := exec.Command(b.cfg.vmfs, "run-app", "--help").Run(); err != nil {
		return bootResult{NotRun: fmt.Sprintf("%s has no working `run-app` (%v)", b.cfg.vmfs, err)}, nil
	}
	accel := b.cfg.accel
	opts := launcher.Options{VMM: launcher.VMMQemu, Accel: accel}
	_, qemu, err := launcher.Resolve(opts)
	if err != nil {
		return bootResult{NotRun: err.Error()}, nil
	}
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
		tv, err := timeVerdict(ctx, run)
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
		tf, err := timeVerdict(ctx, exec.Command(qemu, args...))
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

// timeVerdict runs cmd until it exits and returns the time from its start until
// its console printed a passing verdict. A failing or missing verdict is an error.
func timeVerdict(ctx context.Context, cmd *exec.Cmd) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// SIGTERM, not SIGKILL, so that run-app unmounts its private mount.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGTERM) })
	defer stop()
	var took time.Duration
	var v *verdict.Verdict
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if got, err := verdict.Parse(sc.Text()); err == nil && got != nil && v == nil {
			took, v = time.Since(start), got
		}
	}
	io.Copy(io.Discard, out)
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return 0, fmt.Errorf("no end after %v: %w", bootTimeout, ctx.Err())
	case v == nil:
		return 0, fmt.Errorf("no verdict (%v): %s", werr, lastLine(stderr.String()))
	case !v.OK:
		return 0, fmt.Errorf("the guest failed: %s", strings.Join(v.Failed(), "; "))
	case werr != nil:
		return 0, fmt.Errorf("%w: %s", werr, lastLine(stderr.String()))
	}
	return took, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
