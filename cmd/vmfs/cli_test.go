package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"go.uber.org/zap"

	"vmfs"
	"vmfs/internal/proc"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// vmfsBin is the vmfs binary built once for the tests that run it from outside.
var vmfsBin string

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], rawClientArg) {
		os.Exit(rawClient(strings.TrimPrefix(os.Args[1], rawClientArg)))
	}
	dir, err := os.MkdirTemp("", "vmfs-cli-test")
	if err != nil {
		panic(err)
	}
	vmfsBin = filepath.Join(dir, "vmfs")
	// No service answers here: the commands the tests run work on their own,
	// whatever service this machine runs, unless a test names one.
	os.Setenv("VMFS_SOCKET", filepath.Join(dir, "no-service.sock"))
	if out, err := exec.Command("go", "build", "-o", vmfsBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build vmfs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the vmfs binary.
type result struct {
	code           int
	stdout, stderr string
}

// runVmfs runs the binary with TMPDIR set to tmp (when non-empty) so that a test can
// check nothing is left there.
func runVmfs(t *testing.T, tmp string, args ...string) result {
	t.Helper()
	cmd := exec.Command(vmfsBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if tmp != "" {
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run vmfs: %v", err)
	}
	return r
}

// inProcess runs a command in this process, as main does but for the signals: for
// the commands that need no process of their own.
func inProcess(args ...string) result {
	var out, errb bytes.Buffer
	c := &command{stdout: &out, stderr: &errb, log: zap.NewNop()}
	code := c.exit(c.run(context.Background(), args))
	return result{code, out.String(), errb.String()}
}

// fixtureFlags point vmfs at the committed sample payload's APEXes and OS config.
func fixtureFlags() []string {
	return []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", testdata.OSDir()}
}

func fixtureArgs(extra ...string) []string {
	return append(append(fixtureFlags(), testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath), extra...)
}

func TestInspectJSON(t *testing.T) {
	r := inProcess(append([]string{"inspect", "--json"}, fixtureArgs()...)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var doc struct {
		Disks    map[string]layout.Description
		VMConfig struct {
			Kernel string
			Disks  []struct{ Image string }
		} `json:"vm_config"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, p := range doc.Disks["payload"].Partitions {
		labels = append(labels, p.Label)
		if p.Offset%4096 != 0 || p.Size%4096 != 0 {
			t.Errorf("%s at %d size %d: not 4 KiB aligned", p.Label, p.Offset, p.Size)
		}
	}
	want := "metadata microdroid-apex-0 microdroid-apex-1 microdroid-apex-2 microdroid-apk microdroid-apk-idsig"
	if strings.Join(labels, " ") != want {
		t.Errorf("labels %v, want %s", labels, want)
	}
	if n := len(doc.VMConfig.Disks); n != 2 || !strings.HasSuffix(doc.VMConfig.Disks[n-1].Image, "/payload.composite") {
		t.Errorf("vm config disks %+v: want the OS disk then the payload composite", doc.VMConfig.Disks)
	}
	if doc.VMConfig.Kernel != filepath.Join(testdata.OSDir(), "kernel") {
		t.Errorf("kernel %q not resolved against the OS config's directory", doc.VMConfig.Kernel)
	}
}

func TestVerify(t *testing.T) {
	if r := inProcess("verify", testdata.APKPath(), testdata.IdsigPath()); r.code != 0 || r.stdout != "OK\n" {
		t.Errorf("good pair: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	apk, err := os.ReadFile(testdata.APKPath())
	if err != nil {
		t.Fatal(err)
	}
	apk[len(apk)/2] ^= 1
	bad := filepath.Join(t.TempDir(), "flipped.apk")
	os.WriteFile(bad, apk, 0o644)
	r := inProcess("verify", bad, testdata.IdsigPath())
	if r.code != exitFailure || !strings.Contains(r.stderr, bad) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("flipped byte: exit %d, stderr %q", r.code, r.stderr)
	}
}

// flagLine is a flag's line in --help: its names, then its argument placeholder (which
// pflag takes from the first backquoted words of the usage when there are any, spaces
// and all), then at least two spaces before the usage.
var flagLine = regexp.MustCompile(`^\s+(?:-\w, )?--[a-z0-9-]+(\[=[^\]]*\])?(?: (.*?))?\s{2,}\S`)

// pflagTypes are the placeholders pflag writes for the flag types vmfs uses.
var pflagTypes = []string{"string", "stringArray", "int", "uint32", "duration"}

// upperWord is a placeholder named on purpose (`FILE` in a usage).
var upperWord = regexp.MustCompile(`^[A-Z][A-Z_]*$`)

// TestHelpArgumentNames: in every command's --help, a flag's argument is named by
// its type or an upper-case word, never by words of its usage (pflag reads a
// backquoted phrase as the argument's name: `--debug vm run-app --debug`).
func TestHelpArgumentNames(t *testing.T) {
	for _, s := range subcommands {
		r := runVmfs(t, "", s.name, "--help")
		if r.code != 0 {
			t.Errorf("%s --help: exit %d: %s", s.name, r.code, r.stderr)
			continue
		}
		_, flags, ok := strings.Cut(r.stdout, "\nFlags:\n")
		if !ok {
			t.Errorf("%s --help: no Flags: section in %q", s.name, r.stdout)
			continue
		}
		for _, line := range strings.Split(flags, "\n") {
			if line == "" {
				continue
			}
			m := flagLine.FindStringSubmatch(line)
			switch {
			case m == nil:
				t.Errorf("%s --help: not a flag line: %q", s.name, line)
			case m[1] != "" && m[2] != "":
				t.Errorf("%s --help: %q: an optional value and an argument", s.name, line)
			case m[2] != "" && !slices.Contains(pflagTypes, m[2]) && !upperWord.MatchString(m[2]):
				t.Errorf("%s --help: argument named %q: %q", s.name, m[2], line)
			}
		}
	}
}

// leftovers lists what a failed or finished command must not leave: vmfs mounts and
// processes of this test binary's vmfs (other vmfs runs may share the machine),
// and files in its TMPDIR. Mounts in keep are the test's own.
func leftovers(t *testing.T, tmp string, keep ...string) []string {
	t.Helper()
	var left []string
	ms, err := vmfs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	testDirs := filepath.Dir(t.TempDir())
	var kept []int // the kept mounts' processes, and their children (a service's mount helper)
	for _, m := range ms {
		if slices.Contains(keep, m.Dir) {
			kept = append(append(kept, m.Pid), children(m.Pid, "")...)
		}
	}
	for _, m := range ms {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", m.Pid))
		if (exe == vmfsBin || strings.HasPrefix(m.Dir, testDirs)) && !slices.Contains(keep, m.Dir) {
			left = append(left, "mount "+m.Dir)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err != nil || exe != vmfsBin {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if !slices.Contains(kept, pid) {
			left = append(left, "process "+p)
		}
	}
	if tmp != "" {
		names, _ := os.ReadDir(tmp)
		for _, n := range names {
			left = append(left, "temp file "+n.Name())
		}
	}
	return left
}

// children are the pids of pid's children whose command is comm (as the
// kernel keeps it: 15 bytes; "": every child).
func children(pid int, comm string) []int {
	comm = comm[:min(len(comm), 15)]
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		kids, _ := os.ReadFile(task + "/children")
		for _, c := range strings.Fields(string(kids)) {
			if name, _ := os.ReadFile("/proc/" + c + "/comm"); comm == "" || strings.TrimSpace(string(name)) == comm {
				n, _ := strconv.Atoi(c)
				out = append(out, n)
			}
		}
	}
	return out
}

func TestMountLifecycle(t *testing.T) {
	testdata.RequireFUSE(t)
	mnt, tmp := t.TempDir(), t.TempDir()
	r := runVmfs(t, tmp, append([]string{"mount"}, fixtureArgs(mnt)...)...)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
	apk, err := os.ReadFile(filepath.Join(mnt, "partitions", metadata.APKLabel))
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(testdata.APKPath())
	if !bytes.HasPrefix(apk, orig) || len(apk)%4096 != 0 || len(bytes.Trim(apk[len(orig):], "\x00")) != 0 {
		t.Error("partitions/microdroid-apk is not the APK then zeros to 4 KiB")
	}
	var vm struct{ Disks []struct{ Image string } }
	b, _ := os.ReadFile(filepath.Join(mnt, "vm.json"))
	if err := json.Unmarshal(b, &vm); err != nil || vm.Disks[len(vm.Disks)-1].Image != filepath.Join(mnt, "payload.composite") {
		t.Errorf("vm.json %s: %v", b, err)
	}
	if r := runVmfs(t, "", "list"); !strings.Contains(r.stdout, mnt) || !strings.Contains(r.stdout, testdata.APKPath()) {
		t.Errorf("list: %q", r.stdout)
	}
	if r := runVmfs(t, "", append([]string{"mount"}, fixtureArgs(mnt)...)...); r.code != exitMount || !strings.Contains(r.stderr, "already a vmfs mount") {
		t.Errorf("mount twice: exit %d %q", r.code, r.stderr)
	}
	if r := runVmfs(t, "", "unmount", mnt); r.code != 0 {
		t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestUnmountAfterKill(t *testing.T) {
	testdata.RequireFUSE(t)
	mnt := t.TempDir()
	if r := runVmfs(t, "", append([]string{"mount"}, fixtureArgs(mnt)...)...); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) }) // in case the test fails
	m, err := vmfs.Status(context.Background(), mnt)
	if err != nil || m == nil {
		t.Fatalf("mount not in mountinfo: %v", err)
	}
	syscall.Kill(m.Pid, syscall.SIGKILL)
	if !proc.WaitExit(m.Pid, time.Minute) {
		t.Fatal("the server survived SIGKILL")
	}
	// Depending on timing the kernel answers ECONNABORTED, EIO or ENOTCONN; never data.
	if _, err := os.Stat(filepath.Join(mnt, "payload.img")); err == nil {
		t.Fatal("a mount whose server was killed still answers")
	}
	if m, _ := vmfs.Status(context.Background(), mnt); m == nil {
		t.Fatal("the killed server's mount vanished by itself; nothing left to recover")
	}
	if r := runVmfs(t, "", "unmount", mnt); r.code != 0 {
		t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	if left := leftovers(t, ""); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestStreamingCost streams a 3 GiB payload disk through a background vmfs server:
// the server writes nothing to disk and its peak RSS stays small.
func TestStreamingCost(t *testing.T) {
	testdata.RequireFUSE(t)
	if testing.Short() {
		t.Skip("skipped when testing.Short(): streams 3 GiB")
	}
	dir, mnt := t.TempDir(), t.TempDir()
	apk := filepath.Join(dir, "large.apk")
	cfg := `{"os":{"name":"microdroid"},"apexes":[{"name":"com.android.adbd"}]}`
	if err := testdata.WriteLargeAPK(apk, 3<<30, []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	r := runVmfs(t, "", append(append([]string{"mount"}, fixtureFlags()...), apk, testdata.IdsigPath(), testdata.ConfigPath, mnt)...)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
	m, err := vmfs.Status(context.Background(), mnt)
	if err != nil || m == nil {
		t.Fatalf("mount not found: %v", err)
	}
	ioBefore := procField(t, m.Pid, "io", "write_bytes")
	f, err := os.Open(filepath.Join(mnt, "payload.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err != nil {
			break
		}
	}
	if total < 3<<30 {
		t.Fatalf("read %d bytes", total)
	}
	written := procField(t, m.Pid, "io", "write_bytes") - ioBefore
	hwm := procField(t, m.Pid, "status", "VmHWM") // KiB
	t.Logf("streamed %d MiB: server wrote %d bytes, peak RSS %d KiB", total>>20, written, hwm)
	if written > 64<<10 {
		t.Errorf("server wrote %d bytes to storage while serving reads", written)
	}
	if hwm > 64<<10 {
		t.Errorf("server peak RSS %d KiB > 64 MiB", hwm)
	}
}

// procField reads a numeric field of /proc/<pid>/<file> ("name: value" lines).
func procField(t *testing.T, pid int, file, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			var n int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &n)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/%s", name, pid, file)
	return 0
}
