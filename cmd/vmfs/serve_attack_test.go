package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs/testdata"
)

// The tests here are a hostile member of a service's group (nobody, through
// --group) against the service, each ending as servesAndStops does.

// attacker is nobody, a member of the group of the service s, running programs
// of its own: world-readable copies of vmfs and of this test binary (a raw
// client, see rawClient).
type attacker struct {
	t                  *testing.T
	s                  *serveProc
	setpriv, bin, test string
}

func newAttacker(t *testing.T, s *serveProc) *attacker {
	t.Helper()
	setpriv := testdata.RequireTool(t, "setpriv")
	pub := testdata.PublicDir(t)
	test, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, s: s, setpriv: setpriv,
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
