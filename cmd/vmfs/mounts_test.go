package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/testdata"
)

// pinner is a process of nobody's in a user and mount namespace of its own
// (unshare -Urm: any local user may make one). Its namespace holds a copy of
// every mount the test sees, which keeps their FUSE connections up whatever the
// servers unmount in theirs.
type pinner struct {
	t     *testing.T
	stdin io.WriteCloser
	out   *bufio.Reader
}

// pin starts a pinner that keeps file open (when not "") and returns once its
// namespace holds the mount at mnt.
func pin(t *testing.T, mnt, file string) *pinner {
	t.Helper()
	setpriv, unshare := testdata.RequireTool(t, "setpriv"), testdata.RequireTool(t, "unshare")
	n := strconv.Itoa(testdata.Nobody)
	// On a line from the test, it reads file again and says how that went.
	script := `if [ -n "$1" ]; then exec 3<"$1"; fi; echo ready; read x; cat "$1" 2>&1 >/dev/null; echo "exit $?"`
	cmd := exec.Command(setpriv, "--reuid="+n, "--regid="+n, "--clear-groups", unshare, "-Urm", "sh", "-c", script, "sh", file)
	p := &pinner{t: t}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p.out = bufio.NewReader(stdout)
	if line, err := p.out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("the pinner did not start: %q %v", line, err)
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", cmd.Process.Pid))
	if err != nil || !strings.Contains(string(mi), " "+mnt+" ") {
		t.Fatalf("the pinner's namespace holds no copy of %s: %v\n%s", mnt, err, mi)
	}
	return p
}

// readAgain has the pinner read its file again and returns what it said.
func (p *pinner) readAgain() string {
	p.t.Helper()
	fmt.Fprintln(p.stdin)
	b, _ := io.ReadAll(p.out)
	return string(b)
}

// TestServePinnedByUserNamespace: nobody, with no access to the socket, copies
// the service's mount into a user namespace of its own and keeps a file of it
// open, and the test keeps one open here too. SIGTERM still ends the service
// within 10 s, exit 0, its mount gone from this namespace; the copy and the
// open file are cut off: their reads fail with ENOTCONN.
func TestServePinnedByUserNamespace(t *testing.T) {
	s := startServe(t)
	manifest := filepath.Join(s.mnt, vmfs.ManifestName)
	p := pin(t, s.mnt, manifest)
	open, err := os.Open(manifest)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	s.stopped = true
	s.r.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.r.exit(t, 10*time.Second); code != 0 {
		t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}
	if m, _ := fusedisk.MountAt(s.mnt); m != nil {
		t.Errorf("%s still mounted: %+v", s.mnt, m)
	}
	if out := p.readAgain(); !strings.Contains(out, "not connected") || strings.Contains(out, "exit 0") {
		t.Errorf("the pinned copy after the service stopped: %q, want ENOTCONN", out)
	}
	if _, err := open.Read(make([]byte, 1)); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("a file left open here after the service stopped: read %v, want ENOTCONN", err)
	}
}

// TestMountPinnedByUserNamespace: the same for a server of its own (`vmfs
// mount`): a copy of its mount in nobody's user namespace does not keep it from
// ending on SIGTERM, exit 0, its mount gone.
func TestMountPinnedByUserNamespace(t *testing.T) {
	testdata.RequireRoot(t) // nobody's namespace copies root's mounts
	mnt := testdata.PublicDir(t)
	r := start(t, "", append([]string{"mount", "--foreground"}, fixtureArgs(mnt)...)...)
	r.waitFor(t, "mounted; serving")
	pin(t, mnt, "")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.exit(t, 10*time.Second); code != 0 {
		t.Errorf("server after SIGTERM: exit %d:\n%s", code, r.output())
	}
	if m, _ := fusedisk.MountAt(mnt); m != nil {
		t.Errorf("%s still mounted: %+v", mnt, m)
	}
}

// TestMountMovedMountpoint: a server of its own mounted through a symlink,
// whose mountpoint's parent is then renamed, still unmounts itself on SIGTERM.
func TestMountMovedMountpoint(t *testing.T) {
	testdata.RequireFUSE(t)
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(base, "a", "mp"), 0o755)
	link := filepath.Join(base, "link")
	os.Symlink(filepath.Join(base, "a", "mp"), link)
	r := start(t, "", append([]string{"mount", "--foreground"}, fixtureArgs(link)...)...)
	r.waitFor(t, "mounted; serving")
	moved := filepath.Join(base, "b", "mp")
	t.Cleanup(func() { syscall.Unmount(moved, syscall.MNT_DETACH) }) // in case the test fails
	if err := os.Rename(filepath.Join(base, "a"), filepath.Join(base, "b")); err != nil {
		t.Fatal(err)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.exit(t, 10*time.Second); code != 0 {
		t.Errorf("server after SIGTERM: exit %d:\n%s", code, r.output())
	}
	if m, _ := fusedisk.MountAt(moved); m != nil {
		t.Errorf("%s still mounted: %+v", moved, m)
	}
}

// TestServeRenamedMountpoint: a payload exposed at a mountpoint whose parent is
// renamed is still found where it is now: list shows it there, unmount by name
// or by the new path removes it, and SIGTERM then ends the service at once.
// After SIGKILL, unmount --dir finds the renamed mount too.
func TestServeRenamedMountpoint(t *testing.T) {
	base := testdata.PublicDir(t)
	s := startServe(t)
	// expose adds name exposed at base/parent/mp, renames parent to moved, and
	// returns where the mountpoint is now.
	expose := func(s *serveProc, name, parent, moved string) string {
		t.Helper()
		mp := filepath.Join(base, parent, "mp")
		if err := os.MkdirAll(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		if r := s.vmfs("mount", "--name", name, testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, mp); r.code != 0 {
			t.Fatalf("mount %s at %s: exit %d: %s", name, mp, r.code, r.stderr)
		}
		if err := os.Rename(filepath.Join(base, parent), filepath.Join(base, moved)); err != nil {
			t.Fatal(err)
		}
		now := filepath.Join(base, moved, "mp")
		t.Cleanup(func() { syscall.Unmount(now, syscall.MNT_DETACH) }) // in case the test fails
		return now
	}
	x, y := expose(s, "x", "a", "b"), expose(s, "y", "c", "d")
	if rows := s.list(); rows["x"].state != "served at "+x || rows["y"].state != "served at "+y {
		t.Errorf("list after the renames: %+v, want x at %s, y at %s", rows, x, y)
	}
	if r := s.vmfs("unmount", "x"); r.code != 0 {
		t.Errorf("unmount x: exit %d: %s", r.code, r.stderr)
	}
	if r := s.vmfs("unmount", y); r.code != 0 {
		t.Errorf("unmount %s: exit %d: %s", y, r.code, r.stderr)
	}
	for _, d := range []string{x, y} {
		if m, _ := fusedisk.MountAt(d); m != nil {
			t.Errorf("%s still mounted after unmount: %+v", d, m)
		}
	}
	s.stopped = true
	s.r.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.r.exit(t, 10*time.Second); code != 0 {
		t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}

	s = startServe(t)
	z := expose(s, "z", "e", "f")
	s.stop(syscall.SIGKILL)
	if r := runVmfs(t, "", "unmount", "--dir", s.mnt); r.code != 0 || !strings.Contains(r.stderr, z) {
		t.Errorf("unmount --dir after SIGKILL: exit %d: %s", r.code, r.stderr)
	}
	for _, d := range []string{s.mnt, z} {
		if m, _ := fusedisk.MountAt(d); m != nil {
			t.Errorf("%s still mounted after unmount --dir: %+v", d, m)
		}
	}
}

// TestSymlinkedMountpoint: a mount made through a symlink is found through it:
// run-app --mount and unmount take the link, for a server of its own and for a
// payload a service exposes.
func TestSymlinkedMountpoint(t *testing.T) {
	link := func(t *testing.T, target string) string {
		t.Helper()
		l := filepath.Join(testdata.PublicDir(t), "link")
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	t.Run("mount", func(t *testing.T) {
		testdata.RequireFUSE(t)
		mnt := t.TempDir()
		l := link(t, mnt)
		if r := runVmfs(t, "", append([]string{"mount", "--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", guestDir(t)},
			testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, l)...); r.code != 0 {
			t.Fatalf("mount at %s: exit %d: %s", l, r.code, r.stderr)
		}
		t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
		if r := runVmfs(t, "", "run-app", "--vmm", "qemu", "--dry-run", "--mount", l); r.code != 0 || !strings.Contains(r.stdout, "qemu-system") {
			t.Errorf("run-app --mount %s: exit %d: %s%s", l, r.code, r.stdout, r.stderr)
		}
		if r := runVmfs(t, "", "unmount", l); r.code != 0 {
			t.Errorf("unmount %s: exit %d: %s", l, r.code, r.stderr)
		}
		if m, _ := fusedisk.MountAt(mnt); m != nil {
			t.Errorf("%s still mounted: %+v", mnt, m)
		}
	})
	t.Run("serve", func(t *testing.T) {
		s := startServe(t)
		mp := testdata.PublicDir(t)
		l := link(t, mp)
		t.Cleanup(func() { syscall.Unmount(mp, syscall.MNT_DETACH) }) // in case the test fails
		if r := s.vmfs("mount", "--name", "linked", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath, l); r.code != 0 {
			t.Fatalf("mount at %s: exit %d: %s", l, r.code, r.stderr)
		}
		if r := s.vmfs("run-app", "--dry-run", "--mount", l); r.code != 0 || !strings.Contains(r.stdout, "qemu-system") {
			t.Errorf("run-app --mount %s: exit %d: %s%s", l, r.code, r.stdout, r.stderr)
		}
		if r := s.vmfs("unmount", l); r.code != 0 {
			t.Errorf("unmount %s: exit %d: %s", l, r.code, r.stderr)
		}
		if m, _ := fusedisk.MountAt(mp); m != nil {
			t.Errorf("%s still mounted: %+v", mp, m)
		}
		if rows := s.list(); len(rows) != 0 {
			t.Errorf("payloads left: %+v", rows)
		}
	})
}

// TestServeLockFile: <socket>.lock belongs to the service that holds it. A
// second serve on the socket is refused and leaves the directory as it was (the
// first's lock file included); a serve refused for its mount directory leaves
// no lock file; a service that stops removes its own.
func TestServeLockFile(t *testing.T) {
	dir := testdata.PublicDir(t)
	s := startServeIn(t, dir)
	lock := s.sock + ".lock"
	snapshot := func() []string {
		t.Helper()
		var names []string
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			var st syscall.Stat_t
			syscall.Lstat(filepath.Join(dir, e.Name()), &st)
			names = append(names, fmt.Sprintf("%s:%d", e.Name(), st.Ino))
		}
		return names
	}
	before := snapshot()
	if !slices.ContainsFunc(before, func(n string) bool { return strings.HasPrefix(n, filepath.Base(lock)+":") }) {
		t.Fatalf("no lock file while serving: %v", before)
	}
	r := runVmfs(t, "", serveArgs(t, filepath.Join(dir, "mnt2"), s.sock, filepath.Join(dir, "cids"))...)
	if r.code != exitMount || !strings.Contains(r.stderr, "another vmfs service serves there") {
		t.Errorf("second serve: exit %d: %s", r.code, r.stderr)
	}
	if after := snapshot(); !slices.Equal(before, after) {
		t.Errorf("the refused serve changed %s: %v, was %v", dir, after, before)
	}
	if r := s.vmfs("list"); r.code != 0 {
		t.Errorf("list after the refused serve: exit %d: %s", r.code, r.stderr)
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}
	for _, p := range []string{lock, s.sock} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the service stopped: %v", p, err)
		}
	}

	full := filepath.Join(dir, "full")
	os.MkdirAll(filepath.Join(full, "file"), 0o755)
	other := filepath.Join(dir, "other.sock")
	if r := runVmfs(t, "", serveArgs(t, full, other, filepath.Join(dir, "cids"))...); r.code != exitMount || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("serve on a directory that is not empty: exit %d: %s", r.code, r.stderr)
	}
	for _, p := range []string{other + ".lock", other} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after a refused serve: %v", p, err)
		}
	}
}
