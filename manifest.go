package vmfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"vmfs/fusedisk"
	"vmfs/launcher"
	"vmfs/metadata"
)

// ManifestName is the file every mount serves at its root to say what it is.
const ManifestName = "vmfs.json"

// ManifestSchema is the version of the Manifest layout; a reader refuses others.
const ManifestSchema = 1

// Manifest says what a mount serves and who serves it; it is served as vmfs.json,
// so that a mount is recognized and used from its own contents, not from names.
type Manifest struct {
	Schema   int            `json:"schema"`
	Dir      string         `json:"dir"`       // the mountpoint
	Profile  string         `json:"profile"`   // the Android release whose payload disk this is
	Server   ManifestServer `json:"server"`    // the process that serves the mount
	Inputs   Inputs         `json:"inputs"`    // the files the payload is made of
	VMConfig string         `json:"vm_config"` // the VM config to launch (vm.json)
	Disks    []DiskFiles    `json:"disks"`     // the payload disk first, then the OS config's
}

// ManifestServer is the process that serves a mount.
type ManifestServer struct {
	Pid  int    `json:"pid"`
	Kind string `json:"kind"` // "mount", "run-app", or what an embedder names itself
}

// Inputs are the files a payload is made of, absolute.
type Inputs struct {
	APK        string   `json:"apk"`
	Idsig      string   `json:"idsig"`
	ConfigPath string   `json:"config_path"` // inside the APK
	Apexes     []string `json:"apexes"`
	OSConfig   string   `json:"os_config"`
	// The VM's state files (android13+), absolute; "" when there is none.
	Instance string `json:"instance,omitempty"`
	Storage  string `json:"storage,omitempty"`
}

// DiskFiles are a disk's files in a mount.
type DiskFiles struct {
	Name       string            `json:"name"` // "payload", or "disks/<i>" for the OS config's i-th disk
	Flat       string            `json:"flat"`
	Composite  string            `json:"composite"`
	Header     string            `json:"header"`
	Footer     string            `json:"footer"`
	Partitions map[string]string `json:"partitions"` // label -> file
	// The extent descriptors, where the mount has them: QEMU's VMDK and
	// crosvm's composite over the originals and small synthesized pieces.
	VMDK    string `json:"vmdk,omitempty"`
	Extents string `json:"extents,omitempty"`
	// Writable: some partitions are writable, and so is the flat image there.
	Writable bool `json:"writable,omitempty"`
}

// newManifest describes p served at dir by this process as kind.
func newManifest(p *Payload, disks []fusedisk.Disk, dir, kind string) *Manifest {
	m := &Manifest{
		Schema:   ManifestSchema,
		Dir:      dir,
		Profile:  p.Profile.String(),
		Server:   ManifestServer{Pid: os.Getpid(), Kind: kind},
		Inputs:   Inputs{APK: p.APK, Idsig: p.Idsig, ConfigPath: p.ConfigPath, Apexes: p.ApexPaths(), OSConfig: p.OSConfigPath},
		VMConfig: filepath.Join(dir, "vm.json"),
	}
	for _, s := range p.State {
		if s.Label == metadata.InstanceLabel {
			m.Inputs.Instance = s.Name
		} else {
			m.Inputs.Storage = s.Name
		}
	}
	for _, d := range disks {
		name := d.Dir
		if name == "" {
			name = "payload"
		}
		ps := d.Paths(dir)
		df := DiskFiles{Name: name, Flat: ps.Flat, Composite: ps.Composite, Header: ps.Header, Footer: ps.Footer, Partitions: ps.Partitions, Writable: d.Disk.Writable()}
		if d.Extents != nil {
			df.VMDK, df.Extents = ps.VMDK, ps.Extents
		}
		m.Disks = append(m.Disks, df)
	}
	return m
}

// ReadManifest reads the manifest of the mount at dir.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestName), err)
	}
	if m.Schema != ManifestSchema {
		return nil, fmt.Errorf("%s: schema %d, this vmfs reads %d", filepath.Join(dir, ManifestName), m.Schema, ManifestSchema)
	}
	return &m, nil
}

// Payload returns the files of the payload disk.
func (m *Manifest) Payload() DiskFiles {
	for _, d := range m.Disks {
		if d.Name == "payload" {
			return d
		}
	}
	return DiskFiles{}
}

// FlatImages maps each disk's composite to its flat image, for a VMM that cannot
// read composites (launcher.Options.FlatImages).
func (m *Manifest) FlatImages() map[string]string {
	out := map[string]string{}
	for _, d := range m.Disks {
		out[d.Composite] = d.Flat
	}
	return out
}

// ExtentImages maps each disk's composite to its extent descriptors, where the
// mount has them (launcher.Options.Extents).
func (m *Manifest) ExtentImages() map[string]launcher.ExtentImages {
	out := map[string]launcher.ExtentImages{}
	for _, d := range m.Disks {
		if d.VMDK != "" && d.Extents != "" {
			out[d.Composite] = launcher.ExtentImages{VMDK: d.VMDK, Composite: d.Extents}
		}
	}
	return out
}

// WritableImages are the composites whose flat images have writable
// partitions (launcher.Options.WritableImages).
func (m *Manifest) WritableImages() map[string]bool {
	out := map[string]bool{}
	for _, d := range m.Disks {
		if d.Writable {
			out[d.Composite] = true
		}
	}
	return out
}
