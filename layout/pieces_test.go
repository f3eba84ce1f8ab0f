package layout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/testdata"
)

// pieceCases are the disk cases plus odd sizes: an APEX of 4093 bytes (the
// trailer's format) and an APK of 4097, whose part sectors are synthesized.
func pieceCases(t testing.TB) []diskCase {
	return append(diskCases(t),
		diskCase{name: "odd sizes", f: newFixture(t, []int64{4093}, 4097, 1)},
		diskCase{name: "odd sizes android13+", f: newFormatFixture(t, format13, []int64{4096}, 4097, 511, [][2]int64{{513, 1025}})},
	)
}

// pieceBytes reads a piece as a VMM would: an original's sectors, or the
// synthesized bytes.
func pieceBytes(t testing.TB, p *Piece, srcs []io.ReaderAt) []byte {
	t.Helper()
	if p.Synthesized() {
		return readAll(t, &p.Synth, srcs)
	}
	b := make([]byte, p.Len)
	if _, err := srcs[p.Source].ReadAt(b, p.SourceOff); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPiecesReassemble: the pieces, in order, are the flat disk, each a sector
// multiple, and the originals' sectors are read from the originals.
func TestPiecesReassemble(t *testing.T) {
	for _, c := range pieceCases(t) {
		t.Run(c.name, func(t *testing.T) {
			pieces, err := c.f.disk.Pieces()
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			originals := 0
			for i := range pieces {
				p := &pieces[i]
				if p.Off != int64(len(got)) || p.Len%SectorSize != 0 || p.Len <= 0 {
					t.Fatalf("piece %d at %d, %d bytes, after %d bytes", i, p.Off, p.Len, len(got))
				}
				if !p.Synthesized() {
					originals++
				}
				got = append(got, pieceBytes(t, p, c.f.srcs)...)
			}
			if !bytes.Equal(got, c.f.naive()) {
				t.Error("the pieces differ from the disk")
			}
			// Every source of a sector or more is read from its file.
			if want := len(c.f.disk.Sources); originals != want-sourcesUnderASector(c.f.disk) {
				t.Errorf("%d pieces from originals, want %d", originals, want-sourcesUnderASector(c.f.disk))
			}
		})
	}
}

func sourcesUnderASector(d *Disk) int {
	n := 0
	for _, s := range d.Sources {
		if s.Size < SectorSize {
			n++
		}
	}
	return n
}

// TestPiecesVMDKQemuImg: QEMU reads the VMDK descriptor over the originals and
// the synthesized pieces, each in a file, as the flat disk (qemu-img compare).
func TestPiecesVMDKQemuImg(t *testing.T) {
	qemuImg := testdata.RequireTool(t, "qemu-img")
	for _, c := range pieceCases(t) {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			vmdk, _ := writePieces(t, dir, c.f)
			flat := writeFlat(t, c.f)
			out, err := exec.Command(qemuImg, "compare", "-f", "vmdk", "-F", "raw", vmdk, flat).CombinedOutput()
			if err != nil {
				t.Errorf("qemu-img compare: %v\n%s", err, out)
			}
			info, err := exec.Command(qemuImg, "info", "-f", "vmdk", vmdk).CombinedOutput()
			if err != nil || !strings.Contains(string(info), fmt.Sprintf("(%d bytes)", c.f.disk.Flat.Size)) {
				t.Errorf("qemu-img info: %v\n%s", err, info)
			}
		})
	}
}

// writePieces writes the disk's sources and synthesized pieces into files in
// dir and returns the VMDK descriptor's path and the pieces' paths.
func writePieces(t *testing.T, dir string, f *fixture) (string, []string) {
	t.Helper()
	pieces, err := f.disk.Pieces()
	if err != nil {
		t.Fatal(err)
	}
	srcPaths := make([]string, len(f.disk.Sources))
	for i, s := range f.disk.Sources {
		b := make([]byte, s.Size)
		if _, err := f.srcs[i].ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		srcPaths[i] = filepath.Join(dir, fmt.Sprintf("source-%d", i))
		if err := os.WriteFile(srcPaths[i], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths := make([]string, len(pieces))
	for i := range pieces {
		p := &pieces[i]
		if !p.Synthesized() {
			paths[i] = srcPaths[p.Source]
			continue
		}
		paths[i] = filepath.Join(dir, fmt.Sprintf("piece-%d", i))
		if err := os.WriteFile(paths[i], readAll(t, &p.Synth, f.srcs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := f.disk.VMDK(pieces, paths)
	if err != nil {
		t.Fatal(err)
	}
	vmdk := filepath.Join(dir, "disk.vmdk")
	if err := os.WriteFile(vmdk, desc, 0o644); err != nil {
		t.Fatal(err)
	}
	return vmdk, paths
}

// TestPiecesComposite: the extent composite lists every piece at its offset,
// as protoc decodes it, and parses back.
func TestPiecesComposite(t *testing.T) {
	protoc := testdata.RequireTool(t, "protoc")
	f := newFixture(t, []int64{4093}, 4097, 1)
	pieces, err := f.disk.Pieces()
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]string, len(pieces))
	var want strings.Builder
	fmt.Fprintf(&want, "version: 1\n")
	for i, p := range pieces {
		paths[i] = fmt.Sprintf("/m/piece-%d", i)
		fmt.Fprintf(&want, "component_disks {\n  file_path: %q\n", paths[i])
		if p.Off != 0 {
			fmt.Fprintf(&want, "  offset: %d\n", p.Off)
		}
		fmt.Fprintf(&want, "}\n")
	}
	fmt.Fprintf(&want, "length: %d\n", f.disk.Flat.Size)
	b, err := f.disk.PiecesComposite(pieces, paths)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(protoc, "--decode=CompositeDisk", "-Itestdata", "testdata/cdisk_spec.proto")
	cmd.Stdin = bytes.NewReader(b[len(CompositeMagic):])
	out, err := cmd.Output()
	if err != nil || string(out) != want.String() {
		t.Errorf("protoc --decode (%v):\n%s\nwant:\n%s", err, out, want.String())
	}
	c, err := ParseComposite(b)
	if err != nil || len(c.Components) != len(pieces) {
		t.Errorf("ParseComposite: %+v, %v", c, err)
	}

	// A piece from inside a file carries file_offset, both ways.
	withOff := Composite{Version: CompositeVersion, Length: 8192, Components: []Component{{Path: "/a", FileOffset: 4096}}}
	cmd = exec.Command(protoc, "--decode=CompositeDisk", "-Itestdata", "testdata/cdisk_spec.proto")
	cmd.Stdin = bytes.NewReader(withOff.Marshal()[len(CompositeMagic):])
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "file_offset: 4096") {
		t.Errorf("protoc --decode of file_offset (%v):\n%s", err, out)
	}
	if c, err := ParseComposite(withOff.Marshal()); err != nil || c.Components[0].FileOffset != 4096 {
		t.Errorf("ParseComposite of file_offset: %+v, %v", c, err)
	}
}

// TestPiecesRefused: a disk with a writable partition, and a VMDK path QEMU
// would not read whole, give no description.
func TestPiecesRefused(t *testing.T) {
	f := newFixture(t, []int64{4096}, 4096, 4096)
	rw := *f.disk
	rw.Partitions = append([]Partition{}, f.disk.Partitions...)
	rw.Partitions[1].Writable = true
	if _, err := rw.Pieces(); !errors.Is(err, ErrNotExact) || !strings.Contains(err.Error(), "writable") {
		t.Errorf("writable partition: %v, want ErrNotExact", err)
	}
	pieces, err := f.disk.Pieces()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"relative", "/a\"b", "/a\nRW 1 FLAT \"/etc/shadow\" 0", "/" + strings.Repeat("a", vmdkPathMax)} {
		paths := make([]string, len(pieces))
		for i := range paths {
			paths[i] = "/ok"
		}
		paths[len(paths)-1] = bad
		if _, err := f.disk.VMDK(pieces, paths); !errors.Is(err, ErrNotExact) {
			t.Errorf("path %q: %v, want ErrNotExact", bad, err)
		}
	}
}

func TestCrosvmImageType(t *testing.T) {
	for head, want := range map[string]string{
		"PK\x03\x04":          "",
		"":                    "",
		"QFI\xfb\x00":         "qcow2",
		CompositeMagic + "\n": "composite",
		"\x3a\xff\x26\xed":    "android sparse",
		"\x28\xb5\x2f\xfd":    "zstd",
		"\x5a\x2a\x4d\x18":    "zstd",
		"\x60\x2a\x4d\x18":    "",
	} {
		if got := CrosvmImageType([]byte(head)); got != want {
			t.Errorf("%q: %q, want %q", head, got, want)
		}
	}
}
