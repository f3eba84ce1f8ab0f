package fusedisk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/layout"
	"vmfs/testdata"
	"vmfs/testdata/composite"
)

// withExtents has serveDisk give the disk its extent descriptors, built once
// its sources are open, as vmfs.NewTree builds them.
func withExtents() TreeOptions { return TreeOptions{Disks: []Disk{{Extents: &Extents{}}}} }

// TestExtentsReassemble: for odd sizes and random layouts, QEMU reads the
// mount's VMDK as payload.img (qemu-img compare), and the extent composite
// and the partition composite, read as crosvm reads them, are payload.img too.
func TestExtentsReassemble(t *testing.T) {
	qemuImg := testdata.RequireTool(t, "qemu-img")
	r := rand.New(rand.NewPCG(17, 4))
	cases := [][]int64{{4093, 4097, 1}, {4096, 8192, 4096}}
	for len(cases) < 6 {
		cases = append(cases, []int64{1 + r.Int64N(20000), 1 + r.Int64N(300000), 1 + r.Int64N(9000)})
	}
	for _, sizes := range cases {
		p := newPayload(t, sizes[:1], sizes[1], sizes[2])
		s := mount(t, p.disk, withExtents())
		at := Disk{}.Paths(s.Mountpoint)
		flat, err := os.ReadFile(at.Flat)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(qemuImg, "compare", "-f", "vmdk", "-F", "raw", at.VMDK, at.Flat).CombinedOutput()
		if err != nil {
			t.Errorf("sizes %v: qemu-img compare: %v\n%s", sizes, err, out)
		}
		for _, name := range []string{"payload-extents.composite", "payload.composite"} {
			if !bytes.Equal(composite.Reassemble(t, composite.Read(t, filepath.Join(s.Mountpoint, name))), flat) {
				t.Errorf("sizes %v: %s does not reassemble payload.img", sizes, name)
			}
		}
		// The originals' sectors are read from the originals.
		vmdk, err := os.ReadFile(at.VMDK)
		if err != nil {
			t.Fatal(err)
		}
		for i, path := range p.paths {
			if p.disk.Sources[i].Size >= layout.SectorSize && !bytes.Contains(vmdk, []byte(`FLAT "`+path+`" 0`)) {
				t.Errorf("sizes %v: the VMDK does not name %s:\n%s", sizes, path, vmdk)
			}
		}
	}
}

// TestExtentsRefused: no descriptors where they would misdescribe the disk: an
// original renamed away after it was opened, one crosvm would read as a QCOW2
// image, a writable partition. The disk is still served.
func TestExtentsRefused(t *testing.T) {
	p := newPayload(t, []int64{4096}, 8192, 4096)
	check := func(d *layout.Disk, w map[string]Writable, want string) {
		t.Helper()
		disks := []Disk{{Disk: d, Writable: w}}
		srcs, err := OpenSources(disks, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer srcs.Close()
		if _, err := srcs.Extents(disks[0], t.TempDir()); !errors.Is(err, layout.ErrNotExact) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want ErrNotExact with %q", err, want)
		}
	}

	qcow := append([]byte("QFI\xfb"), make([]byte, 8188)...)
	if err := os.WriteFile(p.paths[1], qcow, 0o644); err != nil {
		t.Fatal(err)
	}
	check(p.disk, nil, "qcow2")

	disks := []Disk{{Disk: p.disk}}
	srcs, err := OpenSources(disks, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srcs.Close()
	if err := os.Rename(p.paths[1], p.paths[1]+".old"); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, p.paths[1], 8192, 99)
	if _, err := srcs.Extents(disks[0], t.TempDir()); !errors.Is(err, layout.ErrNotExact) || !strings.Contains(err.Error(), p.paths[1]) {
		t.Errorf("renamed original: %v, want ErrNotExact naming %s", err, p.paths[1])
	}

	sd := newStateDisk(t, t.TempDir(), "raw")
	check(sd.disk, map[string]Writable{sd.state: sd.w}, "writable")

	// An original on another FUSE mount, which answers each reader as it likes.
	s := mount(t, newPayload(t, []int64{4096}, 8192, 4096).disk, TreeOptions{})
	apk := filepath.Join(s.Mountpoint, "partitions", "microdroid-apk")
	onFUSE, err := layout.FilesDisk([]layout.FilePart{{Label: "apk", Source: layout.Source{Path: apk, Size: 8192}}}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(onFUSE, nil, "is on FUSE")
}

// TestExtentsPiecesRead: the synthesized pieces are files of the mount, read
// only, and a disk without Extents has no descriptors.
func TestExtentsPiecesRead(t *testing.T) {
	p := newPayload(t, []int64{4093}, 4097, 1)
	s := mount(t, p.disk, withExtents())
	at := Disk{}.Paths(s.Mountpoint)
	pieces, err := os.ReadDir(at.Pieces)
	if err != nil || len(pieces) == 0 {
		t.Fatalf("%s: %v, %d pieces", at.Pieces, err, len(pieces))
	}
	if err := os.WriteFile(filepath.Join(at.Pieces, pieces[0].Name()), []byte("x"), 0); err == nil {
		t.Error("a piece took a write")
	}
	plain := mount(t, p.disk, TreeOptions{})
	for _, name := range []string{Disk{}.Paths(plain.Mountpoint).VMDK, Disk{}.Paths(plain.Mountpoint).Pieces} {
		if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s without Extents: %v", name, err)
		}
	}
}
