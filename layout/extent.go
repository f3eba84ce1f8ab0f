package layout

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// Kind says where an extent's bytes come from.
type Kind uint8

const (
	Zero Kind = iota // zeros
	File             // a slice of Disk.Sources[Source]
	Data             // synthesized bytes held in memory
)

func (k Kind) String() string {
	switch k {
	case Zero:
		return "zeros"
	case File:
		return "file"
	case Data:
		return "synthesized"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Extent is a run of bytes at Off in the image that holds it.
type Extent struct {
	Off       int64
	Len       int64
	Kind      Kind
	Source    int    // File: index into Disk.Sources
	SourceOff int64  // File: offset inside the source
	Data      []byte // Data: exactly Len bytes
}

// Image is a sequence of contiguous extents covering [0, Size).
type Image struct {
	Size    int64
	Extents []Extent
}

// Source is an original file the disk reads from. Size is what the layout was built
// for; a reader must refuse a source whose size has changed since.
type Source struct {
	Path string
	Size int64
}

// Index returns the index of the extent holding byte off, or len(Extents) when off
// is at or past the end.
func (im *Image) Index(off int64) int {
	return sort.Search(len(im.Extents), func(i int) bool {
		e := &im.Extents[i]
		return e.Off+e.Len > off
	})
}

// append adds an extent after the last one, merging adjacent zeros; empty runs vanish.
func (im *Image) append(e Extent) {
	if e.Len == 0 {
		return
	}
	e.Off = im.Size
	im.Size += e.Len
	if n := len(im.Extents); n > 0 && e.Kind == Zero && im.Extents[n-1].Kind == Zero {
		im.Extents[n-1].Len += e.Len
		return
	}
	im.Extents = append(im.Extents, e)
}

// appendImage adds every extent of sub after the current end.
func (im *Image) appendImage(sub *Image) {
	for _, e := range sub.Extents {
		im.append(e)
	}
}

// ErrSourceChanged reports a source that no longer has the bytes the layout promised.
var ErrSourceChanged = errors.New("source changed")

// Reader reads an Image, fetching file extents from srcs (indexed like Disk.Sources).
// It is the reference implementation every faster path must agree with. It is safe
// for concurrent use when the srcs are.
type Reader struct {
	im   *Image
	srcs []io.ReaderAt
}

// NewReader returns a reader of im over the given sources.
func NewReader(im *Image, srcs []io.ReaderAt) *Reader { return &Reader{im: im, srcs: srcs} }

// Size is the image size in bytes.
func (r *Reader) Size() int64 { return r.im.Size }

// ReadAt implements io.ReaderAt. A source that ends early yields an error wrapping
// ErrSourceChanged: a short source must never be served as zeros.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layout: negative offset %d", off)
	}
	if off >= r.im.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.im.Size - off; int64(want) > rest {
		p = p[:rest]
	}
	n := 0
	for i := r.im.Index(off); n < len(p); i++ {
		e := &r.im.Extents[i]
		in := off + int64(n) - e.Off
		chunk := p[n:min(int64(len(p)), int64(n)+e.Len-in)]
		switch e.Kind {
		case Zero:
			clear(chunk)
		case Data:
			copy(chunk, e.Data[in:])
		case File:
			m, err := r.srcs[e.Source].ReadAt(chunk, e.SourceOff+in)
			if m < len(chunk) {
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("source %d ends before byte %d: %w", e.Source, e.SourceOff+in+int64(len(chunk)), ErrSourceChanged)
				}
				return n + m, err
			}
		}
		n += len(chunk)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}
