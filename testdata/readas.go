package testdata

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Nobody is the user and group id tests read as when they need another user.
const Nobody = 65534

// ReadAs reads path with cat as user and group id (setpriv, no supplementary
// groups; the test must run as root) and returns the bytes. A read the kernel
// denies returns an error wrapping fs.ErrPermission: cat printed strerror(EACCES).
func ReadAs(t testing.TB, id int, path string) ([]byte, error) {
	t.Helper()
	setpriv := RequireTool(t, "setpriv")
	n := strconv.Itoa(id)
	cmd := exec.Command(setpriv, "--reuid="+n, "--regid="+n, "--clear-groups", "cat", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	switch {
	case err == nil:
		return out, nil
	case strings.Contains(stderr.String(), "Permission denied"):
		return nil, fmt.Errorf("cat %s as %d: %w", path, id, fs.ErrPermission)
	}
	return nil, fmt.Errorf("cat %s as %d: %v: %s", path, id, err, stderr.String())
}

// PublicDir is a fresh directory every user may search (t.TempDir's are 0700), for
// files and mountpoints another user must reach. It is removed at cleanup.
func PublicDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vmfs-public")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
