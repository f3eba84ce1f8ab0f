package fusedisk

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/layout"
)

// Disk is a layout.Disk and where it appears in the mount. The disk at Dir ""
// (the payload) is served at the root as payload.img, payload.composite,
// header.img, footer.img and partitions/<label>; a disk at Dir "disks/0" as
// disks/0/disk.img, disks/0/disk.composite and so on.
type Disk struct {
	Dir  string
	Disk *layout.Disk
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
	}
	if d.Disk != nil {
		p.Partitions = make(map[string]string, len(d.Disk.Partitions))
		for _, part := range d.Disk.Partitions {
			p.Partitions[part.Label] = at("partitions", part.Label)
		}
	}
	return p
}

// Options configure Mount.
type Options struct {
	Disks []Disk
	// Files are further synthesized files by path in the mount (vm.json, ...).
	Files map[string][]byte
	// FsName shows as the mount's source in /proc/self/mountinfo.
	FsName string
	// Passthrough lets the kernel read nodes that are exactly one original file
	// directly (kernel >= 6.9, root); such reads bypass the change guard.
	Passthrough bool
	// AllowOther lets other users in; each file stays as closed as its sources.
	AllowOther bool
	// ReadaheadKiB sets the mount's kernel readahead (root only). The kernel caps
	// FUSE readahead at 128 KiB at mount time, which splits sequential reads into
	// 128 KiB requests; a larger window lets them reach MaxWrite. 0 means 1024.
	ReadaheadKiB int
	Debug        bool
	Logger       *zap.Logger // default zap.NewNop()
}

// Server is a mounted vmfs filesystem.
type Server struct {
	Mountpoint string
	fsName     string
	srv        *fuse.Server
	srcs       []*source // one per file
	watch      *watcher
	stop       chan struct{} // ends invalidate
}

// cacheTimeout is how long the kernel may keep entries and attributes: the
// content of a mount never changes.
const cacheTimeout = 24 * time.Hour

// Mount opens the sources, checks them against their layouts and serves the disks
// at mnt (an existing directory). It returns once the kernel has the mount.
func Mount(mnt string, o Options) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	mnt, err := filepath.Abs(mnt)
	if err != nil {
		return nil, err
	}
	s := &Server{Mountpoint: mnt, fsName: o.FsName}
	ok := false
	defer func() {
		if !ok {
			s.closeSources()
		}
	}()

	born := time.Now()
	files := map[string]*fileNode{}
	layoutDoc := map[string]layout.Description{}
	opened := map[fileID]*source{}
	for _, d := range o.Disks {
		srcs := make([]*source, len(d.Disk.Sources))
		readers := make([]io.ReaderAt, len(srcs))
		for i, ls := range d.Disk.Sources {
			src, err := openSource(ls)
			if err != nil {
				return nil, err
			}
			if have := opened[src.id()]; have != nil {
				have.share(src)
				src = have
			} else {
				opened[src.id()] = src
				s.srcs = append(s.srcs, src)
			}
			srcs[i], readers[i] = src, src.f
		}
		add := func(name string, im *layout.Image) {
			n := &fileNode{name: name, im: im, srcs: srcs, ref: layout.NewReader(im, readers), log: log, born: born}
			if o.Passthrough {
				n.pass = wholeSource(im, srcs)
			}
			for _, e := range im.Extents {
				if src := srcs[e.Source]; e.Kind == layout.File && !slices.Contains(src.nodes, n) {
					src.nodes = append(src.nodes, n)
					n.from = append(n.from, src)
				}
			}
			files[name] = n
		}
		dk := d.Disk
		add(path.Join(d.Dir, d.base()+".img"), &dk.Flat)
		add(path.Join(d.Dir, "header.img"), &dk.Header)
		add(path.Join(d.Dir, "footer.img"), &dk.Footer)
		var parts []string
		at := d.Paths(mnt)
		for i := range dk.Partitions {
			p := &dk.Partitions[i]
			add(path.Join(d.Dir, "partitions", p.Label), &p.Image)
			if src := wholeSource(&p.Image, srcs); p.Writable && src != nil {
				// The mount is read-only: crosvm writes a writable partition to
				// its file directly, as virtualizationservice hands it over.
				parts = append(parts, src.path)
				continue
			}
			parts = append(parts, at.Partitions[p.Label])
		}
		cd, err := dk.Composite(at.Header, parts, at.Footer)
		if err != nil {
			return nil, err
		}
		add(path.Join(d.Dir, d.base()+".composite"), dataImage(cd))
		layoutDoc[path.Join(d.Dir, d.base())] = dk.Describe()
	}
	doc, err := json.MarshalIndent(layoutDoc, "", "  ")
	if err != nil {
		return nil, err
	}
	extra := map[string][]byte{"layout.json": append(doc, '\n')}
	for name, b := range o.Files {
		extra[name] = b
	}
	for name, b := range extra {
		im := dataImage(b)
		files[name] = &fileNode{name: name, im: im, ref: layout.NewReader(im, nil), log: log, born: born}
	}
	// A node is no more open than the sources it reads; one that reads none
	// (GPT, composite, metadata, layout.json, o.Files) tells of them all.
	all := permOf(s.srcs)
	for _, n := range files {
		n.perm = all
		if len(n.from) > 0 {
			n.perm = permOf(n.from)
		}
	}

	changed := make(chan *source, len(s.srcs))
	for _, src := range s.srcs {
		src.inval = changed
	}
	if s.watch, err = newWatcher(s.srcs); err != nil {
		return nil, err
	}
	go s.watch.run(log)

	root := &dirNode{born: born}
	timeout := cacheTimeout
	opts := &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		OnAdd:        func(ctx context.Context) { buildTree(ctx, root, files, born) },
		// A mode of 0 means no one but root, not go-fuse's default of 0644.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:       o.FsName,
			Name:         subtype,
			MaxWrite:     maxRead,
			MaxReadAhead: maxRead,
			AllowOther:   o.AllowOther,
			DirectMount:  os.Geteuid() == 0,
			// The kernel enforces read-only before any request reaches vmfs.
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			// The kernel checks each node's owner, group and mode (see permOf).
			Options:                  []string{"ro", "default_permissions"},
			ExplicitDataCacheControl: true,
			Debug:                    o.Debug,
		},
	}
	if s.srv, err = fs.Mount(mnt, root, opts); err != nil {
		s.watch.close()
		return nil, fmt.Errorf("mount %s: the kernel's FUSE refused: %w", mnt, err)
	}
	ok = true
	s.stop = make(chan struct{})
	go invalidate(changed, s.stop)
	if os.Geteuid() == 0 {
		kib := o.ReadaheadKiB
		if kib == 0 {
			kib = defaultReadaheadKiB
		}
		if err := setReadahead(mnt, kib); err != nil {
			log.Warn("cannot raise readahead; sequential reads stay at 128 KiB requests", zap.Error(err))
		}
	}
	return s, nil
}

const defaultReadaheadKiB = 1024

// setReadahead writes the read_ahead_kb of the mount's backing device info.
func setReadahead(mnt string, kib int) error {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(strconv.Itoa(kib)), 0)
}

// Wait blocks until the filesystem is unmounted (by Unmount, fusermount -u or
// umount), then releases the sources.
func (s *Server) Wait() {
	s.srv.Wait()
	close(s.stop)
	s.watch.close()
	s.closeSources()
}

// Unmount removes exactly this mount (see Unmount); Wait returns once it is gone.
func (s *Server) Unmount() error { return Unmount(s.Mountpoint, s.fsName, false) }

// Detach removes this mount lazily: at once from the tree, and for good when its
// last open file is closed, which is when Wait returns.
func (s *Server) Detach() error { return Unmount(s.Mountpoint, s.fsName, true) }

func (s *Server) closeSources() {
	for _, src := range s.srcs {
		src.f.Close()
	}
	s.srcs = nil
}

// buildTree adds every file, making the directories on its path.
func buildTree(ctx context.Context, root *dirNode, files map[string]*fileNode, born time.Time) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	dirs := map[string]*fs.Inode{".": root.EmbeddedInode()}
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
	for _, name := range names {
		parent := dir(path.Dir(name))
		parent.AddChild(path.Base(name), parent.NewPersistentInode(ctx, files[name], fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
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
	if s := srcs[im.Extents[0].Source]; s.want.Size == im.Size {
		return s
	}
	return nil
}
