package vmfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"vmfs/testdata"
)

// openState shows a QCOW2 image's virtual disk and a raw file's bytes, and writes
// land where qemu-io finds them.
func TestOpenStateWrites(t *testing.T) {
	testdata.RequireTool(t, "qemu-storage-daemon")
	dir := t.TempDir()
	for _, format := range []string{"qcow2", "raw"} {
		path := filepath.Join(dir, "state."+format)
		if out, err := exec.Command(testdata.RequireTool(t, "qemu-img"), "create", "-f", format, path, "4M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		s, err := openState(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Size() != 4<<20 {
			t.Errorf("%s: Size %d, want 4 MiB", format, s.Size())
		}
		if _, err := s.WriteAt(bytes.Repeat([]byte{0x3c}, 8192), 1<<20); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WriteAt([]byte{1}, 4<<20); err == nil {
			t.Errorf("%s: a write past the end succeeded", format)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		testdata.QemuIO(t, path, format, false, "read -P 0x3c 1M 8k", "read -P 0 0 1M")
		if format == "qcow2" {
			testdata.QemuImgCheck(t, path)
		}
	}
}

// A QCOW2 image that needs another file is refused, naming the state file.
func TestOpenStateRefusesBacking(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	img := testdata.RequireTool(t, "qemu-img")
	for _, args := range [][]string{{"create", "-f", "qcow2", base, "1M"}, {"create", "-f", "qcow2", "-b", base, "-F", "qcow2", top}} {
		if out, err := exec.Command(img, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	f, err := os.OpenFile(top, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = openState(f, nil)
	if !errors.Is(err, ErrInput) || !bytes.Contains([]byte(err.Error()), []byte("top.qcow2: qcow2: not an image a VM's state can be: it has a backing file")) {
		t.Errorf("openState of an image with a backing file: %v", err)
	}
}
