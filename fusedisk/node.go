package fusedisk

import (
	"context"
	"math/bits"
	"sync"
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

// fileNode is any read-only file of a tree: a disk, a partition, the GPT pieces
// or a synthesized document, all described by a layout.Image.
type fileNode struct {
	fs.Inode
	name string // path in the tree, for logs
	im   *layout.Image
	set  *Sources  // holds srcs; nil for a file that reads none outside a tree
	srcs []*source // indexed like the Disk's Sources
	from []*source // the sources its extents read, each once
	perm perm      // from the sources it reveals (see NewTree)
	// pass is the source served by kernel passthrough, or nil.
	pass *source
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

func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// handle is an open file. go-fuse tells Release only of opens that returned a
// handle, and the count of open files needs every Release.
type handle struct{ n *fileNode }

// passHandle hands the kernel the original file for passthrough reads.
type passHandle struct{ fd int }

var _ = (fs.FilePassthroughFder)((*passHandle)(nil))

func (h *passHandle) PassthroughFd() (int, bool) { return h.fd, true }

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
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
	if n.pass != nil && n.pass.check() {
		// go-fuse falls back to normal reads when the kernel refuses the backing fd.
		return &passHandle{fd: n.pass.fd}, fuse.FOPEN_KEEP_CACHE, 0
	}
	return &handle{n}, fuse.FOPEN_KEEP_CACHE, 0
}

// Release comes once the kernel's last user of an open closed it and every read
// on it was answered: the sources may go once no file is open (CloseWhenIdle).
func (n *fileNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	n.set.unhold()
	return 0
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
	if slots := n.pipeSlots(off, size, first, last); spliceFits(size, slots) {
		if first == last {
			e := &n.im.Extents[first]
			return fuse.ReadResultFd(uintptr(n.srcs[e.Source].fd), e.SourceOff+off-e.Off, size), 0
		}
		if r, ok := n.readPipe(off, size, first, last, slots); ok {
			return r, 0
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
