package layout

import "fmt"

// Partition labels of the payload disk (the seed's, mid-2021).
const (
	MetadataLabel = "metadata"
	APKLabel      = "microdroid-apk"
	IdsigLabel    = "microdroid-apk-idsig"
)

// ApexLabel is the label of the i-th APEX partition.
func ApexLabel(i int) string { return fmt.Sprintf("microdroid-apex-%d", i) }

// Payload is what the payload disk is made of.
type Payload struct {
	Metadata []byte   // the framed metadata blob (u32 BE length + protobuf)
	Apexes   []Source // in config order
	APK      Source
	Idsig    Source
}

// PayloadDisk lays out the payload disk: metadata as GPT entry 1 (apexd finds the
// APEXes by partition number relative to it), APEXes with their size trailer, then
// the APK and the idsig, each padded to 4 KiB. Sources are the APEXes, the APK and
// the idsig, in that order.
func PayloadDisk(p Payload, o Options) (*Disk, error) {
	sources := append(append([]Source{}, p.Apexes...), p.APK, p.Idsig)
	parts := []PartSpec{{Label: MetadataLabel, Content: DataContent(p.Metadata)}}
	for i, a := range p.Apexes {
		c, err := ApexContent(i, a.Size)
		if err != nil {
			return nil, fmt.Errorf("apex %s: %w", a.Path, err)
		}
		parts = append(parts, PartSpec{Label: ApexLabel(i), Content: c})
	}
	for i, f := range []struct {
		label string
		src   Source
	}{{APKLabel, p.APK}, {IdsigLabel, p.Idsig}} {
		if f.src.Size <= 0 {
			return nil, fmt.Errorf("%s: %w", f.src.Path, ErrEmpty)
		}
		parts = append(parts, PartSpec{Label: f.label, Content: FileContent(len(p.Apexes)+i, f.src.Size)})
	}
	return Build(sources, parts, o)
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
