package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Piece is a run of a disk that a VMM reads from one file: whole sectors of an
// original source from SourceOff (Source >= 0), or bytes the mount synthesizes
// (Source < 0), Synth, served as a file of their own.
type Piece struct {
	Off, Len  int64
	Source    int
	SourceOff int64
	Synth     Image
}

// Synthesized reports whether the piece's bytes come from the mount.
func (p *Piece) Synthesized() bool { return p.Source < 0 }

// ErrNotExact reports an extent description that would not give a VMM the
// disk's bytes; the caller falls back to the flat image.
var ErrNotExact = errors.New("not exact")

// Pieces cuts the disk into the pieces a VMM can read directly: the sectors of
// an original it holds whole go to the original, everything else (synthesized
// bytes, zeros, the part sectors at an original's ends) to synthesized pieces,
// each a sector multiple. A disk with a writable partition has none: its state
// sources are QCOW2 images, whose bytes are not the disk's.
func (d *Disk) Pieces() ([]Piece, error) {
	if d.Writable() {
		return nil, fmt.Errorf("a partition is writable: %w", ErrNotExact)
	}
	if d.Flat.Size%SectorSize != 0 {
		return nil, fmt.Errorf("disk of %d bytes is not a sector multiple: %w", d.Flat.Size, ErrNotExact)
	}
	var pieces []Piece
	synth := Piece{Source: -1}
	flush := func() {
		if synth.Synth.Size > 0 {
			synth.Len = synth.Synth.Size
			pieces = append(pieces, synth)
			synth = Piece{Source: -1, Off: synth.Off + synth.Len}
		}
	}
	for _, e := range d.Flat.Extents {
		if e.Kind != File {
			synth.Synth.append(e)
			continue
		}
		// The head up to the next sector boundary of the disk.
		head := min(e.Len, (SectorSize-e.Off%SectorSize)%SectorSize)
		whole := (e.Len - head) / SectorSize * SectorSize
		if (e.SourceOff+head)%SectorSize != 0 {
			whole = 0 // the source's sectors do not line up with the disk's
		}
		synth.Synth.append(Extent{Len: head, Kind: File, Source: e.Source, SourceOff: e.SourceOff})
		if whole > 0 {
			flush()
			pieces = append(pieces, Piece{Off: e.Off + head, Len: whole, Source: e.Source, SourceOff: e.SourceOff + head})
			synth.Off = e.Off + head + whole
		}
		tail := e.Len - head - whole
		synth.Synth.append(Extent{Len: tail, Kind: File, Source: e.Source, SourceOff: e.SourceOff + head + whole})
	}
	flush()
	return pieces, nil
}

// vmdkPathMax is the longest extent file name QEMU's VMDK parser reads (%511[...]).
const vmdkPathMax = 511

// VMDK returns a VMDK descriptor of the pieces, each a FLAT extent of the file
// at paths[i] (absolute), as QEMU reads one: only RW lines are parsed (the drive
// is opened read-only instead), and there is no zero extent type, so zeros are
// synthesized pieces too.
func (d *Disk) VMDK(pieces []Piece, paths []string) ([]byte, error) {
	if len(paths) != len(pieces) {
		return nil, fmt.Errorf("layout: %d paths for %d pieces", len(paths), len(pieces))
	}
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\n")
	for i, p := range pieces {
		if p.Off%SectorSize != 0 || p.Len%SectorSize != 0 || p.Len <= 0 || p.SourceOff%SectorSize != 0 {
			return nil, fmt.Errorf("piece at %d is not whole sectors: %w", p.Off, ErrNotExact)
		}
		path := paths[i]
		if len(path) > vmdkPathMax || strings.ContainsAny(path, "\"\r\n") || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("extent file %q: not an absolute path QEMU's VMDK parser reads whole: %w", path, ErrNotExact)
		}
		fmt.Fprintf(&b, "RW %d FLAT \"%s\" %d\n", p.Len/SectorSize, path, p.SourceOff/SectorSize)
	}
	b.WriteString("\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\n")
	return []byte(b.String()), nil
}

// PiecesComposite returns a crosvm composite descriptor whose components are
// the pieces, each the file at paths[i] from its SourceOff (file_offset, which
// crosvm reads since 2026-03; vmfs's own layouts start every piece at 0).
func (d *Disk) PiecesComposite(pieces []Piece, paths []string) ([]byte, error) {
	if len(paths) != len(pieces) {
		return nil, fmt.Errorf("layout: %d paths for %d pieces", len(paths), len(pieces))
	}
	c := Composite{Version: CompositeVersion, Length: uint64(d.Flat.Size)}
	for i, p := range pieces {
		c.Components = append(c.Components, Component{Path: paths[i], Offset: uint64(p.Off), FileOffset: uint64(p.SourceOff)})
	}
	return c.Marshal(), nil
}

// CrosvmImageType is the image type crosvm finds at the start of a component
// (its detect_image_type), "" for raw: a component crosvm would not read raw
// cannot be one of the disk's pieces.
func CrosvmImageType(head []byte) string {
	if strings.HasPrefix(string(head), CompositeMagic) {
		return "composite"
	}
	if len(head) < 4 {
		return ""
	}
	be, le := binary.BigEndian.Uint32(head), binary.LittleEndian.Uint32(head)
	switch {
	case be == 0x514649fb:
		return "qcow2"
	case le == 0xed26ff3a:
		return "android sparse"
	case le == 0xfd2fb528, le >= 0x184d2a50 && le <= 0x184d2a5f:
		return "zstd"
	}
	return ""
}
