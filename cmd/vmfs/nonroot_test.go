package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"vmfs/metadata"
	"vmfs/testdata"
)

// namespace is a private mount namespace of the test's own, held open by a
// process that waits on its stdin: what a test mounts there (a /dev of its own,
// a fuse.conf) is seen by the commands it runs there and by nothing else.
type namespace struct {
	t       *testing.T
	nsenter string
	holder  *exec.Cmd
}

func newNamespace(t *testing.T) *namespace {
	t.Helper()
	testdata.RequireRoot(t)
	unshare := testdata.RequireTool(t, "unshare")
	ns := &namespace{t: t, nsenter: testdata.RequireTool(t, "nsenter")}
	// cat waits on stdin and writes nowhere: a redirect to /dev/null would race
	// with the test's own /dev and create a regular file there.
	ns.holder = exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec cat")
	stdin, err := ns.holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := ns.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); ns.holder.Wait() })
	// The holder speaks only once it is inside its namespace.
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("unshare: %q %v", line, err)
	}
	return ns
}

// run runs argv in the namespace and returns its exit code and output.
func (ns *namespace) run(argv ...string) result {
	ns.t.Helper()
	cmd := exec.Command(ns.nsenter, append([]string{"-t", strconv.Itoa(ns.holder.Process.Pid), "-m", "--"}, argv...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// must runs a shell script in the namespace and fails the test if it fails.
func (ns *namespace) must(script string) {
	ns.t.Helper()
	if r := ns.run("sh", "-ec", script); r.code != 0 {
		ns.t.Fatalf("%s: exit %d: %s%s", script, r.code, r.stdout, r.stderr)
	}
}

// ownDev gives the namespace a /dev holding only null and a fuse device of mode.
func (ns *namespace) ownDev(mode os.FileMode) {
	ns.must("mount -t tmpfs -o mode=0755 vmfs-test-dev /dev && mknod -m 0666 /dev/null c 1 3 && mknod -m " +
		strconv.FormatUint(uint64(mode.Perm()), 8) + " /dev/fuse c 10 229")
}

// TestMountNonRoot mounts as an unprivileged user through fusermount3, in a
// mount namespace of the test's own whose /dev/fuse has the mode the test picks:
// with 0666 the mount works and is private (even root cannot read it), and
// --allow-other without user_allow_other is refused with the reason; with 0600
// (common on VMs and containers; fusermount3 opens the device with the user's
// rights) the mount is refused with one line saying why.
func TestMountNonRoot(t *testing.T) {
	setpriv := testdata.RequireTool(t, "setpriv")
	testdata.RequireTool(t, "fusermount3")
	// Everything the user touches must be theirs or world-readable.
	dir := testdata.PublicDir(t)
	bin, td := filepath.Join(dir, "vmfs"), filepath.Join(dir, "td")
	for _, c := range [][]string{{"cp", vmfsBin, bin}, {"cp", "-r", testdata.Dir(), td}, {"chmod", "-R", "a+rX", dir}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	// A server the test fails to unmount must not outlive it.
	t.Cleanup(func() { killByExe(bin) })
	payloadArgs := []string{"--apex-info-list", filepath.Join(td, "apex-info-list.xml"), "--os-dir", filepath.Join(td, "os"),
		filepath.Join(td, "app/sample.apk"), filepath.Join(td, "app/sample.apk.idsig"), testdata.ConfigPath}
	mountpoint := func(name string) string {
		d := filepath.Join(dir, name)
		os.Mkdir(d, 0o755)
		os.Chown(d, 65534, 65534)
		return d
	}
	setup := func(t *testing.T, mode os.FileMode) (ns *namespace, asNobody func(args ...string) result) {
		ns = newNamespace(t)
		ns.ownDev(mode)
		conf := filepath.Join(t.TempDir(), "fuse.conf") // no user_allow_other
		os.WriteFile(conf, []byte("# user_allow_other\n"), 0o644)
		ns.must("mount --bind " + conf + " /etc/fuse.conf")
		return ns, func(args ...string) result {
			return ns.run(append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin}, args...)...)
		}
	}

	t.Run("0666", func(t *testing.T) {
		ns, asNobody := setup(t, 0o666)
		mnt := mountpoint("mnt")
		r := asNobody(append(append([]string{"mount"}, payloadArgs...), mnt)...)
		if r.code != 0 {
			t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
		}
		t.Cleanup(func() { ns.run("fusermount3", "-u", "-z", mnt) })
		if r := ns.run("cat", filepath.Join(mnt, "vm.json")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("root read a private mount: exit %d %s", r.code, r.stderr)
		}
		if r := ns.run(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(mnt, "vm.json")); r.code != 0 {
			t.Errorf("nobody cannot read its own mount: %s", r.stderr)
		}
		if r := asNobody("list"); !strings.Contains(r.stdout, mnt) || !strings.Contains(r.stdout, "serving") {
			t.Errorf("list as nobody: %q", r.stdout)
		}
		r = asNobody(append(append([]string{"mount", "--allow-other"}, payloadArgs...), mountpoint("other"))...)
		if r.code != exitMount || !strings.Contains(r.stderr, "user_allow_other") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("--allow-other without user_allow_other: exit %d: %q", r.code, r.stderr)
		}
		if r := asNobody("unmount", mnt); r.code != 0 {
			t.Fatalf("unmount as nobody: exit %d: %s", r.code, r.stderr)
		}
		if r := ns.run("grep", "-c", mnt, "/proc/self/mountinfo"); strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("still mounted: %s", r.stdout)
		}
	})
	// The kernel passes files through for root alone: a user's mount serves
	// every read itself, exactly, and its log says why.
	t.Run("0666 passthrough", func(t *testing.T) {
		ns, asNobody := setup(t, 0o666)
		p := newApexPayload(t, 5000)
		alignZip(t, p.apk) // its partition is the file itself
		mnt, log := mountpoint("mnt-pt"), filepath.Join(mountpoint("log"), "log")
		r := asNobody(append(append([]string{"mount", "--log", log}, p.flags...), p.apk, p.idsig, testdata.ConfigPath, mnt)...)
		if r.code != 0 {
			t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
		}
		t.Cleanup(func() { ns.run("fusermount3", "-u", "-z", mnt) })
		want, _ := os.ReadFile(p.apk)
		if r := ns.run(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(mnt, "partitions", metadata.APKLabel)); r.code != 0 || r.stdout != string(want) {
			t.Errorf("the APK's partition as nobody: exit %d %s, or other bytes than the APK's", r.code, r.stderr)
		}
		b, _ := os.ReadFile(log)
		if line := logLine(string(b), "passthrough off"); !strings.Contains(line, "CAP_SYS_ADMIN") {
			t.Errorf("log: %s, want passthrough off for lack of CAP_SYS_ADMIN", b)
		}
	})
	t.Run("0600", func(t *testing.T) {
		_, asNobody := setup(t, 0o600)
		r := asNobody(append(append([]string{"mount"}, payloadArgs...), mountpoint("mnt600"))...)
		if r.code != exitMount || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "/dev/fuse") || !strings.Contains(r.stderr, "0600") {
			t.Errorf("mount as nobody with /dev/fuse 0600: exit %d: %q", r.code, r.stderr)
		}
	})
}

// killByExe kills every process running the binary at exe.
func killByExe(exe string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if target, err := os.Readlink(p); err == nil && target == exe {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
