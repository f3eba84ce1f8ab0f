package testdata

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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

// PublicDir is a fresh directory every user may search, for files and mountpoints
// another user must reach: t.TempDir's are 0700, and the checkout or $TMPDIR may be
// under a 0700 home. It is made in the temporary directory when every directory
// above lets others search it, else in /tmp; it is removed at cleanup.
func PublicDir(t testing.TB) string {
	t.Helper()
	parent := os.TempDir()
	if !othersReach(parent) {
		parent = "/tmp"
	}
	if !othersReach(parent) {
		t.Fatalf("neither %s nor /tmp is searchable by other users: no public directory", os.TempDir())
	}
	d, err := os.MkdirTemp(parent, "vmfs-public")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// othersReach reports whether users other than the owner (nor in its group) may
// search dir and every directory above it, symlinks resolved.
func othersReach(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return false
	}
	for ; ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if dir == "/" {
			return true
		}
	}
}

// PublicCopy copies the files and directory trees rels of dir into a fresh
// PublicDir, at the same relative paths, readable by every user whatever the
// umask, and returns it: for sources another user (or a process with its rights)
// must read, where dir may be under a 0700 checkout.
func PublicCopy(t testing.TB, dir string, rels ...string) string {
	t.Helper()
	pub := PublicDir(t)
	for _, rel := range rels {
		err := filepath.WalkDir(filepath.Join(dir, rel), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			r, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			dst := filepath.Join(pub, r)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				return err
			}
			return os.Chmod(dst, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// MkdirAll's directories took the umask.
	err := filepath.WalkDir(pub, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
