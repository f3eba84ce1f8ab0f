package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/internal/proc"
	"vmfs/internal/wire"
	"vmfs/metadata"
	"vmfs/service"
	"vmfs/testdata"
)

// serveProc is a `vmfs serve` the test runs, over the fixtures' APEXes and the
// test guest, in a directory every user may search.
type serveProc struct {
	t              *testing.T
	dir, mnt, sock string
	r              *running
	stopped        bool
}

func startServe(t *testing.T, extra ...string) *serveProc {
	t.Helper()
	return startServeIn(t, testdata.PublicDir(t), extra...)
}

// startServeIn starts a service in dir, its mount at dir/mnt and its socket at
// dir/vmfs.sock, and returns once it serves. It is stopped with the test.
func startServeIn(t *testing.T, dir string, extra ...string) *serveProc {
	t.Helper()
	testdata.RequireRoot(t) // a service mounts for every user
	s := &serveProc{t: t, dir: dir, mnt: filepath.Join(dir, "mnt"), sock: filepath.Join(dir, "vmfs.sock")}
	s.r = start(t, "", append(serveArgs(t, s.mnt, s.sock, filepath.Join(dir, "cids")), extra...)...)
	s.r.waitFor(t, "serving")
	t.Cleanup(func() {
		if !s.stopped {
			s.r.cmd.Process.Signal(syscall.SIGTERM)
			s.r.exit(t, time.Minute)
		}
	})
	return s
}

// serveArgs run a service with its mount at mnt, its socket at sock and its
// CIDs locked in cids. Its APEXes and OS directory are copies every user may
// read, as a service's are: a mount lets no one read more than its sources,
// and a VMM runs with its client's rights.
func serveArgs(t *testing.T, mnt, sock, cids string) []string {
	apexes := testdata.PublicCopy(t, testdata.Dir(), "apex-info-list.xml", "apex")
	guest := testdata.PublicCopy(t, guestDir(t), "microdroid.json", "vmlinuz", "initramfs.cpio.gz")
	return []string{"serve", "--dir", mnt, "--socket", sock, "--apex-info-list", filepath.Join(apexes, "apex-info-list.xml"),
		"--os-dir", guest, "--vmm", "qemu", "--cid-dir", cids}
}

// stop sends the service sig and returns its exit code.
func (s *serveProc) stop(sig syscall.Signal) int {
	s.t.Helper()
	s.stopped = true
	s.r.cmd.Process.Signal(sig)
	return s.r.exit(s.t, 2*time.Minute)
}

// vmfs runs a command as a client of the service.
func (s *serveProc) vmfs(args ...string) result {
	s.t.Helper()
	return runVmfs(s.t, "", append(args, "--socket", s.sock)...)
}

// runApp starts a run-app client of the service that boots the payload of apk
// and idsig as name, requiring a passing verdict; the console goes to the file
// returned.
func (s *serveProc) runApp(name, apk, idsig string) (*running, string) {
	s.t.Helper()
	console := filepath.Join(s.t.TempDir(), name+".console")
	return start(s.t, "", "run-app", "--socket", s.sock, "--name", name, "--require-verdict", "--console", console,
		"--timeout", "3m", apk, idsig, testdata.ConfigPath), console
}

// listed is a row of `vmfs list` through the service.
type listed struct {
	cid, pid             int
	state, apk, instance string
}

// list runs `vmfs list` through the service and returns its rows by name.
func (s *serveProc) list() map[string]listed {
	s.t.Helper()
	r := s.vmfs("list")
	if r.code != 0 {
		s.t.Fatalf("list: exit %d: %s", r.code, r.stderr)
	}
	rows := map[string]listed{}
	for _, line := range strings.Split(r.stdout, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 7 {
			break // the mounts of servers of their own follow
		}
		cid, _ := strconv.Atoi(f[1])
		pid, _ := strconv.Atoi(f[2])
		rows[f[0]] = listed{cid: cid, pid: pid, state: strings.Join(f[3:len(f)-3], " "), apk: f[len(f)-2], instance: f[len(f)-1]}
	}
	return rows
}

var startedPid = regexp.MustCompile(`"pid": (\d+)`)

// vmStarted waits for a run-app client to say its VM started and returns the
// VMM's pid.
func vmStarted(t *testing.T, r *running) int {
	t.Helper()
	m := startedPid.FindStringSubmatch(r.waitFor(t, "vm started"))
	if m == nil {
		t.Fatalf("no pid in the started line:\n%s", r.output())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// hold stops the VMMs (SIGSTOP), so that they surely still run while the test
// looks at them; release lets them go on.
func hold(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGSTOP)
		if !testdata.Eventually(t, 10*time.Second, func() bool { return proc.State(pid) == 'T' }) {
			t.Fatalf("vmm %d not stopped", pid)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	}
}

func release(pids ...int) {
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
}

// passed waits for a run-app client and checks that it exited 0 with the
// guest's verdict passing in its console.
func passed(t *testing.T, name string, r *running, console string) {
	t.Helper()
	code := r.exit(t, 3*time.Minute)
	out, _ := os.ReadFile(console)
	if code != 0 || !strings.Contains(string(out), `"ok":true,"checks"`) {
		t.Errorf("%s: exit %d, want a passing verdict:\n%s\nconsole:\n%s", name, code, r.output(), out)
	}
}

// copyFile copies src to a new file dst of mode and returns dst.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestServeConcurrentRunApps: two run-app clients boot two payloads (the same
// bytes in different files) in one service at once; list shows both VMs with
// their CIDs while they run, and both guests pass. Then vmfs stop ends one VM
// and the other goes on to pass; the payloads made for the runs are gone after.
func TestServeConcurrentRunApps(t *testing.T) {
	s := startServe(t)
	other := testdata.PublicDir(t)
	apk2, idsig2 := copyFile(t, testdata.APKPath(), filepath.Join(other, "app.apk"), 0o644), copyFile(t, testdata.IdsigPath(), filepath.Join(other, "app.apk.idsig"), 0o644)

	a, ca := s.runApp("a", testdata.APKPath(), testdata.IdsigPath())
	b, cb := s.runApp("b", apk2, idsig2)
	pa, pb := vmStarted(t, a), vmStarted(t, b)
	hold(t, pa, pb)
	rows := s.list()
	if ra, rb := rows["a"], rows["b"]; ra.pid != pa || rb.pid != pb || ra.cid < 10 || rb.cid < 10 || ra.cid == rb.cid ||
		ra.state != service.VMRunning || rb.apk != apk2 {
		t.Errorf("list while both run: %+v", rows)
	}
	release(pa, pb)
	passed(t, "a", a, ca)
	passed(t, "b", b, cb)

	c, _ := s.runApp("c", testdata.APKPath(), testdata.IdsigPath())
	d, cd := s.runApp("d", apk2, idsig2)
	pc, pd := vmStarted(t, c), vmStarted(t, d)
	hold(t, pc, pd) // c ends by SIGKILL after the grace then: it cannot have ended by itself
	if r := s.vmfs("stop", "c"); r.code != 0 {
		t.Errorf("stop c: exit %d: %s", r.code, r.stderr)
	}
	if code := c.exit(t, time.Minute); code != exitFailure || !strings.Contains(c.output(), "stopped by vmfs stop") {
		t.Errorf("the stopped run: exit %d:\n%s", code, c.output())
	}
	if rows := s.list(); len(rows) != 1 || rows["d"].pid != pd || proc.State(pd) != 'T' {
		t.Errorf("list after stopping c: %+v, want d alone, still there", rows)
	}
	release(pd)
	passed(t, "d", d, cd)
	if rows := s.list(); len(rows) != 0 {
		t.Errorf("payloads left once the runs ended: %+v", rows)
	}
}

// TestServeNonRoot: with a second user (nobody) allowed on the socket, each
// user's payload is theirs: nobody reads its own, cannot read root's nor list
// the mount, sees only its own in list, and cannot stop root's VM by CID or
// name. And nobody cannot make the service open a file by path: the paths in a
// request are names only, and a descriptor that reads nothing (O_PATH, which
// nobody can get for a file it may not read) is refused.
func TestServeNonRoot(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	pub := testdata.PublicDir(t)
	apk, idsig := copyFile(t, testdata.APKPath(), filepath.Join(pub, "app.apk"), 0o644), copyFile(t, testdata.IdsigPath(), filepath.Join(pub, "app.apk.idsig"), 0o644)
	// Root's payload is world-readable too: only its owner keeps nobody out of it.
	rootAPK, rootIdsig := copyFile(t, apk, filepath.Join(pub, "root.apk"), 0o644), copyFile(t, idsig, filepath.Join(pub, "root.apk.idsig"), 0o644)
	nobody, asNobody := a.run, a.vmfs

	if r := s.vmfs("mount", "--name", "roots", rootAPK, rootIdsig, testdata.ConfigPath); r.code != 0 {
		t.Fatalf("mount as root: exit %d: %s", r.code, r.stderr)
	}
	r := asNobody("mount", "--name", "mine", apk, idsig, testdata.ConfigPath)
	if r.code != 0 || strings.TrimSpace(r.stdout) != filepath.Join(s.mnt, "mine") {
		t.Fatalf("mount as nobody: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	mine, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(s.mnt, "mine", "partitions", metadata.APKLabel))
	want, _ := os.ReadFile(testdata.APKPath())
	if err != nil || !bytes.HasPrefix(mine, want) {
		t.Errorf("nobody reads its own payload: %v", err)
	}
	if _, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(s.mnt, "roots", "vm.json")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("nobody reads root's payload: %v, want a permission error", err)
	}
	if r := nobody("ls", s.mnt); r.code == 0 {
		t.Errorf("nobody lists the service's mount: %s", r.stdout)
	}
	if r := asNobody("list"); !strings.Contains(r.stdout, "mine") || strings.Contains(r.stdout, "roots") {
		t.Errorf("list as nobody: %q", r.stdout)
	}
	if r := asNobody("unmount", "roots"); r.code == 0 {
		t.Error("nobody removed root's payload")
	}

	vm, console := s.runApp("rootvm", testdata.APKPath(), testdata.IdsigPath())
	pid := vmStarted(t, vm)
	hold(t, pid)
	cid := s.list()["rootvm"].cid
	for _, target := range []string{strconv.Itoa(cid), "rootvm"} {
		if r := asNobody("stop", target); r.code != exitFailure || !strings.Contains(r.stderr, "no VM of uid 65534") {
			t.Errorf("nobody stops root's VM %s: exit %d: %s", target, r.code, r.stderr)
		}
	}
	if row := s.list()["rootvm"]; row.pid != pid || proc.State(pid) != 'T' {
		t.Errorf("root's VM after nobody's stops: %+v", row)
	}
	release(pid)
	passed(t, "rootvm", vm, console)

	secret := copyFile(t, testdata.APKPath(), filepath.Join(pub, "secret.apk"), 0o600)
	raw := func(mode string) string {
		t.Helper()
		r := nobody(append([]string{a.test}, rawClientArgs(s.sock, mode, secret, idsig)...)...)
		return r.stdout + r.stderr
	}
	if out := raw("paths"); !strings.Contains(out, "opens no path") {
		t.Errorf("request naming files nobody may not read: %s", out)
	}
	if out := raw("o_path"); !strings.Contains(out, "not open for reading") {
		t.Errorf("O_PATH descriptor of a file nobody may not read: %s", out)
	}
	if r := asNobody("mount", secret, idsig, testdata.ConfigPath); r.code != exitInput || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("mount of a file nobody may not read: exit %d: %s", r.code, r.stderr)
	}
	if rows := s.list(); len(rows) != 2 {
		t.Errorf("payloads after nobody's attempts: %+v, want roots and mine", rows)
	}
}

// rawClientArg, the test binary's first argument, makes it a raw client of a
// service (see rawClient).
const rawClientArg = "vmfs-test-raw-client="

func rawClientArgs(sock, mode, apk, idsig string) []string {
	return []string{rawClientArg + strings.Join([]string{sock, mode, apk, idsig}, ",")}
}

// rawClient, run by TestMain when the test binary is given rawClientArgs,
// asks the service to add a payload the way the vmfs client never does: naming
// the files only ("paths"), or sending O_PATH descriptors ("o_path"). It prints
// the service's reply. The rawModes take their arguments after rawClientArgs.
func rawClient(arg string) int {
	a := strings.Split(arg, ",")
	sock, mode, apk, idsig := a[0], a[1], a[2], a[3]
	if run, ok := rawModes[mode]; ok {
		return run(sock, os.Args[2:])
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	conn := wire.New(c.(*net.UnixConn))
	req := map[string]any{"op": "add", "apk": apk, "idsig": idsig, "config_path": testdata.ConfigPath}
	var files []*os.File
	if mode == "o_path" {
		for _, p := range []string{apk, idsig} {
			fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				fmt.Println(err)
				return 1
			}
			files = append(files, os.NewFile(uintptr(fd), p))
		}
		req["files"] = []string{"apk", "idsig"}
	}
	if err := conn.Send(req, files, time.Minute); err != nil {
		fmt.Println(err)
		return 1
	}
	var rep map[string]any
	if _, err := conn.Receive(&rep, time.Minute); err != nil {
		fmt.Println(err)
		return 1
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	return 0
}

// TestServeLifecycle: SIGTERM stops the service in order, with a VM running and
// a payload exposed at a mountpoint: the VMM is gone, every mount and the socket
// too, and the exit is 0. After SIGKILL, `vmfs unmount --dir` recovers the
// dead mounts, and the next service takes the stale socket over.
func TestServeLifecycle(t *testing.T) {
	dir := testdata.PublicDir(t)
	s := startServeIn(t, dir)
	mp := testdata.PublicDir(t)
	if r := s.vmfs("mount", "--name", "bound", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, mp); r.code != 0 {
		t.Fatalf("mount at %s: exit %d: %s", mp, r.code, r.stderr)
	}
	if m, err := vmfs.ReadManifest(mp); err != nil || m.Dir != filepath.Join(s.mnt, "bound") {
		t.Errorf("the mountpoint does not show the payload: %+v %v", m, err)
	}
	// A service's VMMs cannot open the originals by path: no --via.
	if r := s.vmfs("run-app", "-d", "--via", "extents", "--console", "/dev/null", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath); r.code != exitUsage || !strings.Contains(r.stderr, "--via: not through a vmfs service") {
		t.Errorf("run-app --via through the service: exit %d: %s", r.code, r.stderr)
	}
	r := s.vmfs("run-app", "-d", "--name", "detached", "--console", "/dev/null", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "detached ") {
		t.Fatalf("run-app -d: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	vmm := s.list()["detached"].pid
	hold(t, vmm) // still running when the service stops
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}
	if !proc.WaitExit(vmm, time.Minute) {
		t.Errorf("vmm %d outlived the service", vmm)
	}
	for _, d := range []string{s.mnt, mp} {
		if m, _ := fusedisk.MountAt(d); m != nil {
			t.Errorf("%s still mounted: %+v", d, m)
		}
	}
	if _, err := os.Lstat(s.sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after SIGTERM: %v", err)
	}

	s = startServeIn(t, dir)
	if r := s.vmfs("mount", "--name", "bound", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, mp); r.code != 0 {
		t.Fatalf("mount again: exit %d: %s", r.code, r.stderr)
	}
	s.stop(syscall.SIGKILL)
	if r := runVmfs(t, "", "unmount", "--dir", s.mnt); r.code != 0 || !strings.Contains(r.stderr, mp) {
		t.Errorf("unmount --dir after SIGKILL: exit %d: %s", r.code, r.stderr)
	}
	for _, d := range []string{s.mnt, mp} {
		if m, _ := fusedisk.MountAt(d); m != nil {
			t.Errorf("%s still mounted after unmount --dir: %+v", d, m)
		}
	}
	if _, err := os.Lstat(s.sock); err != nil {
		t.Fatalf("no stale socket to take over: %v", err)
	}
	s = startServeIn(t, dir)
	if !strings.Contains(s.r.output(), "removing the socket a killed service left") {
		t.Errorf("the next service did not say it took the stale socket over:\n%s", s.r.output())
	}
	if r := s.vmfs("list"); r.code != 0 {
		t.Errorf("list after the takeover: exit %d: %s", r.code, r.stderr)
	}
}

// TestServeKeptPayload: a payload added by mount boots through run-app --mount
// and stays after the VM ends, until unmount removes it; `vmfs run` boots a raw
// VM config whose files the client sends, here a copy of that payload's disk.
func TestServeKeptPayload(t *testing.T) {
	s := startServe(t)
	r := s.vmfs("mount", "--name", "kept", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	dir := strings.TrimSpace(r.stdout)
	if r := s.vmfs("run-app", "--mount", "kept", "--require-verdict", "--console", "/dev/null", "--timeout", "3m"); r.code != 0 {
		t.Errorf("run-app --mount kept: exit %d: %s", r.code, r.stderr)
	}
	if row, ok := s.list()["kept"]; !ok || row.state != "served" {
		t.Errorf("the payload after its VM ended: %+v, want it served still", row)
	}

	tmp := t.TempDir()
	cfgPath := rawVMConfig(t, tmp, copyFile(t, filepath.Join(dir, "payload.img"), filepath.Join(tmp, "payload.img"), 0o644))
	console := filepath.Join(tmp, "console")
	if r := s.vmfs("run", "--require-verdict", "--console", console, "--timeout", "3m", cfgPath); r.code != 0 {
		out, _ := os.ReadFile(console)
		t.Errorf("run %s: exit %d: %s\n%s", cfgPath, r.code, r.stderr, out)
	}

	if r := s.vmfs("unmount", "kept"); r.code != 0 {
		t.Errorf("unmount kept: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after unmount: %v", dir, err)
	}
}

// TestServeClientInterrupt: Ctrl-C in an attached run-app client stops its VM:
// the client exits 130, the VMM goes, and so does the payload made for the run.
func TestServeClientInterrupt(t *testing.T) {
	s := startServe(t)
	r, _ := s.runApp("interrupted", testdata.APKPath(), testdata.IdsigPath())
	vmm := vmStarted(t, r)
	r.cmd.Process.Signal(syscall.SIGINT)
	if code := r.exit(t, time.Minute); code != 130 {
		t.Errorf("the interrupted client: exit %d, want 130:\n%s", code, r.output())
	}
	if !proc.WaitExit(vmm, time.Minute) {
		t.Errorf("vmm %d outlived its interrupted client", vmm)
	}
	// The service cleans up once it sees the VMM gone, after the client left.
	if !testdata.Eventually(t, time.Minute, func() bool { return len(s.list()) == 0 }) {
		t.Errorf("left after the interrupted run: %+v", s.list())
	}
}
