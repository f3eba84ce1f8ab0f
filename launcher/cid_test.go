package launcher

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

const cidHelperEnv = "VMFS_LAUNCHER_CID_HELPER"

// TestMain turns the test binary into a CID holder when cidHelperEnv names a
// directory: it allocates, prints the CID, and holds it until stdin closes; or
// into a VMM's parent when parentHelperEnv is set (see parentHelper).
func TestMain(m *testing.M) {
	if os.Getenv(parentHelperEnv) != "" {
		os.Exit(parentHelper())
	}
	if dir := os.Getenv(cidHelperEnv); dir != "" {
		cid, _, err := AllocateCID(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(cid)
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func allocate(t *testing.T, dir string) (int, func() error) {
	t.Helper()
	cid, release, err := AllocateCID(dir)
	if err != nil {
		t.Fatalf("AllocateCID: %v", err)
	}
	return cid, release
}

func TestAllocateCIDInProcess(t *testing.T) {
	dir := t.TempDir() + "/run/vmfs" // created on demand
	a, releaseA := allocate(t, dir)
	b, releaseB := allocate(t, dir)
	if a != 10 || b != 11 {
		t.Fatalf("two allocations = %d, %d; want 10, 11", a, b)
	}
	if err := releaseA(); err != nil {
		t.Fatalf("release %d: %v", a, err)
	}
	if err := releaseA(); err != nil {
		t.Fatalf("second release of %d: %v", a, err)
	}
	if c, releaseC := allocate(t, dir); c != a {
		t.Errorf("after releasing %d, got %d; want it back", a, c)
	} else {
		releaseC()
	}
	releaseB()
}

func TestAllocateCIDAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	mine, release := allocate(t, dir)
	defer release()

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), cidHelperEnv+"="+dir)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read child cid: %v", err)
	}
	theirs, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child printed %q: %v", line, err)
	}
	if theirs != mine+1 {
		t.Fatalf("child got cid %d while this process holds %d; want %d", theirs, mine, mine+1)
	}
	next, releaseNext := allocate(t, dir)
	if next != theirs+1 {
		t.Fatalf("got cid %d while the child holds %d; want %d", next, theirs, theirs+1)
	}
	releaseNext()

	// Kill the holder rather than let it release: a dead process's lock is free.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	stdin.Close()
	if again, releaseAgain := allocate(t, dir); again != theirs {
		t.Errorf("after the child died, got cid %d; want its cid %d back", again, theirs)
	} else {
		releaseAgain()
	}
}

func TestAllocateCIDBadDir(t *testing.T) {
	file := writeFile(t, t.TempDir()+"/file", nil)
	if cid, _, err := AllocateCID(file + "/sub"); err == nil {
		t.Fatalf("AllocateCID under a regular file = %d, want an error", cid)
	}
}
