package fusedisk

import "vmfs/layout"

// layout.json: where every byte of every disk comes from, for people.
type diskDoc struct {
	Disk       string    `json:"disk"`
	Size       int64     `json:"size"`
	GUID       string    `json:"guid"`
	Partitions []partDoc `json:"partitions"`
}

type partDoc struct {
	Label   string      `json:"label"`
	Offset  int64       `json:"offset"`
	Size    int64       `json:"size"`
	GUID    string      `json:"guid"`
	Extents []extentDoc `json:"extents"`
}

type extentDoc struct {
	Offset     int64  `json:"offset"`
	Size       int64  `json:"size"`
	Source     string `json:"source"` // "zeros", "synthesized" or a file path
	FileOffset *int64 `json:"file_offset,omitempty"`
}

func describe(d Disk) diskDoc {
	dd := diskDoc{Disk: d.base(), Size: d.Disk.Flat.Size, GUID: d.Disk.GUID.String()}
	if d.Dir != "" {
		dd.Disk = d.Dir
	}
	for _, p := range d.Disk.Partitions {
		pd := partDoc{Label: p.Label, Offset: p.Offset, Size: p.Size, GUID: p.GUID.String()}
		for _, e := range p.Extents {
			ed := extentDoc{Offset: e.Off, Size: e.Len, Source: e.Kind.String()}
			if e.Kind == layout.File {
				ed.Source = d.Disk.Sources[e.Source].Path
				ed.FileOffset = &e.SourceOff
			}
			pd.Extents = append(pd.Extents, ed)
		}
		dd.Partitions = append(dd.Partitions, pd)
	}
	return dd
}
