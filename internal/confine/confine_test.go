package confine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"vmfs/testdata"
)

// childEnv names the scenario the test binary runs as a child (see TestMain):
// Landlock cannot be undone, so each confined scenario is a process of its own.
const childEnv = "CONFINE_TEST_CHILD"

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(runChild(name, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// outcomes are what a child saw, step by step: "ok", an errno's name, or an
// error's text.
type outcomes map[string]string

func outcome(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

var scenarios = map[string]func(dir string, out outcomes) error{
	"apply":      applyScenario,
	"helper":     helperScenario,
	"nolandlock": noLandlockScenario,
}

// runChild runs a scenario in dir and prints its outcomes as JSON.
func runChild(name, dir string) int {
	out := outcomes{}
	if err := scenarios[name](dir, out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// child runs scenario name in dir in a child process, in a mount namespace of
// its own, and returns what it saw.
func child(t *testing.T, name, dir string) outcomes {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir)
	cmd.Env = append(os.Environ(), childEnv+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", name, err, stderr.String())
	}
	var out outcomes
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("child %s: %v: %q", name, err, b)
	}
	return out
}

func want(t *testing.T, got outcomes, wants outcomes) {
	t.Helper()
	for step, w := range wants {
		if got[step] != w {
			t.Errorf("%s: %q, want %q", step, got[step], w)
		}
	}
}

func requireLandlock(t *testing.T) {
	t.Helper()
	testdata.RequireRoot(t) // mounts in its namespace
	testdata.RequireLandlock(t)
}

// applyScenario confines itself to Read: in, ReadWrite: rw, Exec: a copy of
// true, and tries what is in and out of that.
func applyScenario(dir string, out outcomes) error {
	p := func(name ...string) string { return filepath.Join(append([]string{dir}, name...)...) }
	pre, err := os.Open(p("out", "f"))
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", p("rw", "m"), "tmpfs", 0, ""); err != nil {
		return err
	}
	mem, err := unix.MemfdCreate("in memory", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	// /dev/null: os/exec opens it for a child's stdin.
	if confined, err := Apply(Rules{Read: []string{p("in"), "/usr", "/etc/ld.so.cache"}, ReadWrite: []string{p("rw"), "/dev/null"}, Exec: []string{p("true")}}, zap.NewNop()); !confined || err != nil {
		return fmt.Errorf("apply: confined %v, %v", confined, err)
	}
	step := func(name string, err error) { out[name] = outcome(err) }
	open := func(path string, flag int) error {
		f, err := os.OpenFile(path, flag, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	step("read in", open(p("in", "f"), os.O_RDONLY))
	step("write in", open(p("in", "f"), os.O_WRONLY))
	step("read out", open(p("out", "f"), os.O_RDONLY))
	step("list out", open(p("out"), os.O_RDONLY))
	step("create in rw", open(p("rw", "new"), os.O_RDWR|os.O_CREATE))
	step("remove in rw", os.Remove(p("rw", "new")))
	_, err = pre.Read(make([]byte, 1))
	step("read a file of out opened before", err)
	step("reopen it through /proc/self/fd", open(fmt.Sprintf("/proc/self/fd/%d", pre.Fd()), os.O_RDONLY))
	step("reopen a memfd through /proc/self/fd", open(fmt.Sprintf("/proc/self/fd/%d", mem), os.O_RDONLY))
	step("run the program", exec.Command(p("true")).Run())
	step("run another", exec.Command("/usr/bin/true").Run())
	step("unmount", unix.Unmount(p("rw", "m"), 0))
	step("mount", unix.Mount("tmpfs", p("in"), "tmpfs", 0, ""))
	return nil
}

// TestApply: a process confined by Apply opens what its rules grant, as they
// grant it, and nothing else; a file opened before stays readable, but not
// reopened by path, unless it is a memfd, which has none. Its children are
// confined too. And it can no longer change the mount table, whatever the
// rules: that is the Helper's job.
func TestApply(t *testing.T) {
	requireLandlock(t)
	dir := t.TempDir()
	for _, d := range []string{"in", "out", "rw/m"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for _, f := range []string{"in/f", "out/f"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "true"), b, 0o755)

	want(t, child(t, "apply", dir), outcomes{
		"read in":                              "ok",
		"write in":                             "EACCES",
		"read out":                             "EACCES",
		"list out":                             "EACCES",
		"create in rw":                         "ok",
		"remove in rw":                         "EACCES",
		"read a file of out opened before":     "ok",
		"reopen it through /proc/self/fd":      "EACCES",
		"reopen a memfd through /proc/self/fd": "ok",
		"run the program":                      "ok",
		"run another":                          "EACCES",
		"unmount":                              "EPERM",
		"mount":                                "EPERM",
	})
}

func TestInterpreter(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#! /bin/sh -e\nexit 0\n"), 0o755)
	progs, err := withInterpreters([]string{script, filepath.Join(dir, "missing")})
	if err != nil {
		t.Fatal(err)
	}
	// /bin/sh's own loader follows it.
	if len(progs) != 4 || progs[2] != "/bin/sh" || !strings.Contains(progs[3], "ld-linux") {
		t.Errorf("a script and its interpreters: %q, want the script, the missing file, /bin/sh and its loader", progs)
	}
}

// noLandlockScenario hides Landlock from itself, as a kernel without it would
// (seccomp makes its system calls fail with ENOSYS), and applies rules that
// leave out dir: Apply logs that once and returns, and dir stays open to it.
func noLandlockScenario(dir string, out outcomes) error {
	const errnoENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // the system call's number
		{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: unix.SYS_LANDLOCK_CREATE_RULESET, Jt: 0, Jf: 2},
		{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, K: unix.SYS_LANDLOCK_RESTRICT_SELF, Jt: 1, Jf: 0},
		{Code: unix.BPF_RET | unix.BPF_K, K: errnoENOSYS},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	core, logs := observer.New(zap.InfoLevel)
	confined, err := Apply(Rules{Read: []string{"/usr"}}, zap.New(core))
	out["apply"] = outcome(err)
	out["confined"] = fmt.Sprint(confined)
	f, err := os.Open(filepath.Join(dir, "f"))
	out["open outside the rules"] = outcome(err)
	if err == nil {
		f.Close()
	}
	for _, e := range logs.All() {
		out["log"] += e.Level.String() + ": " + e.Message + "\n"
	}
	return nil
}

// TestApplyWithoutLandlock: where the kernel has no Landlock, Apply says so in
// one line and returns, and the process goes on unconfined.
func TestApplyWithoutLandlock(t *testing.T) {
	requireLandlock(t) // a kernel that has it, to hide it
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
	want(t, child(t, "nolandlock", dir), outcomes{
		"apply":                  "ok",
		"confined":               "false",
		"open outside the rules": "ok",
		"log":                    "warn: Landlock is not available in this kernel: running unconfined\n",
	})
}
