package fusedisk

import (
	"context"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
	"go.uber.org/zap"

	"vmfs/layout"
)

// maxRead bounds one FUSE read (MaxWrite, and so max_read and max_pages). At 1 MiB
// a reply (data plus header) no longer fits in a pipe of the default pipe-max-size
// and go-fuse's splice falls back to copying; the kernel on 6.18 still sends 1 MiB
// reads when max_pages asks for 255 pages, so the cap is 512 KiB.
const maxRead = 512 << 10

// pipeSlot is the size of one pipe buffer slot (a page).
const pipeSlot = 4096

// zeros backs reads of zero extents; never written.
var zeros [maxRead]byte

// fileNode is any file of a tree, read-only unless it reads a writable source: a disk, a partition, the GPT pieces
// or a synthesized document, all described by a layout.Image.
type fileNode struct {
	fs.Inode
	name string // path in the tree, for logs
	im   *layout.Image
	set  *Sources  // holds srcs; nil for a file that reads none outside a tree
	srcs []*source // indexed like the Disk's Sources
	from []*source // the sources its extents read, each once
	perm perm      // from the sources it reveals (see NewTree)
	// whole is the one source the node is exactly, which kernel passthrough
	// may serve, or nil; pass: Mount found that the kernel takes it.
	whole *source
	pass  bool
	// rw: some extent reads a writable source (see "Writes").
	rw   bool
	ref  *layout.Reader // the fallback when no pipe can be had
	log  *zap.Logger
	born time.Time // the tree's time: every file's mtime, ctime and atime
	// opened joins the node to its sources' nodes at its first open.
	opened sync.Once
}

var (
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeReader)((*fileNode)(nil))
	_ = (fs.NodeSetattrer)((*fileNode)(nil))
	_ = (fs.NodeReleaser)((*fileNode)(nil))
	_ = (fs.NodeWriter)((*fileNode)(nil))
	_ = (fs.NodeFsyncer)((*fileNode)(nil))
	_ = (fs.NodeFlusher)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | n.perm.mode
	out.Uid, out.Gid = n.perm.uid, n.perm.gid
	out.Nlink = 1
	out.Size = uint64(n.im.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.SetTimes(&n.born, &n.born, &n.born)
	return 0
}

// Setattr changes nothing: a node that reads a writable source takes a
// truncation to its own size (dd does one), and nothing else.
func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.rw {
		return syscall.EROFS
	}
	if size, ok := in.GetSize(); ok && size == uint64(n.im.Size) && in.Valid&^(fuse.FATTR_SIZE|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0 {
		return n.Getattr(ctx, fh, out)
	}
	return syscall.EPERM
}

// handle is an open file. go-fuse tells Release only of opens that returned a
// handle, and the count of open files needs every Release.
type handle struct {
	n     *fileNode
	wrote atomic.Bool // a write went through it: its Flush syncs
}

// passHandle hands the kernel the original file for passthrough reads.
type passHandle struct{ fd int }

var _ = (fs.FilePassthroughFder)((*passHandle)(nil))

func (h *passHandle) PassthroughFd() (int, bool) { return h.fd, true }

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	switch {
	case n.rw && flags&(syscall.O_TRUNC|syscall.O_APPEND) != 0:
		return nil, 0, syscall.EPERM // its size is the disk's
	case !n.rw && flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0:
		return nil, 0, syscall.EROFS
	}
	// A tree taken out of its mount serves the files open already, and no more.
	if !n.set.hold() {
		return nil, 0, syscall.ENOENT
	}
	// Only an opened node has cached pages to drop, and only once it is in a
	// mounted tree can the kernel be told to drop them.
	n.opened.Do(func() {
		for _, src := range n.from {
			src.addNode(n)
		}
	})
	if n.pass && n.whole.check() {
		return &passHandle{fd: n.whole.fd}, fuse.FOPEN_KEEP_CACHE, 0
	}
	if n.rw {
		if errno := n.hold(); errno != 0 {
			n.set.unhold()
			return nil, 0, errno
		}
		// No page cache: a write through one node changes the bytes of others
		// (disk.img and partitions/<label>), which then read them from vmfs.
		return &handle{n: n}, fuse.FOPEN_DIRECT_IO, 0
	}
	return &handle{n: n}, fuse.FOPEN_KEEP_CACHE, 0
}

// Write writes data at off to the writable sources under it, and only there:
// a write that touches any other byte (the GPT, metadata, an APK, padding)
// fails with EPERM and writes nothing. The bytes are in the sources when it
// returns.
func (n *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if !n.rw {
		return 0, syscall.EROFS
	}
	end := off + int64(len(data))
	if len(data) == 0 {
		return 0, 0
	}
	if off < 0 || end > n.im.Size {
		return 0, syscall.EPERM
	}
	first, last := n.im.Index(off), n.im.Index(end-1)
	for i := first; i <= last; i++ {
		if e := &n.im.Extents[i]; e.Kind != layout.File || n.srcs[e.Source].w == nil {
			return 0, syscall.EPERM
		}
	}
	for i := first; i <= last; i++ {
		e := &n.im.Extents[i]
		from, to := max(off, e.Off), min(end, e.Off+e.Len)
		if _, err := n.srcs[e.Source].w.WriteAt(data[from-off:to-off], e.SourceOff+from-e.Off); err != nil {
			n.log.Error("write failed", zap.String("file", n.name), zap.Int64("offset", from), zap.Error(err))
			return 0, syscall.EIO
		}
	}
	if h, ok := fh.(*handle); ok {
		h.wrote.Store(true)
	}
	return uint32(len(data)), 0
}

// Fsync syncs the writable sources the node reads.
func (n *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	for _, src := range n.from {
		if src.w == nil {
			continue
		}
		if err := src.w.Sync(); err != nil {
			n.log.Error("sync failed", zap.String("file", n.name), zap.Error(err))
			return syscall.EIO
		}
	}
	return 0
}

// Flush (a close) syncs what was written through the file.
func (n *fileNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok && h.wrote.Load() {
		return n.Fsync(ctx, fh, 0)
	}
	return 0
}

// Release comes once the kernel's last user of an open closed it and every read
// on it was answered: the sources may go once no file is open (CloseWhenIdle).
func (n *fileNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if n.rw {
		n.let(len(n.from))
	}
	n.set.unhold()
	return 0
}

// hold holds the writable sources the node reads that are Holders, all or
// none.
func (n *fileNode) hold() syscall.Errno {
	for i, src := range n.from {
		h, ok := src.w.(Holder)
		if !ok {
			continue
		}
		if err := h.Hold(); err != nil {
			n.let(i)
			n.log.Warn("open refused", zap.String("file", n.name), zap.Error(err))
			var errno syscall.Errno
			if errors.As(err, &errno) {
				return errno
			}
			return syscall.EIO
		}
	}
	return 0
}

// let lets go of the Holders among the node's first k sources.
func (n *fileNode) let(k int) {
	for _, src := range n.from[:k] {
		if h, ok := src.w.(Holder); ok {
			h.Let()
		}
	}
}

// Read serves [off, off+len(dest)) without copying where it can: one file extent
// goes to the kernel as an fd to splice from, one in-memory extent as a slice, and a
// read across extents is spliced into a pipe piece by piece. A reply go-fuse could
// not splice whole is copied instead (see spliceFits).
func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.im.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	size := int(min(int64(len(dest)), n.im.Size-off))
	first := n.im.Index(off)
	last := n.im.Index(off + int64(size) - 1)
	for i := first; i <= last; i++ {
		if e := &n.im.Extents[i]; e.Kind == layout.File && !n.srcs[e.Source].check() {
			return nil, syscall.EIO
		}
	}
	if first == last {
		e := &n.im.Extents[first]
		in := off - e.Off
		switch e.Kind {
		case layout.Data:
			return fuse.ReadResultData(e.Data[in : in+int64(size)]), 0
		case layout.Zero:
			return fuse.ReadResultData(zeros[:size]), 0
		}
	}
	// A node over a writable source reads it through its backend (a QCOW2
	// file's bytes are not the disk's), copied.
	if !n.rw {
		if slots := n.pipeSlots(off, size, first, last); spliceFits(size, slots) {
			if first == last {
				e := &n.im.Extents[first]
				return fuse.ReadResultFd(uintptr(n.srcs[e.Source].fd), e.SourceOff+off-e.Off, size), 0
			}
			if r, ok := n.readPipe(off, size, first, last, slots); ok {
				return r, 0
			}
		}
	}
	// Too many pieces for go-fuse's pipe, or no pipe to be had: copy.
	m, err := n.ref.ReadAt(dest[:size], off)
	if m < size {
		n.log.Error("read failed", zap.String("file", n.name), zap.Int64("offset", off), zap.Error(err))
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:size]), 0
}

// pipeSlots counts the pipe buffers [off, off+size) takes in a pipe: a piece of a
// file one per source page it spans (each spliced page is a buffer of its own, never
// merged with another), written bytes at most one per page.
func (n *fileNode) pipeSlots(off int64, size int, first, last int) int {
	end := off + int64(size)
	slots := 0
	for i := first; i <= last; i++ {
		e := &n.im.Extents[i]
		from, to := max(off, e.Off), min(end, e.Off+e.Len)
		if e.Kind == layout.File {
			start := e.SourceOff + from - e.Off
			slots += int((start+to-from-1)/pipeSlot - start/pipeSlot + 1)
		} else {
			slots += int((to - from + pipeSlot - 1) / pipeSlot)
		}
	}
	return slots
}

// outHeaderSize is the reply header go-fuse puts in its pipe ahead of the data.
const outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))

// spliceFits reports whether go-fuse's splice sends a reply of size bytes in slots
// pipe buffers whole. It writes the header (one slot) into a pipe grown to the
// reply, which the kernel rounds up to a power of two of slots, and then does one
// splice; a splice moves whole buffers, one per slot, and stops short when the pipe
// is full. go-fuse sends the shorter reply it got, and the kernel takes a short
// read for the end of the file: it would cut the file's size for as long as it
// caches attributes. go-fuse grows its pipe by a page more than the reply today;
// that page is not counted on.
func spliceFits(size, slots int) bool {
	pages := (outHeaderSize + size + pipeSlot - 1) / pipeSlot
	return 1+slots <= 1<<bits.Len(uint(pages-1))
}

// readPipe assembles a read of extents first..last, which takes slots pipe buffers,
// in a splice pipe.
func (n *fileNode) readPipe(off int64, size int, first, last, slots int) (fuse.ReadResult, bool) {
	pair, err := splice.Get()
	if err != nil {
		return nil, false
	}
	if err := pair.Grow(slots * pipeSlot); err != nil {
		splice.Done(pair)
		return nil, false
	}
	for done, i := 0, first; done < size; i++ {
		e := &n.im.Extents[i]
		in := off + int64(done) - e.Off
		want := int(min(int64(size-done), e.Len-in))
		var err error
		switch e.Kind {
		case layout.File:
			err = loadFile(pair, n.srcs[e.Source].fd, want, e.SourceOff+in)
		case layout.Data:
			err = write(pair, e.Data[in:in+int64(want)])
		case layout.Zero:
			err = write(pair, zeros[:want])
		}
		if err != nil {
			splice.Done(pair)
			n.log.Error("splice failed", zap.String("file", n.name), zap.Int64("offset", off), zap.Error(err))
			return nil, false
		}
		done += want
	}
	return fuse.ReadResultPipe(pair, size), true
}

// loadFile splices exactly sz bytes of fd at off into the pipe; a source that ends
// early is a changed source, never a short read.
func loadFile(p *splice.Pair, fd, sz int, off int64) error {
	for sz > 0 {
		m, err := p.LoadFromAt(uintptr(fd), sz, off)
		if err != nil {
			return err
		}
		if m == 0 {
			return layout.ErrSourceChanged
		}
		sz -= m
		off += int64(m)
	}
	return nil
}

func write(p *splice.Pair, b []byte) error {
	for len(b) > 0 {
		m, err := p.Write(b)
		if err != nil {
			return err
		}
		b = b[m:]
	}
	return nil
}
