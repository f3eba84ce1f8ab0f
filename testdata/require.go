package testdata

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run under CI, where a missing tool or privilege
// is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test locally and fails it in CI, saying what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and "+format, args...)
	}
	t.Skipf(format, args...) // outside CI a missing tool is a skip
}

// RequireTool returns the path of an external tool the test uses as an oracle.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not installed", name)
	}
	return p
}

// RequireRoot is for tests that need loop devices or a direct FUSE mount.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// RequireFUSE is for tests that mount: /dev/fuse must open, and a non-root user
// needs fusermount3.
func RequireFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		Missing(t, "FUSE unusable: %v", err)
		return
	}
	f.Close()
	if os.Geteuid() != 0 {
		RequireTool(t, "fusermount3")
	}
}

// RequireLandlock is for tests of what a process confined by Landlock cannot do.
func RequireLandlock(t testing.TB) {
	t.Helper()
	if _, _, err := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION); err != 0 {
		Missing(t, "no Landlock in this kernel: %v", err)
	}
}

// RequirePassthrough is for tests of FUSE passthrough, which the kernel lets
// only root use, from Linux 6.9 built with CONFIG_FUSE_PASSTHROUGH (checked
// where /proc/config.gz tells).
func RequirePassthrough(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	var u unix.Utsname
	var major, minor int
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if major < 6 || major == 6 && minor < 9 {
		Missing(t, "no FUSE passthrough before Linux 6.9 (this is %d.%d)", major, minor)
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return
	}
	defer f.Close()
	if z, err := gzip.NewReader(f); err == nil {
		if config, err := io.ReadAll(z); err == nil && !bytes.Contains(config, []byte("\nCONFIG_FUSE_PASSTHROUGH=y\n")) {
			Missing(t, "this kernel is built without CONFIG_FUSE_PASSTHROUGH")
		}
	}
}
