// Package payload resolves what `vmfs run-app` is given (an APK, its idsig, a config
// path, where APEXes and OS configs live) into disks: it reads the payload config
// from the APK, loads the OS's VM config, finds the APEXes, writes the metadata and
// lays out the payload disk and the OS config's partitioned disks. It is the step
// virtualizationservice's load_app_config does, shared by the vmfs command and its
// benchmark driver. It wires metadata to layout and serves nothing: no FUSE, no VMM.
package payload

import (
	"fmt"
	"path/filepath"

	"github.com/google/uuid"

	"vmfs/internal/inputfile"
	"vmfs/layout"
	"vmfs/metadata"
)

// Inputs name the files a payload is made of and where to look for the rest.
type Inputs struct {
	APK, Idsig, ConfigPath string
	ApexDirs               []string // searched for <name>.apex, in order
	// ApexInfoList is used when the file exists; with RequireApexInfoList (a list
	// named on the command line) it must exist.
	ApexInfoList        string
	RequireApexInfoList bool
	OSDir               string // holds <os.name>.json
	RandomGUIDs         bool   // fresh GUIDs, as Android does; default: derived from the inputs
}

// Payload is everything resolved, ready to mount. Paths are absolute.
type Payload struct {
	APK, Idsig, ConfigPath string
	Config                 *metadata.PayloadConfig
	OSConfigPath           string
	OSConfig               *metadata.VMConfig
	Metadata               *metadata.Metadata
	ApexPaths              []string
	Disk                   *layout.Disk
	OSDisks                map[int]*layout.Disk // the OS config's partitioned disks, by index
}

// Resolve reads and checks the inputs and lays out every disk. It opens nothing for
// long: whoever serves the disks opens and pins the sources.
func Resolve(in Inputs) (*Payload, error) {
	var err error
	p := &Payload{ConfigPath: in.ConfigPath}
	if p.APK, err = filepath.Abs(in.APK); err != nil {
		return nil, err
	}
	if p.Idsig, err = filepath.Abs(in.Idsig); err != nil {
		return nil, err
	}
	// The idsig is parsed (not verified, which reads the whole APK) so that a
	// garbage file is refused up front.
	if _, err := metadata.OpenIdsig(p.Idsig); err != nil {
		return nil, err
	}
	if p.Config, err = metadata.ReadPayloadConfig(p.APK, in.ConfigPath); err != nil {
		return nil, err
	}
	if p.OSConfigPath, err = metadata.OSConfigPath(in.OSDir, p.Config.OS.Name); err != nil {
		return nil, fmt.Errorf("payload config %s in %s: %w", inputfile.Quote(in.ConfigPath), in.APK, err)
	}
	if p.OSConfig, err = metadata.LoadVMConfig(p.OSConfigPath); err != nil {
		return nil, err
	}

	// The resolver passes over a list that does not exist (the default one on a host
	// without /apex), so one that must exist is checked here, APEXes needed or not.
	if in.RequireApexInfoList {
		if _, err := inputfile.Stat(in.ApexInfoList); err != nil {
			return nil, &metadata.InputError{Kind: "apex info list", Err: err}
		}
	}
	resolver := metadata.ApexResolver{InfoList: in.ApexInfoList, Dirs: in.ApexDirs}
	var names []string
	lp := layout.Payload{}
	for _, a := range p.Config.Apexes {
		path, err := resolver.Resolve(a.Name)
		if err != nil {
			return nil, err
		}
		src, err := statSource(path)
		if err != nil {
			return nil, err
		}
		names = append(names, a.Name)
		p.ApexPaths = append(p.ApexPaths, path)
		lp.Apexes = append(lp.Apexes, src)
	}
	p.Metadata = metadata.NewPayloadMetadata(in.ConfigPath, names)
	if lp.Metadata, err = metadata.EncodeMetadata(p.Metadata); err != nil {
		return nil, err
	}
	if lp.APK, err = statSource(p.APK); err != nil {
		return nil, err
	}
	if lp.Idsig, err = statSource(p.Idsig); err != nil {
		return nil, err
	}
	if p.Disk, err = layout.PayloadDisk(lp, guids(in.RandomGUIDs, len(lp.Apexes)+3)); err != nil {
		return nil, fmt.Errorf("payload disk of %s!%s: %w", in.APK, inputfile.Quote(in.ConfigPath), err)
	}

	p.OSDisks = map[int]*layout.Disk{}
	for i, d := range p.OSConfig.Disks {
		if len(d.Partitions) == 0 {
			continue
		}
		var parts []layout.FilePart
		for _, part := range d.Partitions {
			src, err := statSource(part.Path)
			if err != nil {
				return nil, fmt.Errorf("vm config %s: %w", p.OSConfigPath, err)
			}
			parts = append(parts, layout.FilePart{Label: part.Label, Source: src, Writable: part.Writable})
		}
		if p.OSDisks[i], err = layout.FilesDisk(parts, guids(in.RandomGUIDs, len(parts))); err != nil {
			return nil, fmt.Errorf("vm config %s: disk %d: %w", p.OSConfigPath, i, err)
		}
	}
	return p, nil
}

// MetadataBlob is the metadata partition's content before its zero padding.
func (p *Payload) MetadataBlob() []byte { return p.Disk.Partitions[0].Extents[0].Data }

// guids returns layout options with random GUIDs for n partitions when asked for.
func guids(random bool, n int) layout.Options {
	if !random {
		return layout.Options{}
	}
	g := make([]uuid.UUID, n+1)
	for i := range g {
		g[i] = uuid.New()
	}
	return layout.Options{GUIDs: g}
}

func statSource(path string) (layout.Source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return layout.Source{}, err
	}
	st, err := inputfile.Stat(abs)
	if err != nil {
		return layout.Source{}, err
	}
	return layout.Source{Path: abs, Size: st.Size()}, nil
}
