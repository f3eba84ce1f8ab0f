package launcher

import (
	"os"
	"testing"
)

// writeFile creates a file with the given bytes and returns its path.
func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
