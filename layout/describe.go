package layout

// Description says where every byte of a disk comes from, for people and tools:
// it is layout.json in a mount and the output of `vmfs inspect --json`.
type Description struct {
	Size       int64                  `json:"size"`
	GUID       string                 `json:"guid"`
	Partitions []PartitionDescription `json:"partitions"`
}

// PartitionDescription is one partition of a Description.
type PartitionDescription struct {
	Label    string              `json:"label"`
	Offset   int64               `json:"offset"`
	Size     int64               `json:"size"`
	GUID     string              `json:"guid"`
	Writable bool                `json:"writable,omitempty"`
	Extents  []ExtentDescription `json:"extents"`
}

// ExtentDescription is one extent, its offset relative to the partition.
type ExtentDescription struct {
	Offset     int64  `json:"offset"`
	Size       int64  `json:"size"`
	Source     string `json:"source"` // "zeros", "synthesized" or a file path
	FileOffset *int64 `json:"file_offset,omitempty"`
}

// Describe returns d's partitions and the source of each extent.
func (d *Disk) Describe() Description {
	dd := Description{Size: d.Flat.Size, GUID: d.GUID.String()}
	for _, p := range d.Partitions {
		pd := PartitionDescription{Label: p.Label, Offset: p.Offset, Size: p.Size, GUID: p.GUID.String(), Writable: p.Writable}
		for _, e := range p.Extents {
			ed := ExtentDescription{Offset: e.Off, Size: e.Len, Source: e.Kind.String()}
			if e.Kind == File {
				ed.Source = d.Sources[e.Source].Path
				ed.FileOffset = &e.SourceOff
			}
			pd.Extents = append(pd.Extents, ed)
		}
		dd.Partitions = append(dd.Partitions, pd)
	}
	return dd
}
