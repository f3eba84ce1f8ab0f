package vmfs

import (
	"encoding/json"
	"errors"

	"github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"

	"vmfs/fusedisk"
	"vmfs/internal/jsonfmt"
	"vmfs/layout"
	"vmfs/metadata"
)

// TreeOptions configure NewTree.
type TreeOptions struct {
	Kind string // what serves the tree, for the manifest; "" means "embedded"
	// Owner, when set, alone (and root) may enter the tree, as in a service.
	Owner       *fusedisk.Owner
	Passthrough bool        // see MountOptions
	Logger      *zap.Logger // nil: zap.NewNop()
	// State are the backends of the payload's state files, by path (see Mount).
	State map[string]fusedisk.Writable
}

// Tree is a payload's files, ready to be served at the directory it was made
// for: mounted there (Mount) or grafted into a mount (a service's forest).
type Tree struct {
	Root     fs.InodeEmbedder
	Manifest *Manifest
	VMConfig *metadata.VMConfig // the VM config to launch from the tree
	Sources  *fusedisk.Sources  // the tree's open sources: close them once it is gone
}

// NewTree opens p's sources, from pool (shared with other trees) or, when pool
// is nil, on their own, and builds the tree of its files to be seen at dir. A
// source that cannot be served is an ErrInput error, other failures ErrMount.
func NewTree(p *Payload, dir string, pool *fusedisk.Pool, o TreeOptions) (*Tree, error) {
	if o.Kind == "" {
		o.Kind = "embedded"
	}
	t := &Tree{Manifest: newManifest(p, dir, o.Kind), VMConfig: p.VMConfig(dir)}
	disks := p.Disks()
	for i := range disks {
		disks[i].Writable = o.State
	}
	files, err := documents(p, t.Manifest, t.VMConfig)
	if err != nil {
		return nil, err
	}
	if pool == nil {
		t.Sources, err = fusedisk.OpenFiles(disks, p.opened(), o.Logger)
	} else {
		t.Sources, err = pool.Open(disks, p.opened())
	}
	if err != nil {
		var se *fusedisk.SourceError
		if errors.As(err, &se) {
			return nil, WithKind(ErrInput, err) // a source that cannot be served is a bad input
		}
		return nil, WithKind(ErrMount, err)
	}
	t.Root, err = fusedisk.NewTree(t.Sources, fusedisk.TreeOptions{Disks: disks, Files: files, Dir: dir, Owner: o.Owner, Passthrough: o.Passthrough, Logger: o.Logger})
	if err != nil {
		t.Sources.Close()
		return nil, WithKind(ErrMount, err)
	}
	return t, nil
}

// documents are the files a mount of p serves beside its disks: its manifest m,
// the VM config vm to launch from it, the layout and the metadata.
func documents(p *Payload, m *Manifest, vm *metadata.VMConfig) (map[string][]byte, error) {
	layouts := map[string]layout.Description{}
	for _, d := range p.Disks() {
		name := "payload"
		if d.Dir != "" {
			name = d.Dir + "/disk"
		}
		layouts[name] = d.Disk.Describe()
	}
	files := map[string][]byte{}
	var err error
	for name, v := range map[string]any{ManifestName: m, "vm.json": vm} {
		if files[name], err = jsonfmt.Indent(v); err != nil {
			return nil, err
		}
	}
	if files["layout.json"], err = json.MarshalIndent(layouts, "", "  "); err != nil {
		return nil, err
	}
	files["layout.json"] = append(files["layout.json"], '\n')
	if files["metadata.json"], err = p.MetadataJSON(); err != nil {
		return nil, err
	}
	return files, nil
}
