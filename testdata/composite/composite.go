// Package composite reads a crosvm composite disk descriptor as crosvm does,
// for the tests of what serves one.
package composite

import (
	"os"
	"testing"

	"vmfs/layout"
)

// Read reads and parses the composite descriptor at path.
func Read(t testing.TB, path string) *layout.Composite {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := layout.ParseComposite(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// Reassemble reads the disk c describes as crosvm does: each component fills
// its slot (up to the next one's offset) from its file_offset. A component
// short of its slot, or writable, fails the test.
func Reassemble(t testing.TB, c *layout.Composite) []byte {
	t.Helper()
	whole := make([]byte, c.Length)
	for i, comp := range c.Components {
		end := c.Length
		if i+1 < len(c.Components) {
			end = c.Components[i+1].Offset
		}
		f, err := os.Open(comp.Path)
		if err != nil {
			t.Fatal(err)
		}
		n, err := f.ReadAt(whole[comp.Offset:end], int64(comp.FileOffset))
		f.Close()
		if uint64(n) != end-comp.Offset || comp.Writable {
			t.Fatalf("component %s: %d bytes for a %d-byte slot, writable %t (%v)", comp.Path, n, end-comp.Offset, comp.Writable, err)
		}
	}
	return whole
}
