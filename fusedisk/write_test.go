package fusedisk

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"vmfs/internal/qsd"
	"vmfs/layout"
	"vmfs/testdata"
)

// stateDisk is a disk of a read-only partition, a writable one over a state
// file (raw or QCOW2) and another read-only one, with the state's backend.
type stateDisk struct {
	disk      *layout.Disk
	state     string // the state file
	format    string // its format: raw or qcow2
	w         Writable
	ro        []string // the read-only sources
	roContent [][]byte
}

const stateSize = 1 << 20

// newStateDisk makes the disk's files in dir.
func newStateDisk(t *testing.T, dir, format string) *stateDisk {
	t.Helper()
	sd := &stateDisk{state: filepath.Join(dir, "state."+format), format: format}
	for i, size := range []int64{12288, 5000} {
		path := filepath.Join(dir, "ro"+strconv.Itoa(i))
		writeRandom(t, path, size, uint64(i))
		b, _ := os.ReadFile(path)
		sd.ro, sd.roContent = append(sd.ro, path), append(sd.roContent, b)
	}
	if out, err := exec.Command(testdata.RequireTool(t, "qemu-img"), "create", "-f", format, sd.state, strconv.Itoa(stateSize)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	testdata.QemuIO(t, sd.state, format, true, "write -P 0x11 0 1M")
	f, err := os.OpenFile(sd.state, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sd.w = f
	if format == "qcow2" {
		testdata.RequireTool(t, "qemu-storage-daemon")
		im, err := qsd.Open(f, qsd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sd.w = im
	}
	sd.disk, err = layout.FilesDisk([]layout.FilePart{
		{Label: "apk", Source: layout.Source{Path: sd.ro[0], Size: 12288}},
		{Label: "vm-instance", Source: layout.Source{Path: sd.state, Size: stateSize}, Writable: true},
		{Label: "tail", Source: layout.Source{Path: sd.ro[1], Size: 5000}},
	}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return sd
}

// mount serves the disk until stop, which unmounts it, closes its sources and
// the state's engine; the test's end stops it too.
func (sd *stateDisk) mount(t *testing.T) (s *Server, stop func()) {
	t.Helper()
	testdata.RequireFUSE(t)
	s, unmount, err := serveDisk(t.TempDir(), sd.disk, TreeOptions{Disks: []Disk{{Writable: map[string]Writable{sd.state: sd.w}}}}, MountOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := unmount(); err != nil {
				t.Errorf("unmount: %v", err)
			}
			if c, ok := sd.w.(io.Closer); ok && sd.format == "qcow2" {
				if err := c.Close(); err != nil {
					t.Errorf("close the engine: %v", err)
				}
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

func pwrite(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}

func pread(t *testing.T, path string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// Writes through the flat image and through the partition land in the state
// file (raw or QCOW2, as qemu-io reads it), each seen at once through the other
// file; a write that touches any byte outside the writable partition fails
// with EPERM and changes no source.
func TestWriteThroughMount(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			sd := newStateDisk(t, t.TempDir(), format)
			s, stop := sd.mount(t)
			flat, part := filepath.Join(s.Mountpoint, "payload.img"), filepath.Join(s.Mountpoint, "partitions", "vm-instance")
			pOff := sd.disk.Partitions[1].Offset
			// Read both first: a cached page would hide the write.
			pread(t, part, 8192, 4096)
			pread(t, flat, 8192, pOff+4096)

			a := bytes.Repeat([]byte{0xa1}, 8192)
			if err := pwrite(flat, a, pOff+4096); err != nil {
				t.Fatalf("write through the flat image: %v", err)
			}
			if got := pread(t, part, 8192, 4096); !bytes.Equal(got, a) {
				t.Error("the partition does not show the write through the flat image")
			}
			b := bytes.Repeat([]byte{0xb2}, 4096)
			if err := pwrite(part, b, stateSize-4096); err != nil {
				t.Fatalf("write through the partition: %v", err)
			}
			if got := pread(t, flat, 4096, pOff+stateSize-4096); !bytes.Equal(got, b) {
				t.Error("the flat image does not show the write through the partition")
			}

			size := sd.disk.Flat.Size
			for name, off := range map[string]int64{
				"GPT header":                   0,
				"read-only partition":          sd.disk.Partitions[0].Offset + 100,
				"across the partition's start": pOff - 1,
				"across the partition's end":   pOff + stateSize - 1,
				"backup GPT":                   size - 512,
			} {
				if err := pwrite(flat, []byte{0xee, 0xee}, off); !errors.Is(err, syscall.EPERM) {
					t.Errorf("write at %s: %v, want EPERM", name, err)
				}
			}
			if _, err := os.OpenFile(filepath.Join(s.Mountpoint, "partitions", "apk"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
				t.Errorf("open a read-only partition for writing: %v, want EROFS", err)
			}
			if err := os.Truncate(part, 0); !errors.Is(err, syscall.EPERM) {
				t.Errorf("truncate the partition: %v, want EPERM", err)
			}
			stop()
			for i, path := range sd.ro {
				if got, _ := os.ReadFile(path); !bytes.Equal(got, sd.roContent[i]) {
					t.Errorf("read-only source %s changed", path)
				}
			}
			testdata.QemuIO(t, sd.state, format, false, "read -P 0x11 0 4k", "read -P 0xa1 4k 8k", "read -P 0x11 12k 1008k", "read -P 0xb2 1020k 4k")
			if format == "qcow2" {
				testdata.QemuImgCheck(t, sd.state)
			}
		})
	}
}

// A node that reads a writable source may be written where the state file
// lets its people write, and no further; the others stay read-only.
func TestWritePermissions(t *testing.T) {
	sd := newStateDisk(t, testdata.PublicDir(t), "raw")
	os.Chmod(sd.state, 0o640)
	s, _ := sd.mount(t)
	for name, want := range map[string]os.FileMode{
		"payload.img":            0o640, // read as the state file's owner and group, then the others' 0644
		"partitions/vm-instance": 0o640,
		"partitions/apk":         0o444,
		"header.img":             0o440,
	} {
		st, err := os.Stat(filepath.Join(s.Mountpoint, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
}
