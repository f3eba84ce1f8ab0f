package layout

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// CompositeMagic starts a crosvm composite disk descriptor.
const CompositeMagic = "composite_disk\x1d"

// CompositeVersion 1 is read by every crosvm since 2019 (newer ones write 2).
const CompositeVersion = 1

// Component is one component disk of a composite descriptor.
type Component struct {
	Path       string
	Offset     uint64 // where it starts in the disk
	Writable   bool
	FileOffset uint64 // where its bytes start in the file (crosvm since 2026-03)
}

// Composite is the content of a composite descriptor.
type Composite struct {
	Version    uint64
	Components []Component
	Length     uint64
}

// Composite returns the composite descriptor of d whose components are the header,
// each partition and the footer at the given paths (absolute, so every crosvm
// version reads them the same).
func (d *Disk) Composite(header string, partitions []string, footer string) ([]byte, error) {
	if len(partitions) != len(d.Partitions) {
		return nil, fmt.Errorf("layout: %d paths for %d partitions", len(partitions), len(d.Partitions))
	}
	c := Composite{Version: CompositeVersion, Length: uint64(d.Flat.Size)}
	c.Components = append(c.Components, Component{Path: header})
	for i, p := range d.Partitions {
		c.Components = append(c.Components, Component{Path: partitions[i], Offset: uint64(p.Offset), Writable: p.Writable})
	}
	c.Components = append(c.Components, Component{Path: footer, Offset: uint64(d.Flat.Size - FooterSize)})
	return c.Marshal(), nil
}

// Marshal encodes c as crosvm does: magic, then the CompositeDisk message with fields
// in number order and proto3 defaults (offset 0, READ_ONLY) omitted.
func (c *Composite) Marshal() []byte {
	b := []byte(CompositeMagic)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, c.Version)
	for _, comp := range c.Components {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, comp.Path)
		if comp.Offset != 0 {
			m = protowire.AppendTag(m, 2, protowire.VarintType)
			m = protowire.AppendVarint(m, comp.Offset)
		}
		if comp.Writable {
			m = protowire.AppendTag(m, 3, protowire.VarintType)
			m = protowire.AppendVarint(m, 1) // READ_WRITE
		}
		if comp.FileOffset != 0 {
			m = protowire.AppendTag(m, 4, protowire.VarintType)
			m = protowire.AppendVarint(m, comp.FileOffset)
		}
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, c.Length)
}

// ErrBadComposite reports a descriptor that crosvm would refuse.
var ErrBadComposite = errors.New("bad composite disk descriptor")

// ParseComposite decodes a descriptor and applies crosvm's open-time checks:
// version 1 or 2, at least one component, distinct offsets, length past the last one.
// Unknown fields are skipped, as protobuf readers do.
func ParseComposite(b []byte) (*Composite, error) {
	if !bytes.HasPrefix(b, []byte(CompositeMagic)) {
		return nil, fmt.Errorf("missing magic: %w", ErrBadComposite)
	}
	var c Composite
	err := eachField(b[len(CompositeMagic):], func(num protowire.Number, v uint64, sub []byte) error {
		switch num {
		case 1:
			c.Version = v
		case 2:
			var comp Component
			err := eachField(sub, func(num protowire.Number, v uint64, s []byte) error {
				switch num {
				case 1:
					comp.Path = string(s)
				case 2:
					comp.Offset = v
				case 3:
					comp.Writable = v == 1
				case 4:
					comp.FileOffset = v
				}
				return nil
			})
			if err != nil {
				return err
			}
			c.Components = append(c.Components, comp)
		case 3:
			c.Length = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.Version < 1 || c.Version > 2 {
		return nil, fmt.Errorf("version %d: %w", c.Version, ErrBadComposite)
	}
	if len(c.Components) == 0 {
		return nil, fmt.Errorf("no components: %w", ErrBadComposite)
	}
	seen := make(map[uint64]bool, len(c.Components))
	var last uint64
	for _, comp := range c.Components {
		if seen[comp.Offset] {
			return nil, fmt.Errorf("two disks at offset %d: %w", comp.Offset, ErrBadComposite)
		}
		seen[comp.Offset] = true
		last = max(last, comp.Offset)
	}
	if c.Length <= last {
		return nil, fmt.Errorf("length %d <= last offset %d: %w", c.Length, last, ErrBadComposite)
	}
	return &c, nil
}

// eachField calls fn for every varint and length-delimited field of a message;
// fixed-width fields are skipped. Wire errors become ErrBadComposite.
func eachField(b []byte, fn func(num protowire.Number, v uint64, sub []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("tag: %v: %w", protowire.ParseError(n), ErrBadComposite)
		}
		b = b[n:]
		var v uint64
		var sub []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			sub, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %v: %w", num, protowire.ParseError(n), ErrBadComposite)
		}
		b = b[n:]
		if err := fn(num, v, sub); err != nil {
			return err
		}
	}
	return nil
}
