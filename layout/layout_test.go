package layout

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/testdata"
)

// fixture is a payload built from random files of the given sizes, with the bytes
// each partition must hold computed independently of the layout code.
type fixture struct {
	disk  *Disk
	srcs  []io.ReaderAt
	parts [][]byte // expected partition bytes, by hand
}

func randBytes(seed uint64, n int64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func padTo4K(b []byte) []byte {
	return append(b, make([]byte, (4096-len(b)%4096)%4096)...)
}

func newFixture(t testing.TB, apexSizes []int64, apkSize, idsigSize int64) *fixture {
	t.Helper()
	return newFormatFixture(t, Format{}, apexSizes, apkSize, idsigSize, nil)
}

// newFormatFixture is newFixture for a disk format, with extra APK and idsig sizes.
func newFormatFixture(t testing.TB, format Format, apexSizes []int64, apkSize, idsigSize int64, extra [][2]int64) *fixture {
	t.Helper()
	meta := []byte("\x00\x00\x00\x05hello")
	f := &fixture{parts: [][]byte{padTo4K(append([]byte{}, meta...))}}
	p := PayloadParts{Metadata: meta, Format: format}
	for i, n := range apexSizes {
		b := randBytes(uint64(i), n)
		f.srcs = append(f.srcs, bytes.NewReader(b))
		p.Apexes = append(p.Apexes, Source{Path: fmt.Sprintf("apex%d", i), Size: n})
		part := padTo4K(append([]byte{}, b...))
		if !format.ZeroPadApexes {
			part = padTo4K(append(append([]byte{}, b...), 0, 0, 0, 0))
			binary.BigEndian.PutUint32(part[len(part)-4:], uint32(n))
		}
		f.parts = append(f.parts, part)
	}
	file := func(seed uint64, size int64) Source {
		b := randBytes(seed, size)
		f.srcs = append(f.srcs, bytes.NewReader(b))
		f.parts = append(f.parts, padTo4K(append([]byte{}, b...)))
		return Source{Path: fmt.Sprintf("file%d", seed), Size: size}
	}
	p.APK, p.Idsig = file(100, apkSize), file(101, idsigSize)
	for i, e := range extra {
		p.Extra = append(p.Extra, ExtraAPK{APK: file(uint64(200+2*i), e[0]), Idsig: file(uint64(201+2*i), e[1])})
	}
	d, err := PayloadDisk(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.disk = d
	return f
}

// naive is the whole disk by plain concatenation: header, partitions, footer.
func (f *fixture) naive() []byte {
	var b []byte
	b = append(b, f.disk.Header.Extents[0].Data...)
	for _, p := range f.parts {
		b = append(b, p...)
	}
	return append(b, f.disk.Footer.Extents[0].Data...)
}

func readAll(t testing.TB, im *Image, srcs []io.ReaderAt) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(NewReader(im, srcs), 0, im.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFlat writes the disk into a temp file for the external tools.
func writeFlat(t testing.TB, f *fixture) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, readAll(t, &f.disk.Flat, f.srcs), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Edge sizes for the APEX trailer: size+4 exactly 4096, a 4096 multiple, one byte over.
var edgeApexes = []int64{4092, 8192, 4093, 1}

// format13 is the Android 13+ disk; its APEXes must be 4 KiB multiples, and the extra
// APKs and idsigs are padded like the APK (sizes: one aligned, others not).
var (
	format13      = Format{MetadataLabel: "payload-metadata", ZeroPadApexes: true}
	alignedApexes = []int64{4096, 8192}
	extraSizes    = [][2]int64{{5000, 1532 + 4096}, {12288, 85 + 4096}}
)

// diskCase is a fixture of one format with the labels its partitions must have.
type diskCase struct {
	name   string
	f      *fixture
	labels []string
}

// diskCases are the disks the external tools judge: the mid-2021 format with the
// trailer edge cases, and the Android 13+ one with two extra APKs.
func diskCases(t testing.TB) []diskCase {
	return []diskCase{
		{"android12", newFixture(t, edgeApexes, 600*1024, 10443), []string{"metadata",
			"microdroid-apex-0", "microdroid-apex-1", "microdroid-apex-2", "microdroid-apex-3",
			"microdroid-apk", "microdroid-apk-idsig"}},
		{"android13+", newFormatFixture(t, format13, alignedApexes, 600*1024, 10443, extraSizes), []string{"payload-metadata",
			"microdroid-apex-0", "microdroid-apex-1", "microdroid-apk", "microdroid-apk-idsig",
			"extra-apk-0", "extra-idsig-0", "extra-apk-1", "extra-idsig-1"}},
	}
}

func TestPartitionBytes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		format     Format
		apexes     []int64
		apk, idsig int64
		extra      [][2]int64
	}{
		{"edges", Format{}, edgeApexes, 600 * 1024, 2251 + 8192, nil},
		{"aligned apk", Format{}, []int64{4096}, 8192, 4096, nil},
		{"tiny", Format{}, nil, 1, 1, nil},
		{"no apex", Format{}, nil, 4097, 4095, nil},
		{"zero-padded apexes, extra apks", format13, alignedApexes, 600 * 1024, 2251 + 8192, extraSizes},
		{"zero-padded, aligned extra apk", format13, nil, 4096, 4095, [][2]int64{{8192, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFormatFixture(t, tc.format, tc.apexes, tc.apk, tc.idsig, tc.extra)
			if len(f.disk.Partitions) != len(f.parts) {
				t.Fatalf("%d partitions, want %d", len(f.disk.Partitions), len(f.parts))
			}
			for i, p := range f.disk.Partitions {
				got := readAll(t, &p.Image, f.srcs)
				if !bytes.Equal(got, f.parts[i]) {
					t.Errorf("partition %d %s: bytes differ (len %d vs %d)", i, p.Label, len(got), len(f.parts[i]))
				}
				if p.Size%4096 != 0 || p.Offset%4096 != 0 {
					t.Errorf("partition %s at %d size %d not 4 KiB aligned", p.Label, p.Offset, p.Size)
				}
			}
			if got := readAll(t, &f.disk.Flat, f.srcs); !bytes.Equal(got, f.naive()) {
				t.Error("flat disk differs from the concatenation")
			}
		})
	}
}

func TestApexTrailer(t *testing.T) {
	for _, tc := range []struct{ size, part int64 }{
		{4092, 4096}, {4093, 8192}, {8192, 12288}, {1, 4096}, {MaxApexSize - 1, MaxApexSize + 4096},
	} {
		im, err := ApexContent(0, tc.size)
		if err != nil {
			t.Fatal(err)
		}
		if im.Size != tc.part {
			t.Errorf("apex of %d: partition %d, want %d", tc.size, im.Size, tc.part)
		}
		last := im.Extents[len(im.Extents)-1]
		if last.Kind != Data || binary.BigEndian.Uint32(last.Data) != uint32(tc.size) || last.Off != tc.part-4 {
			t.Errorf("apex of %d: trailer %+v", tc.size, last)
		}
	}
	for _, n := range []int64{0, MaxApexSize, 1 << 40} {
		if _, err := ApexContent(0, n); !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("apex of %d: err %v", n, err)
		}
	}
}

func TestSgdiskVerify(t *testing.T) {
	sgdisk := testdata.RequireTool(t, "sgdisk")
	for _, dc := range diskCases(t) {
		t.Run(dc.name, func(t *testing.T) {
			out, err := exec.Command(sgdisk, "-v", writeFlat(t, dc.f)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "No problems found") ||
				strings.Contains(string(out), "ERROR") || strings.Contains(string(out), "Caution") {
				t.Fatalf("sgdisk -v: %v\n%s", err, out)
			}
			// sgdisk reports the backup table problems when we damage it: the check can fail.
			path := writeFlat(t, dc.f)
			b, _ := os.ReadFile(path)
			b[len(b)-SectorSize+60] ^= 0xFF
			os.WriteFile(path, b, 0o644)
			out, _ = exec.Command(sgdisk, "-v", path).CombinedOutput()
			if !strings.Contains(string(out), "Backup header: ERROR") {
				t.Fatalf("sgdisk -v did not notice a damaged backup header:\n%s", out)
			}
		})
	}
}

func TestSfdiskTable(t *testing.T) {
	sfdisk := testdata.RequireTool(t, "sfdisk")
	for _, dc := range diskCases(t) {
		t.Run(dc.name, func(t *testing.T) {
			f := dc.f
			out, err := exec.Command(sfdisk, "--json", writeFlat(t, f)).Output()
			if err != nil {
				t.Fatalf("sfdisk --json: %v", err)
			}
			var pt struct {
				PartitionTable struct {
					Label      string
					ID         string
					Partitions []struct {
						Start, Size int64
						Name, Type  string
						UUID        string
					}
				}
			}
			if err := json.Unmarshal(out, &pt); err != nil {
				t.Fatal(err)
			}
			if pt.PartitionTable.Label != "gpt" || !strings.EqualFold(pt.PartitionTable.ID, f.disk.GUID.String()) {
				t.Errorf("table %s id %s, want gpt %s", pt.PartitionTable.Label, pt.PartitionTable.ID, f.disk.GUID)
			}
			if len(pt.PartitionTable.Partitions) != len(dc.labels) {
				t.Fatalf("sfdisk sees %d partitions, want %d", len(pt.PartitionTable.Partitions), len(dc.labels))
			}
			start := int64(HeaderSize)
			for i, p := range pt.PartitionTable.Partitions {
				size := int64(len(f.parts[i]))
				if p.Name != dc.labels[i] || p.Start != start/512 || p.Size != size/512 ||
					!strings.EqualFold(p.Type, LinuxFSType.String()) ||
					!strings.EqualFold(p.UUID, f.disk.Partitions[i].GUID.String()) {
					t.Errorf("partition %d: %+v, want %s at sector %d size %d", i, p, dc.labels[i], start/512, size/512)
				}
				start += size
			}
		})
	}
}

// TestLoopPartitions reads each partition through the kernel: a read-only loop
// device, partitions added by partx (libblkid's GPT parser, not ours).
func TestLoopPartitions(t *testing.T) {
	testdata.RequireRoot(t)
	losetup, partx := testdata.RequireTool(t, "losetup"), testdata.RequireTool(t, "partx")
	for _, dc := range diskCases(t) {
		t.Run(dc.name, func(t *testing.T) {
			f := dc.f
			out, err := exec.Command(losetup, "-r", "-f", "--show", writeFlat(t, f)).Output()
			if err != nil {
				testdata.Missing(t, "losetup: %v", err)
			}
			dev := strings.TrimSpace(string(out))
			t.Cleanup(func() {
				exec.Command(partx, "-d", dev).Run()
				exec.Command(losetup, "-d", dev).Run()
			})
			if out, err := exec.Command(partx, "-a", dev).CombinedOutput(); err != nil {
				t.Fatalf("partx -a %s: %v %s", dev, err, out)
			}
			for i, want := range f.parts {
				got, err := os.ReadFile(fmt.Sprintf("%sp%d", dev, i+1))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%sp%d (%s): %d bytes differ from the expected %d", dev, i+1, f.disk.Partitions[i].Label, len(got), len(want))
				}
			}
		})
	}
}

func TestCompositeProtoc(t *testing.T) {
	protoc := testdata.RequireTool(t, "protoc")
	f := newFixture(t, edgeApexes[:2], 5000, 300)
	var paths []string
	for _, p := range f.disk.Partitions {
		paths = append(paths, "/mnt/vmfs/partitions/"+p.Label)
	}
	b, err := f.disk.Composite("/mnt/vmfs/header.img", paths, "/mnt/vmfs/footer.img")
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:15]) != CompositeMagic {
		t.Fatalf("magic %q", b[:15])
	}
	cmd := exec.Command(protoc, "--decode=CompositeDisk", "-Itestdata", "testdata/cdisk_spec.proto")
	cmd.Stdin = bytes.NewReader(b[15:])
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("protoc --decode: %v", err)
	}
	var want strings.Builder
	fmt.Fprintf(&want, "version: 1\ncomponent_disks {\n  file_path: \"/mnt/vmfs/header.img\"\n}\n")
	for i, p := range f.disk.Partitions {
		fmt.Fprintf(&want, "component_disks {\n  file_path: %q\n  offset: %d\n}\n", paths[i], p.Offset)
	}
	fmt.Fprintf(&want, "component_disks {\n  file_path: \"/mnt/vmfs/footer.img\"\n  offset: %d\n}\nlength: %d\n", f.disk.Flat.Size-FooterSize, f.disk.Flat.Size)
	if string(out) != want.String() {
		t.Errorf("protoc decoded:\n%s\nwant:\n%s", out, want.String())
	}
	c, err := ParseComposite(b)
	if err != nil || c.Length != uint64(f.disk.Flat.Size) || len(c.Components) != len(paths)+2 {
		t.Errorf("ParseComposite: %+v, %v", c, err)
	}
}

// Without the size trailer apexd opens the partition as the zip, so padding after an
// unaligned APEX would make it unreadable: such an APEX is refused.
func TestZeroPadUnalignedApex(t *testing.T) {
	for _, n := range []int64{4092, 4097, 1} {
		p := PayloadParts{Metadata: []byte("m"), Format: format13, Apexes: []Source{{Path: "a.apex", Size: n}},
			APK: Source{Path: "apk", Size: 1}, Idsig: Source{Path: "idsig", Size: 1}}
		if _, err := PayloadDisk(p, Options{}); !errors.Is(err, ErrUnaligned) || !strings.Contains(err.Error(), "a.apex") {
			t.Errorf("apex of %d bytes: %v, want ErrUnaligned naming a.apex", n, err)
		}
	}
	p := PayloadParts{Metadata: []byte("m"), Format: format13, APK: Source{Path: "apk", Size: 1}, Idsig: Source{Path: "idsig", Size: 1},
		Extra: []ExtraAPK{{APK: Source{Path: "x.apk", Size: 1}, Idsig: Source{Path: "x.idsig"}}}}
	if _, err := PayloadDisk(p, Options{}); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "x.idsig") {
		t.Errorf("empty extra idsig: %v, want ErrEmpty naming x.idsig", err)
	}
}

func TestBuildErrors(t *testing.T) {
	one := DataContent([]byte("x"))
	many := make([]PartSpec, MaxPartitions+1)
	for i := range many {
		many[i] = PartSpec{Label: fmt.Sprint(i), Content: one}
	}
	for _, tc := range []struct {
		name  string
		parts []PartSpec
		want  error
	}{
		{"none", nil, ErrEmpty},
		{"129", many, ErrTooManyPartitions},
		{"slash", []PartSpec{{Label: "a/b", Content: one}}, ErrBadLabel},
		{"dotdot", []PartSpec{{Label: "..", Content: one}}, ErrBadLabel},
		{"long", []PartSpec{{Label: strings.Repeat("x", 37), Content: one}}, ErrBadLabel},
		{"twice", []PartSpec{{Label: "a", Content: one}, {Label: "a", Content: one}}, ErrBadLabel},
		{"unaligned", []PartSpec{{Label: "a", Content: Image{Size: 100, Extents: []Extent{{Len: 100}}}}}, ErrUnaligned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Build(nil, tc.parts, Options{}); !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Build(nil, many[:MaxPartitions], Options{}); err != nil {
		t.Errorf("128 partitions: %v", err)
	}
	if _, err := FilesDisk([]FilePart{{Label: "rw", Source: Source{Path: "x", Size: 100}, Writable: true}}, Options{}); !errors.Is(err, ErrUnaligned) {
		t.Errorf("unaligned writable partition: %v", err)
	}
}

func TestDeterministic(t *testing.T) {
	a := newFixture(t, edgeApexes, 9000, 300)
	b := newFixture(t, edgeApexes, 9000, 300)
	if !bytes.Equal(a.naive(), b.naive()) {
		t.Error("same inputs gave different disks")
	}
	c := newFixture(t, edgeApexes, 9001, 300)
	if a.disk.GUID == c.disk.GUID {
		t.Error("different inputs gave the same disk GUID")
	}
}

func TestShortSource(t *testing.T) {
	f := newFixture(t, nil, 5000, 100)
	f.srcs[0] = bytes.NewReader(randBytes(100, 4000)) // the APK shrank
	_, err := NewReader(&f.disk.Flat, f.srcs).ReadAt(make([]byte, 8192), HeaderSize+4096)
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("read past a shrunk source: %v", err)
	}
}

// FuzzReader: any (offset, length) read equals the same range of the concatenation.
func FuzzReader(f *testing.F) {
	fx := newFixture(f, edgeApexes, 600*1024+17, 10443)
	want := fx.naive()
	r := NewReader(&fx.disk.Flat, fx.srcs)
	f.Add(int64(0), 4096)
	f.Add(int64(HeaderSize-1), 2)
	f.Add(int64(len(want)-5), 100)
	f.Fuzz(func(t *testing.T, off int64, n int) {
		if n < 0 || n > 1<<20 || off < 0 {
			return
		}
		p := make([]byte, n)
		m, err := r.ReadAt(p, off)
		end := min(off+int64(n), int64(len(want)))
		if off >= int64(len(want)) {
			if m != 0 || err != io.EOF {
				t.Fatalf("read at %d past end: %d %v", off, m, err)
			}
			return
		}
		if int64(m) != end-off || (m < n && err != io.EOF) || (m == n && err != nil) {
			t.Fatalf("read %d at %d: got %d, %v", n, off, m, err)
		}
		if !bytes.Equal(p[:m], want[off:end]) {
			t.Fatalf("read %d at %d: bytes differ", n, off)
		}
	})
}

// FuzzParseComposite: any input is refused or parsed into a descriptor that passes
// crosvm's checks and survives a re-encoding unchanged.
func FuzzParseComposite(f *testing.F) {
	fx := newFixture(f, edgeApexes[:2], 5000, 300)
	var paths []string
	for _, p := range fx.disk.Partitions {
		paths = append(paths, "/m/partitions/"+p.Label)
	}
	seed, err := fx.disk.Composite("/m/header.img", paths, "/m/footer.img")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(CompositeMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseComposite(b)
		if err != nil {
			return
		}
		again, err := ParseComposite(c.Marshal())
		if err != nil {
			t.Fatalf("re-encoded descriptor refused: %v", err)
		}
		if fmt.Sprint(again) != fmt.Sprint(c) {
			t.Fatalf("round trip changed %+v into %+v", c, again)
		}
	})
}
