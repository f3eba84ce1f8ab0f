package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs"
	"vmfs/metadata"
	"vmfs/testdata"
)

// guestDir is the test guest `make guest` builds: a Debian kernel, an initramfs
// whose /init is cmd/vmfs-guest, and microdroid.json, used as --os-dir.
func guestDir(t *testing.T) string {
	t.Helper()
	testdata.RequireTool(t, "qemu-system-x86_64")
	dir, err := filepath.Abs("../../build/guest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "microdroid.json")); err != nil {
		testdata.Missing(t, "no test guest (run make guest): %v", err)
	}
	return dir
}

// guestConfig is the test guest's OS config, its paths absolute.
func guestConfig(t *testing.T) *metadata.VMConfig {
	t.Helper()
	cfg, err := metadata.LoadVMConfig(filepath.Join(guestDir(t), "microdroid.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func guestArgs(t *testing.T, apk string, extra ...string) []string {
	args := []string{"run-app", "--vmm", "qemu", "--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", guestDir(t)}
	args = append(args, extra...)
	return append(args, apk, testdata.IdsigPath(), testdata.ConfigPath)
}

func flippedAPK(t *testing.T) string {
	b, err := os.ReadFile(testdata.APKPath())
	if err != nil {
		t.Fatal(err)
	}
	b[300000] ^= 0xFF // inside the stored native library, block 73
	path := filepath.Join(t.TempDir(), "flipped.apk")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunAppBoots boots the sample payload under QEMU through the FUSE mount; the
// guest agent checks every partition and reads the APK through real dm-verity.
func TestRunAppBoots(t *testing.T) {
	testdata.RequireFUSE(t)
	tmp := t.TempDir()
	console := filepath.Join(t.TempDir(), "console.txt")
	r := runVmfs(t, tmp, guestArgs(t, testdata.APKPath(), "--require-verdict", "--console", console, "--timeout", "3m")...)
	out, _ := os.ReadFile(console)
	if r.code != 0 {
		t.Fatalf("run-app: exit %d: %s\nconsole:\n%s", r.code, r.stderr, out)
	}
	for _, check := range []string{`"name":"apk-verity","ok":true`, `"name":"apex:com.vmfs.edge","ok":true`, `"ok":true,"checks"`} {
		if !strings.Contains(string(out), check) {
			t.Errorf("console lacks %s:\n%s", check, out)
		}
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRunAppFlippedByte: pre-flight refuses an APK that does not match its idsig;
// booted anyway, the guest's dm-verity read fails and run-app reports it.
func TestRunAppFlippedByte(t *testing.T) {
	testdata.RequireFUSE(t)
	apk := flippedAPK(t)
	r := runVmfs(t, "", guestArgs(t, apk)...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "pre-flight") || !strings.Contains(r.stderr, apk) {
		t.Errorf("pre-flight: exit %d: %s", r.code, r.stderr)
	}
	tmp := t.TempDir()
	r = runVmfs(t, tmp, guestArgs(t, apk, "--skip-verify", "--require-verdict", "--console", "/dev/null", "--timeout", "3m")...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "apk-verity") || !strings.Contains(r.stderr, "corrupted") {
		t.Errorf("booted anyway: exit %d: %s", r.code, r.stderr)
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestRunAppDryRun(t *testing.T) {
	testdata.RequireFUSE(t)
	tmp := t.TempDir()
	r := runVmfs(t, tmp, guestArgs(t, testdata.APKPath(), "--dry-run", "--mem", "512", "--cpus", "2")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"qemu-system-x86_64 ", " -accel tcg ", " -m 512 ", " -smp 2 ", "/payload.vmdk,format=vmdk,if=virtio,readonly=on", "-kernel " + guestDir(t) + "/vmlinuz"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("command line lacks %q: %s", w, r.stdout)
		}
	}
	r = runVmfs(t, tmp, guestArgs(t, testdata.APKPath(), "--dry-run", "--via", "flat")...)
	if !strings.Contains(r.stdout, "/payload.img,format=raw,if=virtio,readonly=on") {
		t.Errorf("--via flat: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r = runVmfs(t, tmp, guestArgs(t, testdata.APKPath(), "--dry-run", "--via", "nbd")...); r.code != exitUsage || !strings.Contains(r.stderr, `--via "nbd"`) {
		t.Errorf("--via nbd: exit %d: %s", r.code, r.stderr)
	}
	// crosvm is not installed here; any executable stands in, since a dry run
	// only prints. crosvm gets the extent composite, or with --via flat the
	// partition composite, in the seed's order.
	for via, composite := range map[string]string{"extents": "payload-extents.composite", "flat": "payload.composite"} {
		r = runVmfs(t, tmp, guestArgs(t, testdata.APKPath(), "--dry-run", "--vmm", "crosvm", "--crosvm", "/bin/true", "--mem", "512", "--via", via)...)
		want := regexp.MustCompile(`^/bin/true run --disable-sandbox --cid 10 --mem 512 --serial=type=stdout,hardware=serial,num=1 ` +
			`--initrd \S+/initramfs.cpio.gz --params 'console=ttyS0 panic=-1 quiet' --disk /\S+/` + regexp.QuoteMeta(composite) + ` \S+/vmlinuz\n$`)
		if r.code != 0 || !want.MatchString(r.stdout) {
			t.Errorf("crosvm dry run via %s: exit %d: %q %s", via, r.code, r.stdout, r.stderr)
		}
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRunAppFromMount: run-app --mount boots from an existing `vmfs mount`.
func TestRunAppFromMount(t *testing.T) {
	testdata.RequireFUSE(t)
	mnt := t.TempDir()
	r := runVmfs(t, "", append([]string{"mount", "--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", guestDir(t)},
		testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, mnt)...)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
	r = runVmfs(t, "", "run-app", "--vmm", "qemu", "--mount", mnt, "--require-verdict", "--console", "/dev/null", "--timeout", "3m")
	if r.code != 0 {
		t.Fatalf("run-app --mount: exit %d: %s", r.code, r.stderr)
	}
	if m, _ := vmfs.Status(context.Background(), mnt); m == nil {
		t.Error("run-app --mount unmounted a mount it does not own")
	}
}

// TestRunAppVMMCrash: a VMM that dies under the guest is reported, and run-app
// still unmounts and removes its mountpoint.
func TestRunAppVMMCrash(t *testing.T) {
	testdata.RequireFUSE(t)
	tmp := t.TempDir()
	r := start(t, tmp, guestArgs(t, testdata.APKPath(), "--console", "/dev/null")...)
	r.waitFor(t, "vmm started")
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(r.cmd.Process.Pid), "qemu").Output()
	qemu, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if qemu == 0 {
		t.Fatalf("no VMM among vmfs's children:\n%s", r.output())
	}
	syscall.Kill(qemu, syscall.SIGKILL)
	code := r.exit(t, time.Minute)
	t.Logf("exit %d: %s", code, r.output())
	if code == 0 || !strings.Contains(r.output(), "killed by signal 9") {
		t.Errorf("exit %d: %s", code, r.output())
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// privateMount is the private mountpoint of the run-app r, from the mounts vmfs lists.
func privateMount(t *testing.T, r *running) vmfs.MountStatus {
	t.Helper()
	ms, err := vmfs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Pid == r.cmd.Process.Pid {
			return m
		}
	}
	t.Fatalf("no mount of run-app %d among %+v", r.cmd.Process.Pid, ms)
	return vmfs.MountStatus{}
}

// TestListDuringRunApp: vmfs list shows a running run-app's private mount as live
// (it used to call it dead, inviting an unmount under the VM).
func TestListDuringRunApp(t *testing.T) {
	testdata.RequireFUSE(t)
	r := start(t, t.TempDir(), guestArgs(t, testdata.APKPath(), "--console", "/dev/null")...)
	r.waitFor(t, "vmm started")
	m := privateMount(t, r)
	out := runVmfs(t, "", "list").stdout
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, m.Dir+" ") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 5 || f[2] != "serving" || f[3] != "run-app" || !slices.Contains(f, testdata.APKPath()) {
		t.Errorf("list shows the run as %q, want serving run-app %s:\n%s", line, testdata.APKPath(), out)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.exit(t, time.Minute)
}

// TestRunAppCleanupError: a run whose mount cannot be removed at the end (a tmpfs
// was mounted on top) fails and says why, instead of exiting 0.
func TestRunAppCleanupError(t *testing.T) {
	testdata.RequireRoot(t)
	r := start(t, t.TempDir(), guestArgs(t, testdata.APKPath())...)
	r.waitFor(t, "vmfs-guest: checking") // the VMM has the disk open
	m := privateMount(t, r)
	if err := syscall.Mount("vmfs-test-cover", m.Dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Unmount(m.Dir, syscall.MNT_DETACH)
		runVmfs(t, "", "unmount", m.Dir)
		os.Remove(m.Dir)
	})
	code := r.exit(t, 3*time.Minute)
	if out := r.output(); code != exitMount || !strings.Contains(out, "on top") {
		t.Errorf("exit %d, want %d saying the mount is covered:\n%s", code, exitMount, out)
	}
}

// TestRunAppOutputClosed: a run whose stdout goes away (vmfs run-app | head)
// still runs to its end and cleans up; it used to die of SIGPIPE mid-run,
// leaving its mount behind.
func TestRunAppOutputClosed(t *testing.T) {
	testdata.RequireFUSE(t)
	tmp := t.TempDir()
	cmd := exec.Command(vmfsBin, guestArgs(t, testdata.APKPath(), "--require-verdict")...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Minute // bounds Wait if something vmfs started holds stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "vmfs-guest: checking") {
	}
	out.Close() // like head: the guest's verdict is still to come
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d (%v), want 0 (the verdict is read all the same): %s", code, err, stderr.String())
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
