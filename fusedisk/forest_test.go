package fusedisk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// publicPayload lays out a payload over files every user may read: one APEX
// (shared when given), an APK and an idsig of the sizes given.
func publicPayload(t *testing.T, dir, apex string, apkSize int64, seed uint64) (*layout.Disk, string) {
	t.Helper()
	apk, idsig := filepath.Join(dir, fmt.Sprintf("app%d.apk", seed)), filepath.Join(dir, fmt.Sprintf("app%d.apk.idsig", seed))
	writeRandom(t, apk, apkSize, seed)
	writeRandom(t, idsig, 3000, seed+100)
	d, err := layout.PayloadDisk(layout.PayloadParts{
		Metadata: []byte("\x00\x00\x00\x03abc"),
		Apexes:   []layout.Source{{Path: apex, Size: 9000}},
		APK:      layout.Source{Path: apk, Size: apkSize},
		Idsig:    layout.Source{Path: idsig, Size: 3000},
	}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d, apk
}

// flat reads a disk's flat image through layout's reader over the plain files,
// closing them again: the oracle.
func flat(t *testing.T, d *layout.Disk) []byte {
	t.Helper()
	var rs []io.ReaderAt
	for _, s := range d.Sources {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rs = append(rs, f)
	}
	b := make([]byte, d.Flat.Size)
	if _, err := layout.NewReader(&d.Flat, rs).ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForest grafts two payloads' trees into one mounted forest and takes them
// out again: each is its owner's alone, a file both read is open once, a removed
// tree is gone from the kernel at once but serves a file still open in it, and
// its sources are closed once that file is closed.
func TestForest(t *testing.T) {
	testdata.RequireRoot(t) // other users read through allow_other
	dir, mnt := testdata.PublicDir(t), testdata.PublicDir(t)
	apex := filepath.Join(dir, "shared.apex")
	writeRandom(t, apex, 9000, 1)
	pool, err := NewPool(zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	forest := NewForest(map[string][]byte{"vmfs.json": []byte("{}\n")})
	srv, err := Mount(mnt, forest, MountOptions{FsName: "forest-test", AllowOther: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Unmount()
		srv.Wait()
		pool.Close()
	})
	add := func(name string, uid int, seed uint64) (*layout.Disk, string, *Sources) {
		d, apk := publicPayload(t, dir, apex, 70000+int64(seed), seed)
		disks := []Disk{{Disk: d}}
		srcs, err := pool.Open(disks, nil)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := NewTree(srcs, TreeOptions{Disks: disks, Dir: filepath.Join(mnt, name), Owner: &Owner{UID: uint32(uid), GID: uint32(uid)}})
		if err != nil {
			t.Fatal(err)
		}
		if !forest.Add(t.Context(), name, tree) {
			t.Fatalf("add %s: name taken", name)
		}
		return d, apk, srcs
	}
	one, apk1, srcs1 := add("one", testdata.Nobody, 2)
	two, apk2, srcs2 := add("two", 0, 3)
	if forest.Add(t.Context(), "one", forest) {
		t.Error("a second tree took the name one")
	}

	got, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(mnt, "one", "payload.img"))
	if err != nil || !bytes.Equal(got, flat(t, one)) {
		t.Errorf("one's owner reads its payload.img: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, flat(t, one)))
	}
	if _, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(mnt, "two", "payload.img")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("another user reads two's payload.img: %v, want a permission error", err)
	}
	if _, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(mnt, "vmfs.json")); err != nil {
		t.Errorf("the forest's own files are everyone's: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "two", "payload.img")); !bytes.Equal(got, flat(t, two)) {
		t.Errorf("two's payload.img differs from its reference: %v", err)
	}
	if n := testdata.FDsOn(t, apex); n != 1 {
		t.Errorf("the APEX both payloads read is open %d times, want once", n)
	}

	held, err := os.Open(filepath.Join(mnt, "one", "partitions", metadata.APKLabel))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if !forest.Remove("one") {
		t.Fatal("remove one: not there")
	}
	srcs1.CloseWhenIdle()
	if _, err := os.Stat(filepath.Join(mnt, "one")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("one after removal: %v, want not found (the kernel must forget it)", err)
	}
	orig, _ := os.ReadFile(apk1)
	b := make([]byte, len(orig))
	if _, err := held.ReadAt(b, 0); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("a file open in a removed tree: %v, or not the APK", err)
	}
	if testdata.FDsOn(t, apk1) != 1 {
		t.Error("one's APK was closed while a file of its tree is open")
	}
	held.Close()
	if !testdata.Eventually(t, 10*time.Second, func() bool { return testdata.FDsOn(t, apk1) == 0 }) {
		t.Error("one's APK still open after its last file was closed")
	}
	if n := testdata.FDsOn(t, apex); n != 1 {
		t.Errorf("the shared APEX is open %d times while two reads it, want once", n)
	}
	forest.Remove("two")
	srcs2.CloseWhenIdle()
	if n := testdata.FDsOn(t, apex) + testdata.FDsOn(t, apk2); n != 0 {
		t.Errorf("%d sources still open once both trees are gone", n)
	}
	if _, err := os.Stat(filepath.Join(mnt, "two", "payload.img")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("two after removal: %v", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "vmfs.json")); err != nil {
		t.Errorf("the forest after its trees went: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil || st.Mode&0o777 != 0o711 {
		t.Errorf("forest directory mode %#o (%v), want 0711", st.Mode&0o777, err)
	}
}

// TestPoolOpened: a source handed over as an open file is that file, whatever
// its name leads to afterwards, and is closed again with its Sources while the
// caller's own file stays open.
func TestPoolOpened(t *testing.T) {
	dir := t.TempDir()
	apex := filepath.Join(dir, "a.apex")
	writeRandom(t, apex, 9000, 1)
	d, apk := publicPayload(t, dir, apex, 70000, 2)
	f, err := os.Open(apk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := flat(t, d)
	// The name now leads elsewhere: only the open file is the APK laid out.
	if err := os.Rename(apk, apk+".old"); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, apk, 70000, 99)
	pool, err := NewPool(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	srcs, err := pool.Open([]Disk{{Disk: d}}, map[string]*os.File{apk: f})
	if err != nil {
		t.Fatal(err)
	}
	s := srcs.byPath[apk]
	got := make([]byte, len(want))
	if _, err := layout.NewReader(&d.Flat, readersOf(srcs, d)).ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read through the opened file: %v, equal %v", err, bytes.Equal(got, want))
	}
	if s.path != apk+".old" || len(s.names) != 0 {
		t.Errorf("opened source named %q with names %v, want its own path and no name to watch", s.path, s.names)
	}
	srcs.Close()
	if testdata.FDsOn(t, apk+".old") != 1 {
		t.Error("closing the Sources closed the caller's file, or kept its own")
	}
	if _, err := pool.Open([]Disk{{Disk: d}}, map[string]*os.File{apk: os.Stdin}); err == nil {
		t.Error("a source that is not a regular file was taken")
	}
}

func readersOf(s *Sources, d *layout.Disk) []io.ReaderAt {
	var rs []io.ReaderAt
	for _, ls := range d.Sources {
		rs = append(rs, s.byPath[ls.Path].f)
	}
	return rs
}
