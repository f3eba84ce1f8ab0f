package fusedisk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"

	"vmfs/layout"
	"vmfs/testdata"
	"vmfs/testdata/composite"
)

// embedder is another program's go-fuse tree: a directory vms holding a vmfs
// tree as app.
type embedder struct {
	fs.Inode
	app fs.InodeEmbedder
}

func (e *embedder) OnAdd(ctx context.Context) {
	vms := e.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR})
	e.AddChild("vms", vms, false)
	vms.AddChild("app", vms.NewPersistentInode(ctx, e.app, fs.StableAttr{Mode: syscall.S_IFDIR}), false)
}

// TestGraft: a tree grafted under a directory of another go-fuse tree, mounted by
// that tree's own fs.Mount, serves the disk's bytes, and its composite names its
// components where the tree is seen.
func TestGraft(t *testing.T) {
	testdata.RequireFUSE(t)
	p := newPayload(t, edgeApexes, 70000, 3000)
	mnt := t.TempDir()
	dir := filepath.Join(mnt, "vms", "app")
	disks := []Disk{{Disk: p.disk}}
	srcs, err := OpenSources(disks, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srcs.Close() })
	app, err := NewTree(srcs, TreeOptions{Disks: disks, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fs.Mount(mnt, &embedder{app: app}, &fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})

	got, err := os.ReadFile(disks[0].Paths(dir).Flat)
	if err != nil {
		t.Fatal(err)
	}
	if want := p.reference(t, &p.disk.Flat); !bytes.Equal(got, want) {
		t.Errorf("grafted payload.img: %d bytes differ from the reference %d", len(got), len(want))
	}
	if c := composite.Read(t, filepath.Join(dir, "payload.composite")); c.Components[0].Path != disks[0].Paths(dir).Header {
		t.Errorf("composite's first component %s, want the header in the grafted tree", c.Components[0].Path)
	}
}

// TestNewTreeRefuses a tree it could not serve as asked: one whose composites
// would name their components nowhere, or whose disks read files srcs do not hold
// as laid out.
func TestNewTreeRefuses(t *testing.T) {
	p, other := newPayload(t, nil, 5000, 300), newPayload(t, nil, 6000, 300)
	srcs, err := OpenSources([]Disk{{Disk: p.disk}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srcs.Close()
	resized, err := layout.FilesDisk([]layout.FilePart{{Label: "apk", Source: layout.Source{Path: p.paths[0], Size: 4999}}}, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]TreeOptions{
		"no Dir":                  {Disks: []Disk{{Disk: p.disk}}},
		"sources not opened":      {Disks: []Disk{{Disk: other.disk}}, Dir: t.TempDir()},
		"laid out for other size": {Disks: []Disk{{Disk: resized}}, Dir: t.TempDir()},
	} {
		_, err := NewTree(srcs, o)
		if err == nil {
			t.Errorf("%s: NewTree succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestNewTreeRefusesBadFileNames: an embedder's file name must be a clean relative
// path ("/x" once sent the tree builder into endless recursion).
func TestNewTreeRefusesBadFileNames(t *testing.T) {
	for _, name := range []string{"/vm.json", "../x", "a//b", ".", ""} {
		if _, err := NewTree(&Sources{}, TreeOptions{Dir: t.TempDir(), Files: map[string][]byte{name: nil}}); err == nil {
			t.Errorf("file name %q accepted", name)
		}
	}
}
