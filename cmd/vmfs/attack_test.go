package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/internal/wire"
	"vmfs/testdata"
)

// rawRequestSpec is what the raw client's "request" mode sends: a request as JSON, and files opened so
// (How: "r", "rw", "w", "nonblock" (read, for a FIFO), "dir", "o_path", or
// "socketpair", one end of a fresh socket pair; Path is not used then).
type rawRequestSpec struct {
	Request json.RawMessage `json:"request"`
	Files   []rawFile       `json:"files"`
}

type rawFile struct{ How, Path string }

// rawRequest, the raw client's "request" mode, sends the request args[0] (a
// rawRequestSpec) and prints every reply, one JSON object a line, until the
// final one.
func rawRequest(sock string, args []string) int {
	var s rawRequestSpec
	if err := json.Unmarshal([]byte(args[0]), &s); err != nil {
		fmt.Println(err)
		return 1
	}
	var files []*os.File
	for _, f := range s.Files {
		flags := map[string]int{"r": unix.O_RDONLY, "rw": unix.O_RDWR, "w": unix.O_WRONLY, "nonblock": unix.O_RDONLY | unix.O_NONBLOCK,
			"dir": unix.O_RDONLY | unix.O_DIRECTORY, "o_path": unix.O_PATH}
		if f.How == "socketpair" {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				fmt.Println(err)
				return 1
			}
			files = append(files, os.NewFile(uintptr(fds[0]), "socket"))
			continue
		}
		fd, err := unix.Open(f.Path, flags[f.How]|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		files = append(files, os.NewFile(uintptr(fd), f.Path))
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	conn := wire.New(c.(*net.UnixConn))
	if err := conn.Send(s.Request, files, time.Minute); err != nil {
		fmt.Println(err)
		return 1
	}
	for {
		var rep map[string]any
		if _, err := conn.Receive(&rep, 5*time.Minute); err != nil {
			fmt.Println(err)
			return 1
		}
		b, _ := json.Marshal(rep)
		fmt.Println(string(b))
		if rep["event"] == "ok" || rep["event"] == "error" {
			return 0
		}
	}
}

// send sends req with files as nobody and returns the replies, the final last.
func (a *attacker) send(req any, files ...rawFile) []map[string]any {
	a.t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		a.t.Fatal(err)
	}
	arg, _ := json.Marshal(rawRequestSpec{Request: body, Files: files})
	r := a.run(append([]string{a.test}, append(rawClientArgs(a.s.sock, "request", "", ""), string(arg))...)...)
	var reps []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rep map[string]any
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			a.t.Fatalf("raw client: %s%s", r.stdout, r.stderr)
		}
		reps = append(reps, rep)
	}
	return reps
}

// refused checks that the replies are one error whose message has want.
func refused(t *testing.T, what string, reps []map[string]any, want string) {
	t.Helper()
	if len(reps) != 1 || reps[0]["event"] != "error" || !strings.Contains(fmt.Sprint(reps[0]["error"]), want) {
		t.Errorf("%s: replies %v, want one error saying %q", what, reps, want)
	}
}

// TestServeRefusesDescriptors: nobody, a member of the service's group, sends
// `vmfs run` requests whose files the VMM must not be given: a directory, a
// FIFO, a socket, /dev/zero or a file of the service's own mount as a kernel, a
// read-only descriptor for a writable disk; and VMs larger than the machine.
// Each is refused before any VMM starts, and the service goes on serving root
// and stops on SIGTERM.
func TestServeRefusesDescriptors(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	fifo := filepath.Join(a.dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	kernel := copyFile(t, filepath.Join(guestDir(t), "vmlinuz"), filepath.Join(a.dir, "kernel"), 0o644)
	disk := copyFile(t, testdata.APKPath(), filepath.Join(a.dir, "disk.img"), 0o666)
	if r := a.vmfs("mount", "--name", "mine", copyFile(t, testdata.APKPath(), filepath.Join(a.dir, "app.apk"), 0o644),
		copyFile(t, testdata.IdsigPath(), filepath.Join(a.dir, "app.apk.idsig"), 0o644), testdata.ConfigPath); r.code != 0 {
		t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
	}
	ours := filepath.Join(s.mnt, "mine", "vm.json")

	run := func(vm map[string]any, run map[string]any, files ...string) map[string]any {
		return map[string]any{"op": "run", "vm": vm, "run": run, "files": files}
	}
	kernelOnly := map[string]any{"kernel": "k", "disks": []any{}}
	readOnly := map[string]any{"kernel": "k", "disks": []any{map[string]any{"image": "d", "writable": false}}}
	writable := map[string]any{"kernel": "k", "disks": []any{map[string]any{"image": "d", "writable": true}}}
	for _, tc := range []struct {
		name string
		file rawFile
		want string
	}{
		{"directory", rawFile{"dir", a.dir}, "a directory, not a regular file"},
		{"fifo", rawFile{"nonblock", fifo}, "a FIFO (named pipe), not a regular file"},
		{"socket", rawFile{How: "socketpair"}, "a socket, not a regular file"},
		{"dev-zero", rawFile{"r", "/dev/zero"}, "a character device, not a regular file"},
		{"own-mount", rawFile{"r", ours}, "a file of the service's own mount"},
	} {
		refused(t, tc.name+" as kernel", a.send(run(kernelOnly, map[string]any{"detach": true}, "kernel"), tc.file), tc.want)
		refused(t, tc.name+" as disk", a.send(run(readOnly, map[string]any{"detach": true}, "kernel", "disk"), rawFile{"r", kernel}, tc.file), tc.want)
	}
	refused(t, "read-only writable disk", a.send(run(writable, map[string]any{"detach": true}, "kernel", "disk"), rawFile{"r", kernel}, rawFile{"r", disk}),
		"writable, but not opened for reading and writing")
	refused(t, "config memory", a.send(run(map[string]any{"kernel": "k", "disks": []any{}, "memory_mib": 4294967295}, map[string]any{"detach": true}, "kernel"),
		rawFile{"r", kernel}), "MiB and")
	refused(t, "request memory", a.send(run(kernelOnly, map[string]any{"detach": true, "mem_mib": 1 << 20}, "kernel"), rawFile{"r", kernel}), "MiB and")
	refused(t, "cpus", a.send(run(kernelOnly, map[string]any{"detach": true, "cpus": 256}, "kernel"), rawFile{"r", kernel}), "vCPUs")

	if rows := s.list(); len(rows) != 1 || rows["mine"].cid != 0 {
		t.Errorf("list as root after the attempts: %+v, want nobody's payload alone and no VM", rows)
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}
}

// vmmRights is what /proc says a VMM runs as: its Uid, Gid, Groups and CapEff
// lines, the ids once each.
func vmmRights(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var rights []string
	for _, line := range strings.Split(string(b), "\n") {
		key, value, _ := strings.Cut(line, ":")
		f := strings.Fields(value)
		switch key {
		case "Uid", "Gid":
			slices.Sort(f)
			rights = append(rights, key+"="+strings.Join(slices.Compact(f), ","))
		case "Groups", "CapEff":
			rights = append(rights, key+"="+strings.Join(f, ","))
		}
	}
	return strings.Join(rights, " ")
}

// TestServeVMMRights: a VM runs with the rights of the client that asked for
// it. nobody's raw run's VMM runs as nobody, in nobody's groups, with no
// capability, and still gets its kernel, initrd and disk (files it sent); a
// payload of nobody's boots to the guest's passing verdict with a VMM that has
// no right to the service's OS directory or mount but the files handed to it.
// Root's VMs run as root. (The VMM ran as root for everyone, reopening the
// client's files by the service's /proc/<pid>/fd paths.)
func TestServeVMMRights(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	cfg, console := rawVMConfig(t, a.dir), nobodysConsole(t)

	_, rootVMM := s.detached(s.vmfs("run", "-d", "--console", "/dev/null", cfg))
	if got := vmmRights(t, rootVMM); !strings.HasPrefix(got, "Uid=0 Gid=0 ") || strings.HasSuffix(got, "CapEff=0000000000000000") {
		t.Errorf("root's VMM runs with %s, want root's rights", got)
	}

	n := strconv.Itoa(testdata.Nobody)
	argv := []string{a.setpriv, "--reuid=" + n, "--regid=" + n, "--groups=4242,4343", a.bin, "run", "-d", "--console", console, "--socket", s.sock, cfg}
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	_, vmm := s.detached(result{cmd.ProcessState.ExitCode(), out.String(), errb.String()})
	if got, want := vmmRights(t, vmm), "Uid="+n+" Gid="+n+" Groups=4242,4343 CapEff=0000000000000000"; got != want {
		t.Errorf("nobody's VMM runs with %s, want %s", got, want)
	}
	release(rootVMM, vmm)

	apk := copyFile(t, testdata.APKPath(), filepath.Join(a.dir, "app.apk"), 0o644)
	idsig := copyFile(t, testdata.IdsigPath(), filepath.Join(a.dir, "app.apk.idsig"), 0o644)
	if r := a.vmfs("run-app", "--require-verdict", "--console", console, "--timeout", "3m", apk, idsig, testdata.ConfigPath); r.code != 0 {
		t.Errorf("nobody's run-app through the service: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	s.servesAndStops()
}
