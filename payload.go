package vmfs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	"vmfs/fusedisk"
	"vmfs/internal/inputfile"
	"vmfs/layout"
	"vmfs/metadata"
)

// DefaultOSDir holds the OS configs (<os>.json) on an Android device.
const DefaultOSDir = "/apex/com.android.virt/etc"

// Spec names the files a payload is made of and where to look for the rest.
type Spec struct {
	APK, Idsig, ConfigPath string
	ApexDirs               []string // searched for <name>.apex, in order
	// ApexInfoList maps APEX names to files. "" means metadata.DefaultApexInfoList
	// when it exists; a list named here must exist.
	ApexInfoList string
	OSDir        string // holds <os.name>.json; "" means DefaultOSDir
	RandomGUIDs  bool   // fresh GUIDs, as Android does; default: derived from the inputs
	Files        *Files // the APK and idsig already open: read these, never open APK and Idsig
}

// Payload is a Spec resolved: every input read and checked, every disk laid out,
// ready to mount. Paths are absolute.
type Payload struct {
	APK, Idsig, ConfigPath string
	Config                 *metadata.PayloadConfig
	OSConfigPath           string
	OSConfig               *metadata.VMConfig
	Metadata               *metadata.Metadata
	ApexPaths              []string
	Disk                   *layout.Disk
	OSDisks                map[int]*layout.Disk // the OS config's partitioned disks, by index
	files                  *Files               // Spec.Files
}

// Resolve reads and checks the inputs and lays out every disk, as
// virtualizationservice's load_app_config does. It keeps nothing open: whoever
// serves the disks opens and pins the sources. Its errors are of kind ErrInput;
// when ctx is done first (an input on a stuck filesystem), ctx's cause.
func Resolve(ctx context.Context, spec Spec) (*Payload, error) {
	var p *Payload
	err := interruptible(ctx, func() (err error) { p, err = resolve(spec); return withKind(ErrInput, err) })
	return p, err
}

func resolve(spec Spec) (*Payload, error) {
	var err error
	p := &Payload{ConfigPath: spec.ConfigPath, files: spec.Files}
	if p.APK, err = filepath.Abs(spec.APK); err != nil {
		return nil, err
	}
	if p.Idsig, err = filepath.Abs(spec.Idsig); err != nil {
		return nil, err
	}
	apk, idsig := spec.inputs(p.APK, p.Idsig)
	if err := parseIdsig(idsig); err != nil {
		return nil, err
	}
	if p.Config, err = readPayloadConfig(apk, spec.ConfigPath); err != nil {
		return nil, err
	}
	osDir := spec.OSDir
	if osDir == "" {
		osDir = DefaultOSDir
	}
	if p.OSConfigPath, err = metadata.OSConfigPath(osDir, p.Config.OS.Name); err != nil {
		return nil, fmt.Errorf("payload config %s in %s: %w", inputfile.Quote(spec.ConfigPath), spec.APK, err)
	}
	if p.OSConfig, err = metadata.LoadVMConfig(p.OSConfigPath); err != nil {
		return nil, err
	}
	if err := p.layOutPayload(spec, apk, idsig); err != nil {
		return nil, err
	}
	return p, p.layOutOSDisks(spec.RandomGUIDs)
}

// layOutPayload finds the APEXes, writes the metadata and lays out the payload disk.
func (p *Payload) layOutPayload(spec Spec, apk, idsig input) error {
	list := spec.ApexInfoList
	if list == "" {
		list = metadata.DefaultApexInfoList
	} else if _, err := inputfile.Stat(list); err != nil {
		// The resolver passes over a list that does not exist (the default one on a
		// host without /apex), so one that must exist is checked here.
		return &metadata.InputError{Kind: "apex info list", Err: err}
	}
	resolver := metadata.ApexResolver{InfoList: list, Dirs: spec.ApexDirs}
	var names []string
	lp := layout.Payload{}
	for _, a := range p.Config.Apexes {
		path, err := resolver.Resolve(a.Name)
		if err != nil {
			return err
		}
		src, err := statSource(path)
		if err != nil {
			return err
		}
		names = append(names, a.Name)
		p.ApexPaths = append(p.ApexPaths, path)
		lp.Apexes = append(lp.Apexes, src)
	}
	p.Metadata = metadata.NewPayloadMetadata(spec.ConfigPath, names)
	var err error
	if lp.Metadata, err = metadata.EncodeMetadata(p.Metadata); err != nil {
		return err
	}
	if lp.APK, err = apk.source(); err != nil {
		return err
	}
	if lp.Idsig, err = idsig.source(); err != nil {
		return err
	}
	if p.Disk, err = layout.PayloadDisk(lp, guids(spec.RandomGUIDs, len(lp.Apexes)+3)); err != nil {
		return fmt.Errorf("payload disk of %s!%s: %w", spec.APK, inputfile.Quote(spec.ConfigPath), err)
	}
	return nil
}

// layOutOSDisks lays out the OS config's partitioned disks.
func (p *Payload) layOutOSDisks(randomGUIDs bool) error {
	p.OSDisks = map[int]*layout.Disk{}
	for i, d := range p.OSConfig.Disks {
		if len(d.Partitions) == 0 {
			continue
		}
		var parts []layout.FilePart
		for _, part := range d.Partitions {
			src, err := statSource(part.Path)
			if err != nil {
				return fmt.Errorf("vm config %s: %w", p.OSConfigPath, err)
			}
			parts = append(parts, layout.FilePart{Label: part.Label, Source: src, Writable: part.Writable})
		}
		var err error
		if p.OSDisks[i], err = layout.FilesDisk(parts, guids(randomGUIDs, len(parts))); err != nil {
			return fmt.Errorf("vm config %s: disk %d: %w", p.OSConfigPath, i, err)
		}
	}
	return nil
}

// MetadataBlob is the metadata partition's content before its zero padding.
func (p *Payload) MetadataBlob() []byte { return p.Disk.Partitions[0].Extents[0].Data }

// osDiskDir is where the OS config's i-th disk appears in a mount.
func osDiskDir(i int) string { return fmt.Sprintf("disks/%d", i) }

// Disks lists the disks to serve: the payload at the root, the OS config's
// partitioned disks under disks/<i>, in that order.
func (p *Payload) Disks() []fusedisk.Disk {
	ds := []fusedisk.Disk{{Disk: p.Disk}}
	for i := range p.OSConfig.Disks {
		if d := p.OSDisks[i]; d != nil {
			ds = append(ds, fusedisk.Disk{Dir: osDiskDir(i), Disk: d})
		}
	}
	return ds
}

// VMConfig is the VM config to launch from a mount at dir: the OS config with its
// partitioned disks replaced by their composites in the mount and the payload disk
// appended, as virtualizationservice does.
func (p *Payload) VMConfig(dir string) *metadata.VMConfig {
	c := *p.OSConfig
	c.Disks = nil
	for i, d := range p.OSConfig.Disks {
		if p.OSDisks[i] != nil {
			d = metadata.DiskImage{Image: fusedisk.Disk{Dir: osDiskDir(i)}.Paths(dir).Composite, Writable: d.Writable}
		}
		c.Disks = append(c.Disks, d)
	}
	c.Disks = append(c.Disks, metadata.DiskImage{Image: fusedisk.Disk{}.Paths(dir).Composite})
	return &c
}

// MetadataJSON is the metadata partition decoded, for people.
func (p *Payload) MetadataJSON() ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.Metadata)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = json.Indent(&out, b, "", "  ")
	return append(out.Bytes(), '\n'), err
}

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
