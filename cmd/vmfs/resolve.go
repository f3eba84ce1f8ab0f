package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"vmfs/fusedisk"
	"vmfs/layout"
	"vmfs/metadata"
)

// Defaults as on an Android device.
const (
	defaultOSDir = "/apex/com.android.virt/etc"
)

// inputFlags are the flags every command that resolves a payload takes.
type inputFlags struct {
	apexDirs     []string
	apexInfoList string
	osDir        string
	randomGUIDs  bool
	flags        *pflag.FlagSet
}

func (f *inputFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringArrayVar(&f.apexDirs, "apex-dir", nil, "directory holding <name>.apex files (repeatable)")
	fs.StringVar(&f.apexInfoList, "apex-info-list", metadata.DefaultApexInfoList, "apex-info-list.xml mapping APEX names to files (used when it exists)")
	fs.StringVar(&f.osDir, "os-dir", defaultOSDir, "directory holding <os>.json VM configs")
	fs.BoolVar(&f.randomGUIDs, "random-guids", false, "fresh random disk and partition GUIDs, as Android does (default: derived from the inputs)")
}

// payload is everything resolved from the command line, ready to mount.
type payload struct {
	apk, idsig, configPath string
	config                 *metadata.PayloadConfig
	osConfigPath           string
	osConfig               *metadata.VMConfig
	meta                   *metadata.Metadata
	apexPaths              []string
	disk                   *layout.Disk
	osDisks                map[int]*layout.Disk // the OS config's partitioned disks, by index
}

// resolve reads and checks the inputs and lays out every disk, opening nothing for
// long: the mount opens and pins the sources itself.
func (f *inputFlags) resolve(apk, idsig, configPath string) (*payload, error) {
	var err error
	p := &payload{configPath: configPath}
	if p.apk, err = filepath.Abs(apk); err != nil {
		return nil, err
	}
	if p.idsig, err = filepath.Abs(idsig); err != nil {
		return nil, err
	}
	// The idsig is parsed (not verified, which reads the whole APK) so that a
	// garbage file is refused up front.
	if _, err := metadata.OpenIdsig(p.idsig); err != nil {
		return nil, err
	}
	if p.config, err = metadata.ReadPayloadConfig(p.apk, configPath); err != nil {
		return nil, err
	}
	if p.osConfigPath, err = metadata.OSConfigPath(f.osDir, p.config.OS.Name); err != nil {
		return nil, fmt.Errorf("payload config %s in %s: %w", configPath, apk, err)
	}
	if p.osConfig, err = metadata.LoadVMConfig(p.osConfigPath); err != nil {
		return nil, err
	}

	resolver := metadata.ApexResolver{Dirs: f.apexDirs}
	// The device's list is used where there is one; a list named on the command line must exist.
	if _, err := os.Stat(f.apexInfoList); err == nil || f.flags.Changed("apex-info-list") {
		resolver.InfoList = f.apexInfoList
	}
	var names []string
	lp := layout.Payload{}
	for _, a := range p.config.Apexes {
		path, err := resolver.Resolve(a.Name)
		if err != nil {
			return nil, err
		}
		src, err := statSource(path)
		if err != nil {
			return nil, err
		}
		names = append(names, a.Name)
		p.apexPaths = append(p.apexPaths, path)
		lp.Apexes = append(lp.Apexes, src)
	}
	p.meta = metadata.NewPayloadMetadata(configPath, names)
	if lp.Metadata, err = metadata.EncodeMetadata(p.meta); err != nil {
		return nil, err
	}
	if lp.APK, err = statSource(p.apk); err != nil {
		return nil, err
	}
	if lp.Idsig, err = statSource(p.idsig); err != nil {
		return nil, err
	}
	if p.disk, err = layout.PayloadDisk(lp, f.guids(len(lp.Apexes)+3)); err != nil {
		return nil, fmt.Errorf("payload disk of %s!%s: %w", apk, configPath, err)
	}

	p.osDisks = map[int]*layout.Disk{}
	for i, d := range p.osConfig.Disks {
		if len(d.Partitions) == 0 {
			continue
		}
		var parts []layout.FilePart
		for _, part := range d.Partitions {
			src, err := statSource(part.Path)
			if err != nil {
				return nil, fmt.Errorf("vm config %s: %w", p.osConfigPath, err)
			}
			parts = append(parts, layout.FilePart{Label: part.Label, Source: src, Writable: part.Writable})
		}
		if p.osDisks[i], err = layout.FilesDisk(parts, f.guids(len(parts))); err != nil {
			return nil, fmt.Errorf("vm config %s: disk %d: %w", p.osConfigPath, i, err)
		}
	}
	return p, nil
}

// guids returns layout options with random GUIDs for n partitions when asked for.
func (f *inputFlags) guids(n int) layout.Options {
	if !f.randomGUIDs {
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
	st, err := os.Stat(abs)
	if err != nil {
		return layout.Source{}, err
	}
	if !st.Mode().IsRegular() {
		return layout.Source{}, fmt.Errorf("%s: not a regular file", path)
	}
	return layout.Source{Path: abs, Size: st.Size()}, nil
}

// osDiskDir is where the OS config's i-th disk appears in the mount.
func osDiskDir(i int) string { return fmt.Sprintf("disks/%d", i) }

// fuseDisks lists the disks to serve: the payload at the root, the OS config's
// partitioned disks under disks/<i>.
func (p *payload) fuseDisks() []fusedisk.Disk {
	ds := []fusedisk.Disk{{Disk: p.disk}}
	for i := range p.osConfig.Disks {
		if d := p.osDisks[i]; d != nil {
			ds = append(ds, fusedisk.Disk{Dir: osDiskDir(i), Disk: d})
		}
	}
	return ds
}

// vmConfig is the VM config to launch from a mount at mnt: the OS config with its
// partitioned disks replaced by their composites in the mount and the payload disk
// appended, as virtualizationservice does.
func (p *payload) vmConfig(mnt string) *metadata.VMConfig {
	c := *p.osConfig
	c.Disks = nil
	for i, d := range p.osConfig.Disks {
		if p.osDisks[i] != nil {
			d = metadata.DiskImage{Image: fusedisk.CompositePath(mnt, fusedisk.Disk{Dir: osDiskDir(i)}), Writable: d.Writable}
		}
		c.Disks = append(c.Disks, d)
	}
	c.Disks = append(c.Disks, metadata.DiskImage{Image: fusedisk.CompositePath(mnt, fusedisk.Disk{})})
	return &c
}

// metadataJSON is the metadata partition decoded, for people.
func (p *payload) metadataJSON() ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.meta)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = json.Indent(&out, b, "", "  ")
	return append(out.Bytes(), '\n'), err
}

// indentJSON marshals v for people: indented, '<', '>' and '&' left as they are.
func indentJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}
