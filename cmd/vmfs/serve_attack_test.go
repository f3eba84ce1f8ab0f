package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vmfs/internal/proc"
	"vmfs/internal/wire"
	"vmfs/testdata"
)

// The tests here are a hostile member of a service's group (nobody, through
// --group) against the service, each ending as servesAndStops does.

// attacker is nobody, a member of the group of the service s, running programs
// of its own: world-readable copies of vmfs and of this test binary (a raw
// client, see rawClient).
type attacker struct {
	t                       *testing.T
	s                       *serveProc
	dir, setpriv, bin, test string
}

func newAttacker(t *testing.T, s *serveProc) *attacker {
	t.Helper()
	setpriv := testdata.RequireTool(t, "setpriv")
	pub := testdata.PublicDir(t)
	test, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, s: s, dir: pub, setpriv: setpriv,
		bin: copyFile(t, vmfsBin, filepath.Join(pub, "vmfs"), 0o755), test: copyFile(t, test, filepath.Join(pub, "vmfs.test"), 0o755)}
}

// argv is argv run as nobody, in nobody's group alone.
func (a *attacker) argv(argv ...string) []string {
	n := strconv.Itoa(testdata.Nobody)
	return append([]string{a.setpriv, "--reuid=" + n, "--regid=" + n, "--clear-groups"}, argv...)
}

// run runs argv as nobody and waits for it.
func (a *attacker) run(argv ...string) result {
	a.t.Helper()
	argv = a.argv(argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// vmfs runs vmfs as nobody, a client of the service.
func (a *attacker) vmfs(args ...string) result {
	a.t.Helper()
	return a.run(append(append([]string{a.bin}, args...), "--socket", a.s.sock)...)
}

// raw runs the raw client's mode (see rawModes) as nobody and returns its output.
func (a *attacker) raw(mode string, args ...string) string {
	a.t.Helper()
	r := a.run(append(append([]string{a.test}, rawClientArgs(a.s.sock, mode, "", "")...), args...)...)
	return r.stdout + r.stderr
}

// rawStart starts the raw client's mode as nobody, for one that runs until killed.
func (a *attacker) rawStart(mode string, args ...string) *running {
	a.t.Helper()
	argv := a.argv(append(append([]string{a.test}, rawClientArgs(a.s.sock, mode, "", "")...), args...)...)
	return startProgram(a.t, "", argv[0], argv[1:]...)
}

// servesAndStops checks that the service still serves root (vmfs list), and
// that SIGTERM then ends it promptly, with exit 0.
func (s *serveProc) servesAndStops() {
	s.t.Helper()
	if r := s.vmfs("list"); r.code != 0 {
		s.t.Errorf("list as root: exit %d: %s", r.code, r.stderr)
	}
	begin := time.Now()
	if code := s.stop(syscall.SIGTERM); code != 0 {
		s.t.Errorf("service after SIGTERM: exit %d:\n%s", code, s.r.output())
	}
	if d := time.Since(begin); d > 10*time.Second {
		s.t.Errorf("SIGTERM took %v to end the service", d)
	}
}

// detached runs a detached `vmfs run` or `run-app -d` (r is its result) and
// returns the VM's name and its VMM's pid, stopped (hold) so that it surely
// runs while the test looks.
func (s *serveProc) detached(r result) (name string, vmm int) {
	s.t.Helper()
	f := strings.Fields(r.stdout)
	if r.code != 0 || len(f) != 2 {
		s.t.Fatalf("a detached run: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	vmm = s.list()[f[0]].pid
	if vmm == 0 {
		s.t.Fatalf("VM %s is not listed: %+v", f[0], s.list())
	}
	hold(s.t, vmm)
	return f[0], vmm
}

// rawVMConfig writes, in dir, a raw VM config booting the test guest and
// copies there of the kernel and initrd it names; it returns the config's
// path. With no disk the guest runs some seconds, then fails its checks; with
// a payload's disk (read-only), it passes.
func rawVMConfig(t *testing.T, dir string, disks ...string) string {
	t.Helper()
	guest := guestConfig(t)
	images := []any{}
	for _, d := range disks {
		images = append(images, map[string]any{"image": d, "writable": false})
	}
	cfg, _ := json.Marshal(map[string]any{"params": guest.Params, "disks": images,
		"kernel": copyFile(t, guest.Kernel, filepath.Join(dir, "vmlinuz"), 0o644), "initrd": copyFile(t, guest.Initrd, filepath.Join(dir, "initrd"), 0o644)})
	return copyBytes(t, cfg, filepath.Join(dir, "vm_config.json"))
}

// nobodysConsole is a file in a directory nobody may write to, for a
// --console of nobody's (the client checks that it can make the file).
func nobodysConsole(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testdata.PublicDir(t), "consoles")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, testdata.Nobody, testdata.Nobody); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "console")
}

func copyBytes(t *testing.T, b []byte, dst string) string {
	t.Helper()
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// rawModes are the raw client's modes that take arguments of their own: each
// gets the socket and those arguments, and returns its exit code.
var rawModes = map[string]func(sock string, args []string) int{"send": rawSend, "hold": rawHold, "request": rawRequest}

// rawSend sends args[0] as one message, byte for byte (any key, any case, a
// key twice), and prints the final reply as "event: message", or why none came.
func rawSend(sock string, args []string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer c.Close()
	if _, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(args[0]))), args[0]...)); err != nil {
		fmt.Println(err)
		return 1
	}
	conn := wire.New(c.(*net.UnixConn))
	for {
		var rep struct {
			Event string
			Error *struct{ Message string }
		}
		var raw map[string]json.RawMessage // any reply, whatever its fields
		if _, err := conn.Receive(&raw, time.Minute); err != nil {
			fmt.Println("no reply:", err)
			return 1
		}
		json.Unmarshal(raw["event"], &rep.Event)
		json.Unmarshal(raw["error"], &rep.Error)
		switch {
		case rep.Event == "ok":
			fmt.Println("ok")
			return 0
		case rep.Event == "error" && rep.Error != nil:
			fmt.Printf("error: %s\n", rep.Error.Message)
			return 0
		}
	}
}

// rawHold holds args[0] connections to the service open, sending nothing, and
// opens another whenever one is cut, until killed; one refused at once waits
// for the next cut. It says "dialed" once it has connected that many times, and
// prints each reply or error it gets, once.
func rawHold(sock string, args []string) int {
	n, _ := strconv.Atoi(args[0])
	var mu sync.Mutex
	seen := map[string]bool{}
	cut := make(chan struct{}) // closed at a cut, and replaced
	say := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if !seen[s] {
			seen[s] = true
			fmt.Println(s)
		}
	}
	var dialed sync.WaitGroup
	dialed.Add(n)
	for range n {
		go func() {
			first := true
			for {
				c, err := net.Dial("unix", sock)
				if first {
					dialed.Done()
					first = false
				}
				if err != nil {
					say("dial: " + err.Error())
					continue
				}
				begin := time.Now()
				var rep map[string]json.RawMessage
				_, err = wire.New(c.(*net.UnixConn)).Receive(&rep, 0)
				c.Close()
				if err != nil {
					say("cut: " + err.Error())
				} else {
					say("reply: " + string(rep["error"]))
				}
				mu.Lock()
				next := cut
				if time.Since(begin) > time.Second {
					close(cut)
					cut = make(chan struct{})
				}
				mu.Unlock()
				<-next
			}
		}()
	}
	dialed.Wait()
	say("dialed")
	select {}
}

// TestServeConnectionShares: nobody holding 300 connections open without a
// request, reconnecting as they are cut, never locks root out: its own beyond
// its share are refused at once, saying so, the idle ones are cut within
// seconds, and root's `vmfs list` works throughout.
func TestServeConnectionShares(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	h := a.rawStart("hold", "300")
	said := func(what string) {
		t.Helper()
		if !testdata.Eventually(t, time.Minute, func() bool { return strings.Contains(h.output(), what) }) {
			t.Fatalf("the raw client did not say %q:\n%s", what, h.output())
		}
	}
	said("dialed")
	listed := func(when string) {
		t.Helper()
		for range 3 {
			if r := s.vmfs("list"); r.code != 0 {
				t.Errorf("list as root %s: exit %d: %s", when, r.code, r.stderr)
			}
		}
	}
	listed("while nobody holds its connections")
	said("uid 65534 has 16 connections open already, the most one user may")
	said("no whole request within 3s")
	listed("while nobody reconnects those cut")
	s.servesAndStops()
}

// TestServeNamesUnique: a name is one payload's or one VM's in a service,
// whoever asks: nobody cannot take the name of root's payload or raw VM (the
// name root would stop), nor root nobody's, and root's stop by name stops
// root's VM alone.
func TestServeNamesUnique(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	pub := testdata.PublicDir(t)
	cfg, console := rawVMConfig(t, pub), nobodysConsole(t)
	apk, idsig := copyFile(t, testdata.APKPath(), filepath.Join(pub, "app.apk"), 0o644), copyFile(t, testdata.IdsigPath(), filepath.Join(pub, "app.apk.idsig"), 0o644)
	taken := func(who string, r result, name string) {
		t.Helper()
		if want := fmt.Sprintf("name %q is taken", name); r.code != exitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("%s takes %s: exit %d: %s%s", who, name, r.code, r.stdout, r.stderr)
		}
	}

	if r := s.vmfs("mount", "--name", "roots", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath); r.code != 0 {
		t.Fatalf("mount as root: exit %d: %s", r.code, r.stderr)
	}
	rootVM, rootVMM := s.detached(s.vmfs("run", "-d", "--console", "/dev/null", cfg))
	for _, name := range []string{"roots", rootVM} {
		taken("nobody", a.vmfs("mount", "--name", name, apk, idsig, testdata.ConfigPath), name)
		taken("nobody", a.vmfs("run-app", "-d", "--name", name, "--console", console, apk, idsig, testdata.ConfigPath), name)
	}

	if r := a.vmfs("mount", "--name", "mine", apk, idsig, testdata.ConfigPath); r.code != 0 {
		t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
	}
	nobodyVM, nobodyVMM := s.detached(a.vmfs("run", "-d", "--console", console, cfg))
	for _, name := range []string{"mine", nobodyVM} {
		taken("root", s.vmfs("mount", "--name", name, testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath), name)
	}

	if r := s.vmfs("stop", rootVM); r.code != 0 {
		t.Errorf("stop %s as root: exit %d: %s", rootVM, r.code, r.stderr)
	}
	if !proc.WaitExit(rootVMM, time.Minute) {
		t.Errorf("root's VMM %d outlived its stop", rootVMM)
	}
	if row := s.list()[nobodyVM]; row.pid != nobodyVMM || proc.State(nobodyVMM) != 'T' {
		t.Errorf("nobody's VM after root stopped its own: %+v", row)
	}
	release(nobodyVMM)
	s.servesAndStops()
}

// TestServeListEscapes: an APK whose file name holds a newline and an escape
// sequence, mounted by nobody, is one row of root's `vmfs list`, its name
// quoted; no ESC byte reaches root's terminal nor the service's log.
func TestServeListEscapes(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	pub := testdata.PublicDir(t)
	forged := "a\n\x1b[31mforged  10  4242  running  1s  x.apk"
	apk := copyFile(t, testdata.APKPath(), filepath.Join(pub, forged+".apk"), 0o644)
	idsig := copyFile(t, testdata.IdsigPath(), filepath.Join(pub, forged+".apk.idsig"), 0o644)
	if r := a.vmfs("mount", "--name", "mine", apk, idsig, testdata.ConfigPath); r.code != 0 {
		t.Fatalf("mount as nobody: exit %d: %s", r.code, r.stderr)
	}
	r := s.vmfs("list")
	service, _, _ := strings.Cut(r.stdout, "\n\n") // the mounts of servers of their own follow
	rows := strings.Split(strings.TrimSuffix(service, "\n"), "\n")[1:]
	if r.code != 0 || len(rows) != 1 || !strings.HasPrefix(rows[0], "mine ") || !strings.Contains(rows[0], strconv.Quote(apk)) {
		t.Errorf("list as root: exit %d, want one row for mine with its APK quoted:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.ContainsRune(r.stdout, 0x1b) {
		t.Errorf("an ESC byte in root's list:\n%q", r.stdout)
	}
	s.servesAndStops()
	if strings.ContainsRune(s.r.output(), 0x1b) {
		t.Errorf("an ESC byte in the service's log:\n%q", s.r.output())
	}
}

// TestServeLongInput: a request echoing 60 KiB of nobody's input, or more once
// escaped ('<' is 6 bytes in JSON), gets an error reply with the input cut,
// where the reply was too large to send and the client got EOF.
func TestServeLongInput(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	long := strings.Repeat("<", 60<<10)
	for what, req := range map[string]string{
		"a payload's name":     `{"op":"add","name":"` + long + `"}`,
		"an APK's name":        `{"op":"add","apk":"` + long + `"}`,
		"a VM to stop":         `{"op":"stop","name":"` + long + `"}`,
		"a payload to unmount": `{"op":"remove","name":"` + long + `"}`,
		// An error that quotes no input: the reply itself is cut.
		"a VMM": `{"op":"run-app","run":{"vmm":"` + long + `"}}`,
	} {
		out := a.raw("send", req)
		if !strings.HasPrefix(out, "error: ") || !strings.Contains(out, "bytes)") || len(out) > 8<<10 {
			t.Errorf("%s of 60 KiB: %d bytes of reply, want an error with the input cut: %.300s", what, len(out), out)
		}
	}
	s.servesAndStops()
}

// TestServeStrictKeys: a request's keys are its fields' exactly, once each:
// {"OP":"list"} and {"op":"list","op":"stop"} are refused, saying why.
func TestServeStrictKeys(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	for req, want := range map[string]string{
		`{"OP":"list"}`:             `unknown field "OP"`,
		`{"op":"list","Name":"x"}`:  `unknown field "Name"`,
		`{"op":"list","op":"stop"}`: `duplicate key "op"`,
		`{"op":"run","run":{},"vm":{"kernel":"a","kernel":"b"}}`: `duplicate key "kernel" in vm`,
	} {
		if out := a.raw("send", req); !strings.HasPrefix(out, "error: ") || !strings.Contains(out, want) {
			t.Errorf("%s: %s, want an error saying %s", req, out, want)
		}
	}
	if out := a.raw("send", `{"op":"list"}`); out != "ok\n" {
		t.Errorf(`{"op":"list"}: %s`, out)
	}
	s.servesAndStops()
}

// TestServeVMQuota: nobody runs 8 VMs at once at most (raw runs make no
// payload, so the payloads' quota does not bound them); the next is refused,
// saying so, and root still starts one.
func TestServeVMQuota(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	cfg, console := rawVMConfig(t, testdata.PublicDir(t)), nobodysConsole(t)
	var vmms []int
	for range 8 {
		_, vmm := s.detached(a.vmfs("run", "-d", "--console", console, cfg))
		vmms = append(vmms, vmm)
	}
	if r := a.vmfs("run", "-d", "--console", console, cfg); r.code != exitUsage || !strings.Contains(r.stderr, "uid 65534 runs 8 VMs already, the most one user may") {
		t.Errorf("nobody's ninth VM: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	_, vmm := s.detached(s.vmfs("run", "-d", "--console", "/dev/null", cfg))
	release(append(vmms, vmm)...)
	s.servesAndStops()
}

// TestServeRunAppDetachMount: `run-app -d --mount` of what is no payload of
// the service that answers says what it is (a mount of its own, or no vmfs
// mount at all), not that no service answers.
func TestServeRunAppDetachMount(t *testing.T) {
	s := startServe(t)
	own := t.TempDir()
	if r := runVmfs(t, "", append([]string{"mount"}, fixtureArgs(own)...)...); r.code != 0 {
		t.Fatalf("a mount of its own: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", own) })
	for dir, want := range map[string]string{own: "a vmfs mount of its own", t.TempDir(): "not a live vmfs mount"} {
		r := s.vmfs("run-app", "-d", "--mount", dir, "--console", "/dev/null")
		if r.code == 0 || strings.Contains(r.stderr, "none answers") || !strings.Contains(r.stderr, want) {
			t.Errorf("run-app -d --mount %s: exit %d: %s, want it to say %q", dir, r.code, r.stderr, want)
		}
	}
	s.servesAndStops()
}

// TestServeConsoleNobodyReads: nobody's VMs write their console to a FIFO
// nobody keeps full and never reads. The service still sees each VMM end and
// frees its VM, stops one on `vmfs stop`, and ends on SIGTERM within 10 s with
// one running. (The service's copy of the console blocked in write(2) and the
// VMM's reaping waited for it: the VM showed running for good, `stop` said
// "still running after SIGKILL", and SIGTERM hung.)
func TestServeConsoleNobodyReads(t *testing.T) {
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody))
	a := newAttacker(t, s)
	cfg, console := rawVMConfig(t, a.dir), fullConsole(t, a.dir)
	run := func() (name string, vmm int) {
		t.Helper()
		r := a.vmfs("run", "-d", "--console", console, cfg)
		f := strings.Fields(r.stdout)
		if r.code != 0 || len(f) != 2 {
			t.Fatalf("nobody's detached run: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		return f[0], s.list()[f[0]].pid
	}

	name, vmm := run()
	if !proc.WaitExit(vmm, 3*time.Minute) {
		t.Fatalf("the VMM %d of a guest that ends did not end", vmm)
	}
	if !testdata.Eventually(t, time.Minute, func() bool { _, listed := s.list()[name]; return !listed }) {
		t.Errorf("VM %s still listed after its VMM ended: %+v", name, s.list()[name])
	}

	name, vmm = run()
	if r := a.vmfs("stop", name); r.code != 0 {
		t.Errorf("stop %s: exit %d: %s", name, r.code, r.stderr)
	}
	if proc.State(vmm) != 0 {
		t.Errorf("VMM %d outlived its stop", vmm)
	}

	run()
	s.servesAndStops()
}
