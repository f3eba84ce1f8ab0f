package fusedisk

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// TestPermissions: every node is owned and readable as its sources are, the most
// restrictive winning, and the kernel enforces it: with AllowOther, another user
// reads only what the sources would let them read.
func TestPermissions(t *testing.T) {
	testdata.RequireRoot(t) // to own files as another user and read as one
	const nobody = testdata.Nobody
	dir := testdata.PublicDir(t)
	secret := filepath.Join(dir, "secret")
	if err := os.Mkdir(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	type file struct {
		name     string
		mode     os.FileMode
		uid, gid int
	}
	var srcs []layout.Source
	for _, f := range []file{
		{"a0.apex", 0o600, 0, 0},
		{"secret/target", 0o644, 0, 0}, // a1.apex links here: readable, in a directory that is not
		{"a2.apex", 0o640, 0, nobody},
		{"a3.apex", 0o600, nobody, nobody},
		{"app.apk", 0o644, 0, 0},
		{"app.apk.idsig", 0o644, 0, 0},
	} {
		path := filepath.Join(dir, f.name)
		writeRandom(t, path, 5000, uint64(len(srcs)))
		if err := os.Chmod(path, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
		if f.name == "secret/target" {
			path = filepath.Join(dir, "a1.apex")
			if err := os.Symlink(filepath.Join(secret, "target"), path); err != nil {
				t.Fatal(err)
			}
		}
		srcs = append(srcs, layout.Source{Path: path, Size: 5000})
	}
	d, err := layout.PayloadDisk(layout.PayloadParts{Metadata: []byte("\x00\x00\x00\x03abc"), Apexes: srcs[:4], APK: srcs[4], Idsig: srcs[5]}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := mountAt(t, testdata.PublicDir(t), d, TreeOptions{Files: map[string][]byte{"vm.json": []byte("{}\n")}}, MountOptions{AllowOther: true})

	// The sources disagree on owner and group: the server's own, and root only.
	all := perm{0, 0, 0o400}
	for name, want := range map[string]struct {
		perm
		nobodyReads bool
	}{
		"partitions/" + metadata.ApexLabel(0):              {perm{0, 0, 0o400}, false},
		"partitions/" + metadata.ApexLabel(1):              {perm{0, 0, 0o400}, false},
		"partitions/" + metadata.ApexLabel(2):              {perm{0, nobody, 0o440}, true},
		"partitions/" + metadata.ApexLabel(3):              {perm{nobody, nobody, 0o400}, true},
		"partitions/" + metadata.APKLabel:                  {perm{0, 0, 0o444}, true},
		"partitions/" + metadata.Android12.MetadataLabel(): {all, false},
		"payload.img":       {all, false},
		"header.img":        {all, false},
		"footer.img":        {all, false},
		"payload.composite": {all, false},
		"vm.json":           {all, false},
	} {
		path := filepath.Join(s.Mountpoint, name)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if got := (perm{sys.Uid, sys.Gid, uint32(st.Mode().Perm())}); got != want.perm {
			t.Errorf("%s: owner %d group %d mode %#o, want %d %d %#o", name, got.uid, got.gid, got.mode, want.uid, want.gid, want.mode)
		}
		got, err := testdata.ReadAs(t, nobody, path)
		switch {
		case !want.nobodyReads && !errors.Is(err, fs.ErrPermission):
			t.Errorf("%s as nobody: %v, want permission denied", name, err)
		case want.nobodyReads && err != nil:
			t.Errorf("%s as nobody: %v", name, err)
		case want.nobodyReads:
			if whole, _ := os.ReadFile(path); !bytes.Equal(got, whole) {
				t.Errorf("%s as nobody: other bytes than root reads", name)
			}
		}
	}
}

// TestPermissionsOpen: a mount of sources everyone may read stays readable by
// everyone, every node of it.
func TestPermissionsOpen(t *testing.T) {
	testdata.RequireRoot(t)
	dir := testdata.PublicDir(t)
	var srcs []layout.Source
	for _, name := range []string{"a.apex", "app.apk", "app.apk.idsig"} {
		path := filepath.Join(dir, name)
		writeRandom(t, path, 5000, uint64(len(srcs)))
		srcs = append(srcs, layout.Source{Path: path, Size: 5000})
	}
	d, err := layout.PayloadDisk(layout.PayloadParts{Metadata: []byte("\x00\x00\x00\x03abc"), Apexes: srcs[:1], APK: srcs[1], Idsig: srcs[2]}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := mountAt(t, testdata.PublicDir(t), d, TreeOptions{Files: map[string][]byte{"vm.json": []byte("{}\n")}}, MountOptions{AllowOther: true})
	for _, name := range []string{"payload.img", "partitions/" + metadata.ApexLabel(0), "header.img", "vm.json"} {
		path := filepath.Join(s.Mountpoint, name)
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o444 {
			t.Errorf("%s: %v, %v, want 0444", name, st.Mode(), err)
		}
		if _, err := testdata.ReadAs(t, testdata.Nobody, path); err != nil {
			t.Errorf("%s as nobody: %v", name, err)
		}
	}
}
