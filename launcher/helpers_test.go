package launcher

import (
	"os"
	"os/exec"
	"testing"
)

// requireTool skips when name is not in PATH, but fails under CI=true, where
// every tool the tests use must be installed. It returns the tool's path.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missing(t, "tool "+name+" not in PATH (Debian: see launcher tests)")
	}
	return path
}

// missing skips locally and fails in CI.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: required)", what)
	}
	t.Skip(what)
}

// writeFile creates a file with the given bytes and returns its path.
func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
