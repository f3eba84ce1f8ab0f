package fusedisk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/testdata/composite"
)

// payload writes random source files and lays out a payload disk over them.
type payload struct {
	dir   string
	paths []string // APEXes, APK, idsig
	disk  *layout.Disk
}

func writeRandom(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func newPayload(t testing.TB, apexSizes []int64, apkSize, idsigSize int64) *payload {
	t.Helper()
	p := &payload{dir: t.TempDir()}
	var lp layout.PayloadParts
	lp.Metadata = []byte("\x00\x00\x00\x03abc")
	src := func(name string, size int64) layout.Source {
		path := filepath.Join(p.dir, name)
		writeRandom(t, path, size, uint64(len(p.paths)))
		p.paths = append(p.paths, path)
		return layout.Source{Path: path, Size: size}
	}
	for i, n := range apexSizes {
		lp.Apexes = append(lp.Apexes, src(fmt.Sprintf("a%d.apex", i), n))
	}
	lp.APK = src("app.apk", apkSize)
	lp.Idsig = src("app.apk.idsig", idsigSize)
	d, err := layout.PayloadDisk(lp, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.disk = d
	return p
}

// reference reads an image through layout's reader over plain files: the oracle
// (itself checked against a hand-made concatenation in layout's tests).
func (p *payload) reference(t testing.TB, im *layout.Image) []byte {
	t.Helper()
	var rs []io.ReaderAt
	for _, path := range p.paths {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		rs = append(rs, f)
	}
	b := make([]byte, im.Size)
	if _, err := layout.NewReader(im, rs).ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// serveDisk does the three steps for d: it opens d's sources, builds a tree of
// them seen at mnt with to, and mounts it at mnt with mo. stop undoes them: it
// unmounts, waits for the server, and closes the sources.
func serveDisk(mnt string, d *layout.Disk, to TreeOptions, mo MountOptions) (s *Server, stop func() error, err error) {
	var one Disk
	if len(to.Disks) == 1 {
		one = to.Disks[0] // a test's writable sources, or withExtents
	}
	one.Disk = d
	to.Disks, to.Dir = []Disk{one}, mnt
	srcs, err := OpenSources(to.Disks, to.Logger)
	if err != nil {
		return nil, nil, err
	}
	if one.Extents != nil { // withExtents
		to.Disks[0].Extents, err = srcs.Extents(one, mnt)
	}
	var root fs.InodeEmbedder
	if err == nil {
		root, err = NewTree(srcs, to)
	}
	if err == nil {
		s, err = Mount(mnt, root, mo)
	}
	if err != nil {
		srcs.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	return s, func() error {
		if err := s.Unmount(); err != nil {
			return err
		}
		<-done
		return srcs.Close()
	}, nil
}

// mount serves d for the test at a directory of its own (see mountAt).
func mount(t testing.TB, d *layout.Disk, to TreeOptions) *Server {
	t.Helper()
	return mountAt(t, t.TempDir(), d, to, MountOptions{})
}

// mountAt serves d at mnt until the test ends. Any error the server logs fails
// the test unless to.Logger is set (tests that provoke errors pass their own).
func mountAt(t testing.TB, mnt string, d *layout.Disk, to TreeOptions, mo MountOptions) *Server {
	t.Helper()
	testdata.RequireFUSE(t)
	if to.Logger == nil {
		errs, logs := observer.New(zap.ErrorLevel)
		to.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), errs))
		t.Cleanup(func() {
			for _, e := range logs.All() {
				t.Errorf("server logged an error: %s %v", e.Message, e.ContextMap())
			}
		})
	}
	mo.Logger = to.Logger
	mo.Debug = testing.Verbose() && os.Getenv("FUSE_DEBUG") != ""
	s, stop, err := serveDisk(mnt, d, to, mo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return s
}

var edgeApexes = []int64{4092, 8192, 4093}

func TestMountedBytes(t *testing.T) {
	p := newPayload(t, edgeApexes, 600*1024+123, 10443)
	s := mount(t, p.disk, TreeOptions{Files: map[string][]byte{"vm.json": []byte("{}\n")}})
	want := map[string][]byte{
		"payload.img": p.reference(t, &p.disk.Flat),
		"header.img":  p.reference(t, &p.disk.Header),
		"footer.img":  p.reference(t, &p.disk.Footer),
		"vm.json":     []byte("{}\n"),
	}
	for i := range p.disk.Partitions {
		part := &p.disk.Partitions[i]
		want["partitions/"+part.Label] = p.reference(t, &part.Image)
	}
	for name, w := range want {
		got, err := os.ReadFile(filepath.Join(s.Mountpoint, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s: %d bytes differ from the reference %d", name, len(got), len(w))
		}
	}
	// Random reads, many across extent boundaries, with the page cache bypassed by
	// O_DIRECT so that every one reaches vmfs's read paths.
	flat := want["payload.img"]
	f, err := os.OpenFile(filepath.Join(s.Mountpoint, "payload.img"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	var cuts []int64
	for _, part := range p.disk.Partitions {
		for _, e := range part.Extents {
			cuts = append(cuts, part.Offset+e.Off)
		}
	}
	for i := 0; i < 400; i++ {
		off := r.Int64N(int64(len(flat)))
		if i%2 == 0 { // straddle an extent boundary
			off = max(0, cuts[r.IntN(len(cuts))]-r.Int64N(5000))
		}
		n := 1 + r.IntN(300*1024)
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, off)
		end := min(off+int64(n), int64(len(flat)))
		if int64(m) != end-off || (err != nil && err != io.EOF) {
			t.Fatalf("read %d at %d: %d, %v", n, off, m, err)
		}
		if !bytes.Equal(buf[:m], flat[off:end]) {
			t.Fatalf("read %d at %d: bytes differ", n, off)
		}
	}
}

func TestMountedGPT(t *testing.T) {
	sgdisk := testdata.RequireTool(t, "sgdisk")
	p := newPayload(t, edgeApexes, 70000, 3000)
	s := mount(t, p.disk, TreeOptions{})
	img := filepath.Join(s.Mountpoint, "payload.img")
	out, err := exec.Command(sgdisk, "-v", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v %s: %v\n%s", img, err, out)
	}

	testdata.RequireRoot(t)
	losetup, partx := testdata.RequireTool(t, "losetup"), testdata.RequireTool(t, "partx")
	out, err = exec.Command(losetup, "-r", "-f", "--show", img).Output()
	if err != nil {
		testdata.Missing(t, "losetup on a FUSE file: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer func() {
		exec.Command(partx, "-d", dev).Run()
		exec.Command(losetup, "-d", dev).Run()
	}()
	if out, err := exec.Command(partx, "-a", dev).CombinedOutput(); err != nil {
		t.Fatalf("partx -a %s: %v %s", dev, err, out)
	}
	for i, part := range p.disk.Partitions {
		got, err := os.ReadFile(fmt.Sprintf("%sp%d", dev, i+1))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(s.Mountpoint, "partitions", part.Label))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%sp%d differs from partitions/%s", dev, i+1, part.Label)
		}
	}
}

// TestCompositeReassembles follows payload.composite as crosvm does and compares
// the result with payload.img.
func TestCompositeReassembles(t *testing.T) {
	p := newPayload(t, edgeApexes[:1], 5000, 300)
	s := mount(t, p.disk, TreeOptions{})
	c := composite.Read(t, filepath.Join(s.Mountpoint, "payload.composite"))
	flat, err := os.ReadFile(filepath.Join(s.Mountpoint, "payload.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(composite.Reassemble(t, c), flat) {
		t.Error("composite components do not reassemble payload.img")
	}
}

func TestReadOnly(t *testing.T) {
	p := newPayload(t, nil, 5000, 300)
	s := mount(t, p.disk, TreeOptions{})
	img := filepath.Join(s.Mountpoint, "payload.img")
	for name, op := range map[string]func() error{
		"open for write": func() error { f, err := os.OpenFile(img, os.O_WRONLY, 0); f.Close(); return err },
		"truncate":       func() error { return os.Truncate(img, 0) },
		"chmod":          func() error { return os.Chmod(img, 0o666) },
		"create":         func() error { return os.WriteFile(filepath.Join(s.Mountpoint, "new"), nil, 0o644) },
		"mkdir":          func() error { return os.Mkdir(filepath.Join(s.Mountpoint, "d"), 0o755) },
		"remove":         func() error { return os.Remove(img) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

// TestSourceChanged: after a source changes, reads of it fail with EIO and never
// return bytes that mix the old and the new file.
func TestSourceChanged(t *testing.T) {
	for name, change := range map[string]func(path string) error{
		"rewritten": testdata.Edits["pwrite"],
		"truncated": func(path string) error { return os.Truncate(path, 10) },
		"replaced": func(path string) error {
			tmp := path + ".new"
			writeRandom(t, tmp, 5000, 99)
			return os.Rename(tmp, path)
		},
		"deleted": os.Remove,
	} {
		t.Run(name, func(t *testing.T) {
			p := newPayload(t, nil, 5000, 300)
			errs, logs := observer.New(zap.ErrorLevel)
			s := mount(t, p.disk, TreeOptions{Logger: zap.New(errs)})
			defer func() {
				if logs.FilterField(zap.String("file", p.paths[0])).Len() == 0 {
					t.Errorf("no error logged naming %s", p.paths[0])
				}
			}()
			part := filepath.Join(s.Mountpoint, "partitions", metadata.APKLabel)
			before, err := os.ReadFile(part) // now also in the page cache
			if err != nil {
				t.Fatal(err)
			}
			if err := change(p.paths[0]); err != nil {
				t.Fatal(err)
			}
			// The watcher acts on the change and drops the cached pages
			// asynchronously; until then a read may still see the old bytes.
			var last error
			if !testdata.Eventually(t, 10*time.Second, func() bool {
				got, err := os.ReadFile(part)
				if err == nil && !bytes.Equal(got, before) {
					t.Fatal("served bytes other than the mounted file's")
				}
				last = err
				return errors.Is(err, syscall.EIO)
			}) {
				t.Fatalf("reads after the change: %v, want EIO", last)
			}
		})
	}
}

// TestReadsDoNotChangeSources: vmfs's own reads (which update atime) are not edits.
func TestReadsDoNotChangeSources(t *testing.T) {
	p := newPayload(t, nil, 9000, 300)
	s := mount(t, p.disk, TreeOptions{})
	img := filepath.Join(s.Mountpoint, "payload.img")
	for i := 0; i < 3; i++ {
		f, err := os.OpenFile(img, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	if b, err := os.ReadFile(img); err != nil || binary.BigEndian.Uint16(b[510:]) != 0x55AA {
		t.Fatalf("read: %v", err)
	}
}

// TestPassthrough: by default, where the kernel has passthrough, a partition
// that is exactly one file, and only such a partition, is read by the kernel
// from the file itself: opened before its file is rewritten in place, it reads
// the new bytes, past the change guard, where payload.img fails with EIO. With
// NoPassthrough, or on a kernel without it (the log says which), it fails too.
func TestPassthrough(t *testing.T) {
	testdata.RequireRoot(t) // the kernel lets root alone hand it backing files
	apk := "partitions/" + metadata.APKLabel
	kernel := testdata.KernelPassthrough()
	for _, tc := range []struct {
		name string
		o    TreeOptions
		want []string
		why  string // in the log when nothing is passed through
	}{
		{"default", TreeOptions{}, []string{apk}, "no FUSE passthrough"},
		{"NoPassthrough", TreeOptions{NoPassthrough: true}, nil, "turned off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if kernel != nil {
				t.Logf("no passthrough expected: %v", kernel)
				tc.want = nil
			}
			// The APK is 4 KiB-aligned, so its partition is the file itself;
			// the APEX's has a size trailer, the idsig's padding.
			p := newPayload(t, edgeApexes[:1], 3*4096, 300)
			core, logs := observer.New(zap.InfoLevel) // the change is logged as an error
			tc.o.Logger = zap.New(core)
			s := mount(t, p.disk, tc.o)
			if !slices.Equal(s.Passthrough, tc.want) {
				t.Errorf("passed through: %q, want %q", s.Passthrough, tc.want)
			}
			if off := logs.FilterMessageSnippet("passthrough off").All(); tc.want == nil && (len(off) != 1 || !strings.Contains(fmt.Sprint(off[0].ContextMap()), tc.why)) {
				t.Errorf("log: %v, want passthrough off for %q", off, tc.why)
			}
			part, err := os.Open(filepath.Join(s.Mountpoint, apk))
			if err != nil {
				t.Fatal(err)
			}
			defer part.Close()
			changed, err := testdata.Invert(p.paths[1])
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(changed))
			_, err = part.ReadAt(got, 0)
			if tc.want != nil && (err != nil || !bytes.Equal(got, changed)) {
				t.Errorf("passthrough partition after its file changed: %v, or other bytes than the file's", err)
			}
			if tc.want == nil && !errors.Is(err, syscall.EIO) {
				t.Errorf("partition after its file changed: %v, want EIO", err)
			}
			flat, err := os.Open(filepath.Join(s.Mountpoint, "payload.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer flat.Close()
			i := slices.IndexFunc(p.disk.Partitions, func(q layout.Partition) bool { return q.Label == metadata.APKLabel })
			if _, err := flat.ReadAt(got, p.disk.Partitions[i].Offset); !errors.Is(err, syscall.EIO) {
				t.Errorf("payload.img after the APK changed: %v, want EIO", err)
			}
		})
	}
}

// TestWritablePartitionComposite: the composite names a writable partition's own
// file (crosvm writes there), and the read-only mount for the rest.
func TestWritablePartitionComposite(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	ro, rw := filepath.Join(dir, "ro.img"), filepath.Join(dir, "rw.img")
	writeRandom(t, ro, 5000, 1)
	writeRandom(t, rw, 8192, 2)
	d, err := layout.FilesDisk([]layout.FilePart{
		{Label: "boot", Source: layout.Source{Path: ro, Size: 5000}},
		{Label: "instance", Source: layout.Source{Path: rw, Size: 8192}, Writable: true},
	}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := mount(t, d, TreeOptions{})
	c := composite.Read(t, filepath.Join(s.Mountpoint, "payload.composite"))
	if got := c.Components[1]; got.Path != filepath.Join(s.Mountpoint, "partitions", "boot") || got.Writable {
		t.Errorf("read-only partition component %+v", got)
	}
	if got := c.Components[2]; got.Path != rw || !got.Writable {
		t.Errorf("writable partition component %+v, want %s read-write", got, rw)
	}
}

// TestMountAt finds a mount in /proc/self/mountinfo, even at a path the kernel
// escapes there (a space is \040).
func TestMountAt(t *testing.T) {
	testdata.RequireFUSE(t)
	p := newPayload(t, nil, 5000, 300)
	dir := filepath.Join(t.TempDir(), "a mount")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stop, err := serveDisk(dir, p.disk, TreeOptions{}, MountOptions{FsName: "vmfs:test"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := MountAt(dir)
	if err != nil || m == nil || m.FSType != FSType || m.Source != "vmfs:test" {
		t.Errorf("MountAt(%q): %+v, %v", dir, m, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if m, err := MountAt(dir); m != nil || err != nil {
		t.Errorf("after unmount: %+v, %v", m, err)
	}
}
