package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/metadata"
	"vmfs/testdata"
)

// startStateServe starts a service over the Android 13+ sample's APEXes and
// osDir (every user may read both, as a service's sources), open to nobody's
// group, and returns it with a copy of the sample every user may read.
func startStateServe(t *testing.T, osDir string) (s *serveProc, later string) {
	t.Helper()
	later = testdata.PublicCopy(t, filepath.Dir(testdata.LaterAPKPath()), ".")
	extra := []string{"--group", strconv.Itoa(testdata.Nobody), "--apex-info-list", filepath.Join(later, "apex-info-list.xml")}
	if osDir != "" {
		extra = append(extra, "--os-dir", osDir)
	}
	return startServe(t, extra...), later
}

// TestServeStateBoots: through a service, android14 with --config-path and
// --storage, and android13 (its instance on the OS config's disk 1), boot
// twice with one instance image that the client made: the second verdict
// shows the first boot's record (and storage formatted by the first), and
// qemu-img check finds the images clean after both. A payload mounted through
// the service shows its instance in list, and holds it: a run on it is refused.
func TestServeStateBoots(t *testing.T) {
	testdata.RequireFUSE(t)
	for _, tc := range []struct {
		prof    metadata.Profile
		storage bool
	}{{metadata.Android14, true}, {metadata.Android13, false}} {
		t.Run(tc.prof.String(), func(t *testing.T) {
			osDir := ""
			if tc.prof == metadata.Android13 {
				osDir = testdata.PublicCopy(t, stateOSDir(t, guestDir(t)), ".")
			}
			s, later := startStateServe(t, osDir)
			dir := t.TempDir()
			inst, storage := filepath.Join(dir, "inst.img"), filepath.Join(dir, "storage.img")
			args := append([]string{"--socket", s.sock}, laterArgs(tc.prof, false, later, inst)...)
			if tc.storage {
				args = append([]string{"--storage", storage}, args...)
			}
			bootsTwice(t, tc.prof, args, inst, storage, tc.storage)
			if tc.prof != metadata.Android14 {
				return
			}
			if r := s.vmfs(append([]string{"mount", "--name", "held"}, laterArgs(tc.prof, false, later, inst)...)...); r.code != 0 {
				t.Fatalf("mount through the service: exit %d: %s", r.code, r.stderr)
			}
			if row := s.list()["held"]; row.instance != inst {
				t.Errorf("list: %+v, want the instance %s", row, inst)
			}
			r := runVmfs(t, "", append([]string{"run-app", "--vmm", "qemu", "--console", "/dev/null"}, args...)...)
			if r.code != exitInput || !strings.Contains(r.stderr, "instance image "+inst+": in use") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("run on the mounted instance: exit %d: %q; want exit %d, in use", r.code, r.stderr, exitInput)
			}
			if r := s.vmfs("unmount", "held"); r.code != 0 {
				t.Errorf("unmount: exit %d: %s", r.code, r.stderr)
			}
			s.servesAndStops()
		})
	}
}

// TestServeStateNobody: nobody's run-app through the service at android14
// makes its instance image as nobody, and the VM boots to a passing verdict
// with the QCOW2 engine and the VMM running as nobody.
func TestServeStateNobody(t *testing.T) {
	testdata.RequireFUSE(t)
	s, later := startStateServe(t, "")
	a := newAttacker(t, s)
	console := nobodysConsole(t) // in a directory of nobody's
	inst := filepath.Join(filepath.Dir(console), "inst.img")
	r := a.vmfs(append([]string{"run-app", "-d", "--vmm", "qemu", "--console", console}, laterArgs(metadata.Android14, false, later, inst)...)...)
	name, vmm := s.detached(r)
	var st unix.Stat_t
	if err := unix.Stat(inst, &st); err != nil || st.Uid != uint32(testdata.Nobody) {
		t.Errorf("instance image: %v, uid %d, want nobody's", err, st.Uid)
	}
	if got := vmmRights(t, vmm); !strings.Contains(got, "Uid="+strconv.Itoa(testdata.Nobody)+" ") {
		t.Errorf("VMM runs as %s, want nobody", got)
	}
	engines := children(s.r.cmd.Process.Pid, "qemu-storage-daemon")
	if len(engines) != 1 || !strings.Contains(vmmRights(t, engines[0]), "Uid="+strconv.Itoa(testdata.Nobody)+" ") {
		t.Errorf("engines %v, want one running as nobody", engines)
	}
	if row := s.list()[name]; row.instance != inst {
		t.Errorf("list: %+v, want the instance %s", row, inst)
	}
	release(vmm)
	if !testdata.Eventually(t, 3*time.Minute, func() bool { _, ok := s.list()[name]; return !ok }) {
		t.Fatalf("VM %s did not end", name)
	}
	if out, _ := os.ReadFile(console); !strings.Contains(string(out), `"ok":true,"checks"`) {
		t.Errorf("console: want a passing verdict:\n%s", out)
	}
	testdata.QemuImgCheck(t, inst)
	s.servesAndStops()
}

// TestServeStateAttacks: nobody, a member of the service's group, sends state
// files the service must not write through: an instance sent read-only, a
// FIFO, directory, socket or device as the instance, root's instance image
// (which nobody cannot open: the client says so), and one nobody's running VM
// holds (refused, naming it, and that VM goes on); an instance named to forge
// rows of root's list is shown quoted, here and in the log. After each the
// service serves root and stops on SIGTERM.
func TestServeStateAttacks(t *testing.T) {
	testdata.RequireFUSE(t)
	s, later := startStateServe(t, "")
	a := newAttacker(t, s)
	console := nobodysConsole(t)
	own := filepath.Join(filepath.Dir(console), "inst.img")
	fifo := filepath.Join(a.dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	apk := filepath.Join(later, filepath.Base(testdata.LaterAPKPath()))
	if r := a.vmfs(append([]string{"mount", "--name", "made"}, laterArgs(metadata.Android14, false, later, own)...)...); r.code != 0 {
		t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
	}
	if r := a.vmfs("unmount", "made"); r.code != 0 {
		t.Fatalf("unmount as nobody: exit %d: %s", r.code, r.stderr)
	}
	// An instance named to forge rows (and colours) in root's list is shown quoted.
	forged := filepath.Join(filepath.Dir(console), "i\n\x1b[31mforged  10  running.img")
	if r := a.vmfs(append([]string{"mount", "--name", "forged"}, laterArgs(metadata.Android14, false, later, forged)...)...); r.code != 0 {
		t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
	}
	if r := s.vmfs("list"); strings.ContainsRune(r.stdout, 0x1b) || !strings.Contains(r.stdout, strconv.Quote(forged)) {
		t.Errorf("list as root shows nobody's instance unquoted:\n%q", r.stdout)
	}
	if r := a.vmfs("unmount", "forged"); r.code != 0 {
		t.Fatalf("unmount as nobody: exit %d: %s", r.code, r.stderr)
	}
	add := func(inst rawFile) []map[string]any {
		req := map[string]any{"op": "add", "files": []string{"apk", "idsig", "instance"}, "apk": apk, "idsig": apk + ".idsig",
			"profile": "android14", "payload_binary_name": testdata.PayloadBinaryName, "instance": "inst.img"}
		return a.send(req, rawFile{"r", apk}, rawFile{"r", apk + ".idsig"}, inst)
	}
	for _, tc := range []struct {
		name string
		file rawFile
		want string
	}{
		{"read-only", rawFile{"r", own}, "writable, but not opened for reading and writing"},
		{"directory", rawFile{"dir", a.dir}, "a directory, not a regular file"},
		{"fifo", rawFile{"nonblock", fifo}, "a FIFO (named pipe), not a regular file"},
		{"socket", rawFile{How: "socketpair"}, "a socket, not a regular file"},
		{"device", rawFile{"rw", "/dev/null"}, "a character device, not a regular file"},
	} {
		refused(t, tc.name+" instance", add(tc.file), tc.want)
	}

	root := filepath.Join(a.dir, "root-inst.img")
	if r := runVmfs(t, "", "create-partition", "--type", "instance", "--profile", "android14", root, "10M"); r.code != 0 {
		t.Fatalf("create-partition: %d %s", r.code, r.stderr)
	}
	os.Chmod(root, 0o644)
	r := a.vmfs(append([]string{"mount", "--name", "roots"}, laterArgs(metadata.Android14, false, later, root)...)...)
	if r.code != exitInput || !strings.Contains(r.stderr, root) || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("root's instance as nobody: exit %d: %q; want exit %d, permission denied", r.code, r.stderr, exitInput)
	}

	run := a.vmfs(append([]string{"run-app", "-d", "--vmm", "qemu", "--console", console}, laterArgs(metadata.Android14, false, later, own)...)...)
	name, vmm := s.detached(run)
	refused(t, "instance in use", add(rawFile{"rw", own}), "in use")
	r = a.vmfs(append([]string{"mount", "--name", "second"}, laterArgs(metadata.Android14, false, later, own)...)...)
	if r.code != exitInput || !strings.Contains(r.stderr, "instance image "+own+": in use") {
		t.Errorf("second payload on a running VM's instance: exit %d: %q; want exit %d, in use", r.code, r.stderr, exitInput)
	}
	if row := s.list()[name]; row.state != "running" || row.instance != own {
		t.Errorf("the first VM after the attempts: %+v, want running on %s", row, own)
	}
	release(vmm)
	if !testdata.Eventually(t, 3*time.Minute, func() bool { _, ok := s.list()[name]; return !ok }) {
		t.Fatalf("VM %s did not end", name)
	}
	if out, _ := os.ReadFile(console); !strings.Contains(string(out), `"ok":true,"checks"`) {
		t.Errorf("the first VM: want a passing verdict:\n%s", out)
	}
	s.servesAndStops()
	if strings.ContainsRune(s.r.output(), 0x1b) {
		t.Errorf("an ESC byte in the service's log:\n%q", s.r.output())
	}
}
