package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// FDsOn counts this process's open files that are path: how a test sees that a
// source is opened once, or closed.
func FDsOn(t testing.TB, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}
