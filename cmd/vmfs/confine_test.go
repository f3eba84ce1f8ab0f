package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"vmfs/testdata"
)

// TestServeConfined: `vmfs serve` confines itself with Landlock once it has
// opened its sources. Its OS config, read when it started, is swapped while it
// serves for a symlink to the same bytes elsewhere: a mount is then refused
// with "permission denied". Confined, it still boots to the guest's passing
// verdict a raw `vmfs run` and a `run-app` of root's and of nobody's, whose
// files lie outside its rules (root's under a directory only root may enter):
// QEMU, which inherits the confinement, gets its disks as fd sets and its
// kernel and initrd as copies in memory. Its mount helper, unconfined, runs
// beside it and ends with it: SIGTERM still ends both within 10 s.
func TestServeConfined(t *testing.T) {
	testdata.RequireLandlock(t)
	guest := guestConfig(t)
	osDir := t.TempDir()
	cfg, _ := json.Marshal(map[string]any{"kernel": guest.Kernel, "initrd": guest.Initrd, "params": guest.Params, "memory_mib": guest.MemoryMiB, "disks": []any{}})
	osConfig := copyBytes(t, cfg, filepath.Join(osDir, "microdroid.json"))
	s := startServe(t, "--group", strconv.Itoa(testdata.Nobody), "--os-dir", osDir)
	if out := s.r.output(); !strings.Contains(out, "confined with Landlock") {
		t.Errorf("the service says nothing of its confinement:\n%s", out)
	}
	helper := mountHelper(t, s.r.cmd.Process.Pid)

	r := s.vmfs("mount", "--name", "kept", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	payloadImg := filepath.Join(strings.TrimSpace(r.stdout), "payload.img")

	rootDir := t.TempDir() // 0700, root's
	root := rawVMConfig(t, rootDir, copyFile(t, payloadImg, filepath.Join(rootDir, "payload.img"), 0o644))
	if r := s.vmfs("run", "--require-verdict", "--console", "/dev/null", "--timeout", "3m", root); r.code != 0 {
		t.Errorf("root's raw run: exit %d: %s", r.code, r.stderr)
	}
	if r := s.vmfs("run-app", "--require-verdict", "--console", "/dev/null", "--timeout", "3m", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath); r.code != 0 {
		t.Errorf("root's run-app: exit %d: %s", r.code, r.stderr)
	}

	a := newAttacker(t, s)
	console := nobodysConsole(t)
	nobody := rawVMConfig(t, a.dir, copyFile(t, payloadImg, filepath.Join(a.dir, "payload.img"), 0o644))
	if r := a.vmfs("run", "--require-verdict", "--console", console, "--timeout", "3m", nobody); r.code != 0 {
		t.Errorf("nobody's raw run: exit %d: %s", r.code, r.stderr)
	}
	apk := copyFile(t, testdata.APKPath(), filepath.Join(a.dir, "app.apk"), 0o644)
	idsig := copyFile(t, testdata.IdsigPath(), filepath.Join(a.dir, "app.apk.idsig"), 0o644)
	if r := a.vmfs("run-app", "--require-verdict", "--console", console, "--timeout", "3m", apk, idsig, testdata.ConfigPath); r.code != 0 {
		t.Errorf("nobody's run-app: exit %d: %s", r.code, r.stderr)
	}

	moved := copyFile(t, osConfig, filepath.Join(t.TempDir(), "microdroid.json"), 0o644)
	link := filepath.Join(osDir, "link")
	if err := os.Symlink(moved, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, osConfig); err != nil {
		t.Fatal(err)
	}
	r = s.vmfs("mount", "--name", "after", testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath)
	if r.code == 0 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "microdroid.json") {
		t.Errorf("mount with the OS config leading outside the rules: exit %d: %s, want permission denied", r.code, r.stderr)
	}

	s.servesAndStops()
	if !testdata.Eventually(t, 10*time.Second, func() bool { return !isMountHelper(helper) }) {
		t.Errorf("the mount helper %d outlives the service", helper)
	}
}

// mountHelper is the pid of the mount helper of the service pid.
func mountHelper(t *testing.T, pid int) int {
	t.Helper()
	for _, p := range children(pid, "") {
		if isMountHelper(p) {
			return p
		}
	}
	t.Fatalf("the service %d has no mount helper", pid)
	return 0
}

// isMountHelper reports whether pid runs as a mount helper, and not a zombie.
func isMountHelper(pid int) bool {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(cmdline) == "vmfs-mount-helper\x00"
}
