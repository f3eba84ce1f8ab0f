package testdata

import (
	"bytes"
	"compress/gzip"
	"errors"
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

// KernelPassthrough says why this kernel has no FUSE passthrough, or nil when
// it has: Linux 6.9 or later, built with CONFIG_FUSE_PASSTHROUGH (checked where
// /proc/config.gz tells). Tests of passthrough expect vmfs, as root, to pass
// files through where it has, and elsewhere to serve every read and say why.
func KernelPassthrough() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	var major, minor int
	release := unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("kernel release %q: %w", release, err)
	}
	if major < 6 || major == 6 && minor < 9 {
		return fmt.Errorf("no FUSE passthrough before Linux 6.9 (this is %s)", release)
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return nil
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil
	}
	if config, err := io.ReadAll(z); err == nil && !bytes.Contains(config, []byte("\nCONFIG_FUSE_PASSTHROUGH=y\n")) {
		return errors.New("this kernel is built without CONFIG_FUSE_PASSTHROUGH")
	}
	return nil
}
