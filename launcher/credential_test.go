package launcher

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs/internal/proc"
	"vmfs/testdata"
)

// nobody is the user a client VMM runs as in these tests, with two
// supplementary groups that no other process of the test has.
var nobody = &syscall.Credential{Uid: testdata.Nobody, Gid: testdata.Nobody, Groups: []uint32{4242, 4343}}

// status returns the fields of /proc/pid/status.
func status(t *testing.T, pid int) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return fields
}

// TestCredential: a VMM started with a credential runs as that user, group and
// supplementary groups, with no capability left to it (a root parent's
// setuid to another user drops them all).
func TestCredential(t *testing.T) {
	testdata.RequireRoot(t)
	vm, _ := startShell(t, context.Background(), "echo ready; exec sleep 1000", RunOptions{Credential: nobody})
	st := status(t, vm.Pid())
	for field, want := range map[string]string{
		"Uid":    "65534 65534 65534 65534",
		"Gid":    "65534 65534 65534 65534",
		"Groups": "4242 4343",
		"CapInh": "0000000000000000",
		"CapPrm": "0000000000000000",
		"CapEff": "0000000000000000",
		"CapAmb": "0000000000000000",
	} {
		if st[field] != want {
			t.Errorf("vmm %s: %q, want %q", field, st[field], want)
		}
	}
}

// parentHelperEnv makes the test binary a VMM's parent (TestMain).
const parentHelperEnv = "VMFS_LAUNCHER_PARENT_HELPER"

// parentHelper starts a VMM as nobody, prints its pid, and waits to be killed.
func parentHelper() int {
	sh, err := exec.LookPath("sh")
	if err == nil {
		var vm *VM
		if vm, err = Start(context.Background(), sh, []string{"-c", "exec sleep 1000"}, RunOptions{Credential: nobody}); err == nil {
			fmt.Println(vm.Pid())
			select {}
		}
	}
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// TestCredentialParentDeath: a VMM that runs as another user still dies with
// its parent (the kernel clears the parent-death signal on a credential
// change, so it must be set after the switch).
func TestCredentialParentDeath(t *testing.T) {
	testdata.RequireRoot(t)
	testdata.RequireTool(t, "sh")
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), parentHelperEnv+"=1")
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q, want the vmm's pid", line)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if uid := status(t, pid)["Uid"]; uid != "65534 65534 65534 65534" {
		t.Fatalf("vmm runs as %q, want nobody", uid)
	}
	parent.Process.Kill()
	if !proc.WaitExit(pid, time.Minute) {
		t.Errorf("vmm %d (nobody) outlived its killed parent", pid)
	}
}
