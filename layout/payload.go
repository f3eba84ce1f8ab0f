package layout

import (
	"fmt"

	"vmfs/metadata"
)

// PayloadParts are what a payload disk is made of.
type PayloadParts struct {
	Metadata []byte   // the framed metadata blob (u32 BE length + protobuf)
	Apexes   []Source // in partition order
	APK      Source
	Idsig    Source
	Extra    []ExtraAPK // Android 13+, in order
	Format   Format
}

// ExtraAPK is one extra APK with its idsig.
type ExtraAPK struct {
	APK, Idsig Source
}

// Format is what differs between the payload disks of Android releases (the metadata
// package's Profile says which). The zero value is the mid-2021 disk.
type Format struct {
	// MetadataLabel labels partition 1; empty means the mid-2021 "metadata". Android
	// renamed it "payload-metadata" in July 2021.
	MetadataLabel string
	// ZeroPadApexes drops the mid-2021 size trailer: each APEX is zero-padded to 4 KiB
	// like every other partition, and the guest's apexd opens the partition itself as
	// the zip. Since a zip reader that finds bytes after the end of the zip refuses it
	// (libziparchive), an APEX must then be a 4096 multiple, as apexer makes them.
	ZeroPadApexes bool
}

// PayloadDisk lays out the payload disk: metadata as GPT entry 1 (apexd finds the
// APEXes by partition number relative to it), the APEXes (with their size trailer
// unless p.Format says otherwise), the APK and the idsig, then each extra APK followed
// by its idsig; every partition is padded with zeros to 4 KiB. Sources are the APEXes,
// the APK, the idsig and the extra APKs and idsigs, in that order.
func PayloadDisk(p PayloadParts, o Options) (*Disk, error) {
	label := p.Format.MetadataLabel
	if label == "" {
		label = metadata.Android12.MetadataLabel()
	}
	parts := []PartSpec{{Label: label, Content: DataContent(p.Metadata)}}
	var sources []Source
	for i, a := range p.Apexes {
		c, err := apexContent(len(sources), a.Size, p.Format.ZeroPadApexes)
		if err != nil {
			return nil, fmt.Errorf("apex %s: %w", a.Path, err)
		}
		parts = append(parts, PartSpec{Label: metadata.ApexLabel(i), Content: c})
		sources = append(sources, a)
	}
	type file struct {
		label string
		src   Source
	}
	files := []file{{metadata.APKLabel, p.APK}, {metadata.IdsigLabel, p.Idsig}}
	for i, e := range p.Extra {
		files = append(files, file{metadata.ExtraAPKLabel(i), e.APK}, file{metadata.ExtraIdsigLabel(i), e.Idsig})
	}
	for _, f := range files {
		if f.src.Size <= 0 {
			return nil, fmt.Errorf("%s: %w", f.src.Path, ErrEmpty)
		}
		parts = append(parts, PartSpec{Label: f.label, Content: FileContent(len(sources), f.src.Size)})
		sources = append(sources, f.src)
	}
	return Build(sources, parts, o)
}

// apexContent is the APEX partition of a source of the given size: with the size
// trailer, or zero-padded, for which the APEX must be 4 KiB aligned (see Format).
func apexContent(src int, size int64, zeroPad bool) (Image, error) {
	if !zeroPad {
		return ApexContent(src, size)
	}
	if size <= 0 {
		return Image{}, ErrEmpty
	}
	if size%PartitionAlign != 0 {
		return Image{}, fmt.Errorf("%d bytes, so its partition would hold %d zero bytes after the zip, which apexd refuses without the size trailer (align APEXes with apksigner --align-file-size): %w",
			size, align4K(size)-size, ErrUnaligned)
	}
	return FileContent(src, size), nil
}

// FilePart is a partition that is one whole file, as an OS VM config lists them.
type FilePart struct {
	Label    string
	Source   Source
	Writable bool
}

// FilesDisk assembles a disk from whole files, as crosvm assembles a VM config's
// partitioned disks. A read-only file is zero-padded to 4 KiB; a writable one must
// already be aligned, since padding could not be written through.
func FilesDisk(parts []FilePart, o Options) (*Disk, error) {
	sources := make([]Source, len(parts))
	specs := make([]PartSpec, len(parts))
	for i, p := range parts {
		if p.Source.Size <= 0 {
			return nil, fmt.Errorf("partition %q: %s: %w", p.Label, p.Source.Path, ErrEmpty)
		}
		if p.Writable && p.Source.Size%PartitionAlign != 0 {
			return nil, fmt.Errorf("writable partition %q: %s is %d bytes: %w", p.Label, p.Source.Path, p.Source.Size, ErrUnaligned)
		}
		sources[i] = p.Source
		specs[i] = PartSpec{Label: p.Label, Writable: p.Writable, Content: FileContent(i, p.Source.Size)}
	}
	return Build(sources, specs, o)
}
