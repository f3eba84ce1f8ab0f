package vmfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRealPath: realPath resolves symlinks as the kernel does (absolute and
// relative targets, chains, ".." after a link), stops at a loop with ELOOP, and
// never looks at a vmfs mountpoint: a point that does not even exist is taken
// as it is.
func TestRealPath(t *testing.T) {
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(d, "a", "b"), 0o755))
	must(os.Symlink(filepath.Join(d, "a"), filepath.Join(d, "abs")))      // absolute
	must(os.Symlink("a/b", filepath.Join(d, "rel")))                      // relative, two steps
	must(os.Symlink("rel", filepath.Join(d, "chain")))                    // a link to a link
	must(os.Symlink("b/..", filepath.Join(d, "a", "up")))                 // ".." after the link's own dir
	must(os.Symlink("loop", filepath.Join(d, "loop")))                    // itself
	must(os.Symlink(filepath.Join(d, "gone"), filepath.Join(d, "point"))) // to a point that is no directory
	points := map[string]bool{filepath.Join(d, "gone"): true}
	for _, tc := range []struct{ in, want string }{
		{"abs/b", "a/b"},
		{"rel", "a/b"},
		{"chain", "a/b"},
		{"a/up/b", "a/b"},
		{"point", "gone"},
	} {
		got, err := realPath(filepath.Join(d, tc.in), points)
		if err != nil || got != filepath.Join(d, tc.want) {
			t.Errorf("realPath(%s) = %q, %v; want %s", tc.in, got, err, filepath.Join(d, tc.want))
		}
	}
	if _, err := realPath(filepath.Join(d, "loop"), points); !errors.Is(err, unix.ELOOP) {
		t.Errorf("realPath of a loop: %v, want ELOOP", err)
	}
}
