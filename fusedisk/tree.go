package fusedisk

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"vmfs/layout"
)

// Disk is a layout.Disk and where it appears in a tree. The disk at Dir "" (the
// payload) is served at the root as payload.img, payload.composite, header.img,
// footer.img and partitions/<label>; a disk at Dir "disks/0" as disks/0/disk.img,
// disks/0/disk.composite and so on.
type Disk struct {
	Dir  string
	Disk *layout.Disk
	// Writable are the backends of the disk's writable sources, by their
	// layout.Source Path: a VM's state files. A tree reads such a source through
	// its backend, never its file, and writes it there (see "Writes").
	Writable map[string]Writable
	// Extents, from Sources.Extents, are served too (see "Extents").
	Extents *Extents
}

// Writable is what a tree reads and writes a writable source through: its bytes
// as the VM sees them (a raw file's, a QCOW2 image's virtual disk). A write must
// be in the source when WriteAt returns; Sync makes the writes durable. Its
// owner closes it after the Sources that hold it.
type Writable interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
}

// Holder is a Writable that is read and written only while held: a node that
// reads it holds it from each open to its release, so that its owner can let
// another program (crosvm, which writes a state file itself) have the file
// while none is open. An open whose Hold fails fails with the error's errno
// (EBUSY while the other program has the file), else EIO.
type Holder interface {
	Writable
	Hold() error
	Let()
}

func (d Disk) base() string {
	if d.Dir == "" {
		return "payload"
	}
	return "disk"
}

// Paths are where a Disk's files are in a tree seen at some directory.
type Paths struct {
	Flat      string // the whole disk, raw: payload.img or disk.img
	Composite string // crosvm's composite descriptor over Header, the partitions and Footer
	Header    string // the protective MBR and the primary GPT
	Footer    string // the backup GPT
	// The extent descriptors (Disk.Extents): QEMU's VMDK and crosvm's composite
	// over the originals and the synthesized pieces, files in the Pieces directory.
	VMDK, Extents, Pieces string
	// Partitions are the partitions' files by label (none when Disk is nil).
	Partitions map[string]string
}

// Paths is where d's files are in a tree seen at dir; at dir "" they are the
// paths inside the tree.
func (d Disk) Paths(dir string) Paths {
	at := func(name ...string) string { return filepath.Join(append([]string{dir, d.Dir}, name...)...) }
	p := Paths{
		Flat:      at(d.base() + ".img"),
		Composite: at(d.base() + ".composite"),
		Header:    at("header.img"),
		Footer:    at("footer.img"),
		VMDK:      at(d.base() + ".vmdk"),
		Extents:   at(d.base() + "-extents.composite"),
		Pieces:    at("extents"),
	}
	if d.Disk != nil {
		p.Partitions = make(map[string]string, len(d.Disk.Partitions))
		for _, part := range d.Disk.Partitions {
			p.Partitions[part.Label] = at("partitions", part.Label)
		}
	}
	return p
}

// TreeOptions say what a tree holds.
type TreeOptions struct {
	Disks []Disk
	// Files are further synthesized files by path in the tree (vm.json,
	// layout.json, ...), served as they are.
	Files map[string][]byte
	// Dir is where the tree will be seen (a relative one is made absolute): the
	// composite descriptors name their components under it.
	Dir string
	// NoPassthrough keeps every read in vmfs. Otherwise a node that is exactly
	// one original file is read by the kernel from that file itself where Mount
	// finds that it may (see "Passthrough"); such reads bypass the change guard.
	NoPassthrough bool
	// Owner, when set, owns the tree's top directory, which only it and root may
	// enter (0500): a service keeps each user's payloads in one mount so.
	Owner  *Owner
	Logger *zap.Logger // read errors; default zap.NewNop()
}

// Owner is a user and group, as the kernel checks them.
type Owner struct{ UID, GID uint32 }

// NewTree builds the root of a read-only tree serving o.Disks, whose sources srcs
// must hold, and o.Files. The root puts its files in place when go-fuse adds it:
// mounted by Mount, or grafted into an embedder's own tree with
// NewPersistentInode and AddChild. Nothing in the tree may be read once srcs are
// closed.
func NewTree(srcs *Sources, o TreeOptions) (fs.InodeEmbedder, error) {
	if o.Dir == "" {
		return nil, errors.New("tree: no Dir to name the composites' components under")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	b := &builder{set: srcs, files: map[string]*fileNode{}, passthrough: !o.NoPassthrough, log: o.Logger, born: time.Now()}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	for _, d := range o.Disks {
		ds, err := srcs.forDisk(d.Disk)
		if err != nil {
			return nil, err
		}
		if err := b.addDisk(d, ds, dir); err != nil {
			return nil, err
		}
	}
	for name, data := range o.Files {
		if !iofs.ValidPath(name) || name == "." {
			return nil, fmt.Errorf("tree: file name %q: want a clean relative path", name)
		}
		b.add(name, dataImage(data), nil)
	}
	// A node is no more open than the sources it reads; one that reads none
	// (GPT, composite, metadata, o.Files) tells of them all.
	all := permOf(b.srcs)
	for _, n := range b.files {
		n.perm = all
		if len(n.from) > 0 {
			n.perm = permOf(n.from)
		}
		if n.rw {
			n.perm.mode |= writeBits(n.perm, n.from)
		}
	}
	return &root{dirNode: dirNode{born: b.born}, files: b.files, owner: o.Owner, noPassthrough: o.NoPassthrough}, nil
}

// builder makes the files of a tree.
type builder struct {
	set         *Sources
	files       map[string]*fileNode // by path in the tree
	srcs        []*source            // of every disk, each once
	passthrough bool
	log         *zap.Logger
	born        time.Time // the tree's time: every file's mtime, ctime and atime
}

// addDisk adds d's files, which read srcs (indexed like d.Disk.Sources), for a
// tree seen at dir.
func (b *builder) addDisk(d Disk, srcs []*source, dir string) error {
	for _, src := range srcs {
		if !slices.Contains(b.srcs, src) {
			b.srcs = append(b.srcs, src)
		}
	}
	in, at := d.Paths(""), d.Paths(dir)
	dk := d.Disk
	b.add(in.Flat, &dk.Flat, srcs)
	b.add(in.Header, &dk.Header, srcs)
	b.add(in.Footer, &dk.Footer, srcs)
	parts := make([]string, len(dk.Partitions))
	for i := range dk.Partitions {
		p := &dk.Partitions[i]
		b.add(in.Partitions[p.Label], &p.Image, srcs)
		parts[i] = at.Partitions[p.Label]
		if src := wholeSource(&p.Image, srcs); p.Writable && src != nil {
			// The tree is read-only: crosvm writes a writable partition to its
			// file directly, as virtualizationservice hands it over.
			parts[i] = src.path
		}
	}
	cd, err := dk.Composite(at.Header, parts, at.Footer)
	if err != nil {
		return err
	}
	b.add(in.Composite, dataImage(cd), nil)
	if x := d.Extents; x != nil {
		for name, im := range x.synth {
			b.add(name, im, srcs)
		}
		b.add(in.VMDK, dataImage(x.vmdk), nil)
		b.add(in.Extents, dataImage(x.cdisk), nil)
	}
	return nil
}

// add makes the file name of im, whose file extents read srcs.
func (b *builder) add(name string, im *layout.Image, srcs []*source) {
	readers := make([]io.ReaderAt, len(srcs))
	for i, src := range srcs {
		readers[i] = src.reader()
	}
	n := &fileNode{name: name, im: im, set: b.set, srcs: srcs, ref: layout.NewReader(im, readers), log: b.log, born: b.born}
	for _, e := range im.Extents {
		if e.Kind == layout.File && !slices.Contains(n.from, srcs[e.Source]) {
			n.from = append(n.from, srcs[e.Source])
			n.rw = n.rw || srcs[e.Source].w != nil
		}
	}
	if b.passthrough && !n.rw {
		n.whole = wholeSource(im, srcs)
	}
	b.files[name] = n
}

func dataImage(b []byte) *layout.Image {
	im := &layout.Image{Size: int64(len(b))}
	if len(b) > 0 {
		im.Extents = []layout.Extent{{Len: int64(len(b)), Kind: layout.Data, Data: b}}
	}
	return im
}

// wholeSource returns the source an image is exactly, byte for byte, or nil.
func wholeSource(im *layout.Image, srcs []*source) *source {
	if len(im.Extents) != 1 || im.Extents[0].Kind != layout.File || im.Extents[0].SourceOff != 0 {
		return nil
	}
	if s := srcs[im.Extents[0].Source]; s.size == im.Size {
		return s
	}
	return nil
}

// dirNode is a directory of a tree: read-only, dated like its files.
type dirNode struct {
	fs.Inode
	born time.Time
}

var _ = (fs.NodeGetattrer)((*dirNode)(nil))

func (d *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.SetTimes(&d.born, &d.born, &d.born)
	return 0
}

// root is the top directory of a tree, which puts its files in place once go-fuse
// has given it an inode.
type root struct {
	dirNode
	files         map[string]*fileNode // by path in the tree
	owner         *Owner
	noPassthrough bool // TreeOptions.NoPassthrough
}

var (
	_ = (fs.NodeOnAdder)((*root)(nil))
	_ = (fs.NodeGetattrer)((*root)(nil))
)

func (r *root) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.dirNode.Getattr(ctx, fh, out)
	if r.owner != nil {
		out.Mode = syscall.S_IFDIR | 0o500
		out.Uid, out.Gid = r.owner.UID, r.owner.GID
	}
	return 0
}

// OnAdd adds every file, making the directories on its path. go-fuse calls it
// once, whether the root is a mount's or grafted into another tree.
func (r *root) OnAdd(ctx context.Context) {
	addFiles(ctx, r.EmbeddedInode(), r.files, r.born)
}

// addFiles adds files under top, by path, making the directories on their paths.
func addFiles(ctx context.Context, top *fs.Inode, files map[string]*fileNode, born time.Time) {
	dirs := map[string]*fs.Inode{".": top}
	var dir func(p string) *fs.Inode
	dir = func(p string) *fs.Inode {
		if d := dirs[p]; d != nil {
			return d
		}
		parent := dir(path.Dir(p))
		d := parent.NewPersistentInode(ctx, &dirNode{born: born}, fs.StableAttr{Mode: syscall.S_IFDIR})
		parent.AddChild(path.Base(p), d, false)
		dirs[p] = d
		return d
	}
	// In order, so that the inode numbers are the same in every mount.
	for _, name := range slices.Sorted(maps.Keys(files)) {
		parent := dir(path.Dir(name))
		parent.AddChild(path.Base(name), parent.NewPersistentInode(ctx, files[name], fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
}
