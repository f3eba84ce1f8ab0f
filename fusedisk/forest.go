package fusedisk

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
)

// Forest is the root of a mount that holds trees (see NewTree) by name, added and
// removed while it is mounted: a service keeps one directory per payload in one
// mount so. Its directory is 0711: anyone may enter a tree whose name they know,
// and each tree guards itself (TreeOptions.Owner); only root lists the names.
type Forest struct {
	dirNode
	files map[string]*fileNode // its own documents, by path
}

var (
	_ = (fs.NodeOnAdder)((*Forest)(nil))
	_ = (fs.NodeGetattrer)((*Forest)(nil))
)

// NewForest makes an empty forest that serves files (a manifest, say) beside its
// trees, open to everyone.
func NewForest(files map[string][]byte) *Forest {
	b := &builder{files: map[string]*fileNode{}, log: zap.NewNop(), born: time.Now()}
	for name, data := range files {
		b.add(name, dataImage(data), nil)
	}
	for _, n := range b.files {
		n.perm = permOf(nil)
	}
	return &Forest{dirNode: dirNode{born: b.born}, files: b.files}
}

func (f *Forest) OnAdd(ctx context.Context) {
	addFiles(ctx, f.EmbeddedInode(), f.files, f.born)
}

func (f *Forest) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.dirNode.Getattr(ctx, fh, out)
	out.Mode = syscall.S_IFDIR | 0o711
	out.Uid, out.Gid = uint32(os.Geteuid()), uint32(os.Getegid())
	return 0
}

// Add grafts tree (a root from NewTree, seen at the forest's directory joined
// with name) as name, and reports false when the name is taken. The forest must
// be mounted.
func (f *Forest) Add(ctx context.Context, name string, tree fs.InodeEmbedder) bool {
	if f.GetChild(name) != nil {
		return false
	}
	return f.AddChild(name, f.NewPersistentInode(ctx, tree, fs.StableAttr{Mode: syscall.S_IFDIR}), false)
}

// Remove takes the tree name out of the forest and has the kernel forget the
// name, which it would otherwise keep for a day. The files open in it stay
// readable until closed: close its sources with Sources.CloseWhenIdle.
func (f *Forest) Remove(name string) bool {
	ch := f.GetChild(name)
	if ch == nil {
		return false
	}
	f.RmChild(name)
	// ENOENT when the kernel never looked the name up: nothing to forget.
	f.NotifyDelete(name, ch)
	return true
}
