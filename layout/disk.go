package layout

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/google/uuid"
)

// Partition is one GPT partition: its bytes as an Image (a 4 KiB multiple) placed
// at Offset in the disk.
type Partition struct {
	Image
	Label    string
	Offset   int64
	GUID     uuid.UUID
	Writable bool
}

// Disk is a GPT disk laid out over original files.
type Disk struct {
	Sources    []Source
	GUID       uuid.UUID
	Partitions []Partition
	Header     Image // bytes [0, HeaderSize) of Flat
	Footer     Image // the last FooterSize bytes of Flat
	Flat       Image // the whole disk
}

// Writable reports whether some partition of d is writable.
func (d *Disk) Writable() bool {
	return slices.ContainsFunc(d.Partitions, func(p Partition) bool { return p.Writable })
}

// PartSpec is a partition to lay out: a label and its content. Content.Size must be
// a 4 KiB multiple; the content helpers below pad for you.
type PartSpec struct {
	Label    string
	Writable bool
	Content  Image
}

// Options tune Build.
type Options struct {
	// GUIDs, when set, gives the disk GUID and then one per partition, in order.
	// When nil the GUIDs are derived from the labels and sizes (UUIDv5), so the same
	// inputs always give the same bytes.
	GUIDs []uuid.UUID
}

// Errors a caller may branch on.
var (
	ErrTooManyPartitions = errors.New("too many partitions")
	ErrBadLabel          = errors.New("bad partition label")
	ErrTooLarge          = errors.New("too large")
	ErrEmpty             = errors.New("empty")
	ErrUnaligned         = errors.New("not a multiple of 4096 bytes")
)

// guidSpace namespaces vmfs's derived GUIDs.
var guidSpace = uuid.MustParse("8c2b1b1e-6a52-4c1d-9a83-5f0c8f1d7a61")

// Build lays out parts, in order, as GPT entries 1..n over sources.
func Build(sources []Source, parts []PartSpec, o Options) (*Disk, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("no partitions: %w", ErrEmpty)
	}
	if len(parts) > MaxPartitions {
		return nil, fmt.Errorf("%d partitions, at most %d: %w", len(parts), MaxPartitions, ErrTooManyPartitions)
	}
	if o.GUIDs != nil && len(o.GUIDs) != len(parts)+1 {
		return nil, fmt.Errorf("layout: %d GUIDs for %d partitions plus the disk", len(o.GUIDs), len(parts))
	}
	seen := make(map[string]bool, len(parts))
	desc := sha256.New()
	for _, p := range parts {
		if err := checkLabel(p.Label); err != nil {
			return nil, err
		}
		if seen[p.Label] {
			return nil, fmt.Errorf("partition %q named twice: %w", p.Label, ErrBadLabel)
		}
		seen[p.Label] = true
		if err := checkContent(&p.Content, len(sources)); err != nil {
			return nil, fmt.Errorf("partition %q: %w", p.Label, err)
		}
		fmt.Fprintf(desc, "%q %t", p.Label, p.Writable)
		for _, e := range p.Content.Extents {
			fmt.Fprintf(desc, " %v %d %d", e.Kind, e.Len, e.Source)
			desc.Write(e.Data)
		}
		desc.Write([]byte{'\n'})
	}

	d := &Disk{Sources: sources}
	if o.GUIDs != nil {
		d.GUID = o.GUIDs[0]
	} else {
		d.GUID = uuid.NewSHA1(guidSpace, desc.Sum(nil))
	}
	off := int64(HeaderSize)
	for i, p := range parts {
		guid := uuid.NewSHA1(d.GUID, []byte(p.Label))
		if o.GUIDs != nil {
			guid = o.GUIDs[i+1]
		}
		d.Partitions = append(d.Partitions, Partition{
			Image: p.Content, Label: p.Label, Offset: off, GUID: guid, Writable: p.Writable,
		})
		off += p.Content.Size
	}
	header, footer := gptImages(d.Partitions, d.GUID, off)
	d.Header.append(Extent{Len: HeaderSize, Kind: Data, Data: header})
	d.Footer.append(Extent{Len: FooterSize, Kind: Data, Data: footer})
	d.Flat.appendImage(&d.Header)
	for i := range d.Partitions {
		d.Flat.appendImage(&d.Partitions[i].Image)
	}
	d.Flat.appendImage(&d.Footer)
	return d, nil
}

func checkLabel(l string) error {
	switch {
	case l == "", l == ".", l == "..", strings.ContainsAny(l, "/\x00"):
		return fmt.Errorf("label %q: %w", l, ErrBadLabel)
	case len(utf16.Encode([]rune(l))) > MaxLabelUnits:
		return fmt.Errorf("label %q longer than %d UTF-16 units: %w", l, MaxLabelUnits, ErrBadLabel)
	}
	return nil
}

// checkContent guards against a malformed Image from outside this package.
func checkContent(im *Image, nsrc int) error {
	if im.Size == 0 {
		return ErrEmpty
	}
	if im.Size%PartitionAlign != 0 {
		return fmt.Errorf("size %d: %w", im.Size, ErrUnaligned)
	}
	var off int64
	for _, e := range im.Extents {
		if e.Off != off || e.Len <= 0 ||
			(e.Kind == File && (e.Source < 0 || e.Source >= nsrc || e.SourceOff < 0)) ||
			(e.Kind == Data && int64(len(e.Data)) != e.Len) {
			return fmt.Errorf("layout: malformed extent at %d", off)
		}
		off += e.Len
	}
	if off != im.Size {
		return fmt.Errorf("layout: extents cover %d of %d bytes", off, im.Size)
	}
	return nil
}

// FileContent is a whole source of the given size, then zeros to 4 KiB: how the APK,
// the idsig and OS partition files are served.
func FileContent(src int, size int64) Image {
	var im Image
	im.append(Extent{Len: size, Kind: File, Source: src})
	im.append(Extent{Len: align4K(size) - size, Kind: Zero})
	return im
}

// DataContent is synthesized bytes, then zeros to 4 KiB.
func DataContent(b []byte) Image {
	var im Image
	im.append(Extent{Len: int64(len(b)), Kind: Data, Data: b})
	im.append(Extent{Len: align4K(int64(len(b))) - int64(len(b)), Kind: Zero})
	return im
}

// MaxApexSize is the first APEX size the trailer cannot hold: the seed writes the
// size as a signed 32-bit value.
const MaxApexSize = 1 << 31

// ApexContent is an APEX as the 2021 apexd reads it from a block device: the file,
// zeros, and its size as a big-endian u32 in the last 4 bytes, padded so that the
// whole is align4K(size+4).
func ApexContent(src int, size int64) (Image, error) {
	if size <= 0 {
		return Image{}, ErrEmpty
	}
	if size >= MaxApexSize {
		return Image{}, fmt.Errorf("%d bytes, the size trailer holds less than %d: %w", size, int64(MaxApexSize), ErrTooLarge)
	}
	var im Image
	im.append(Extent{Len: size, Kind: File, Source: src})
	im.append(Extent{Len: align4K(size+4) - size - 4, Kind: Zero})
	trailer := binary.BigEndian.AppendUint32(nil, uint32(size))
	im.append(Extent{Len: 4, Kind: Data, Data: trailer})
	return im, nil
}
