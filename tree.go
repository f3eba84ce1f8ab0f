package vmfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"

	"vmfs/fusedisk"
	"vmfs/internal/inputfile"
	"vmfs/internal/jsonfmt"
	"vmfs/layout"
	"vmfs/metadata"
)

// TreeOptions configure NewTree.
type TreeOptions struct {
	Kind string // what serves the tree, for the manifest; "" means "embedded"
	// Owner, when set, alone (and root) may enter the tree, as in a service.
	Owner         *fusedisk.Owner
	NoPassthrough bool // see MountOptions; a tree grafted into a mount of others is never passed through
	// Extents serves each disk's extent descriptors where they are exact (see
	// fusedisk's "Extents"): a VMM then opens the originals by their paths,
	// which a service's confined VMMs cannot, so it leaves this off.
	Extents bool
	Logger  *zap.Logger // nil: zap.NewNop()
	// Credential runs the engines of the tree's QCOW2 state files as that user
	// (nil: as this process), as a service runs them as the client they serve.
	Credential *syscall.Credential
}

// Tree is a payload's files, ready to be served at the directory it was made
// for: mounted there (Mount) or grafted into a mount (a service's forest).
type Tree struct {
	Root     fs.InodeEmbedder
	Manifest *Manifest
	VMConfig *metadata.VMConfig // the VM config to launch from the tree
	Sources  *fusedisk.Sources  // the tree's open sources: close them once it is gone
	// states are the writable partitions' state files, read and written through
	// the tree: Close closes them after the sources.
	states []*heldState
}

// Writable reports whether the tree has writable partitions: its mount must be
// read-write (fusedisk.MountOptions.Writable).
func (t *Tree) Writable() bool { return len(t.states) > 0 }

// Close closes the tree's sources and then its state files' engines, syncing
// them; nothing may read the tree any more.
func (t *Tree) Close() error {
	return errors.Join(t.Sources.Close(), t.closeStates())
}

// Retire is Close for a tree taken out of a live mount (Forest.Remove): its
// sources close once no file of it is open (Sources.CloseWhenIdle), its state
// files now, synced and unlocked, so that nothing writes them once the tree is
// gone (a write through a file still open fails).
func (t *Tree) Retire() error {
	t.Sources.CloseWhenIdle()
	return t.closeStates()
}

func (t *Tree) closeStates() error {
	var errs []error
	for _, s := range t.states {
		errs = append(errs, s.Close())
	}
	t.states = nil
	return errors.Join(errs...)
}

// NewTree opens p's sources, from pool (shared with other trees) or, when pool
// is nil, on their own, and builds the tree of its files to be seen at dir. A
// source that cannot be served is an ErrInput error, other failures ErrMount.
func NewTree(p *Payload, dir string, pool *fusedisk.Pool, o TreeOptions) (*Tree, error) {
	if o.Kind == "" {
		o.Kind = "embedded"
	}
	disks := p.Disks()
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	t := &Tree{}
	var err error
	if t.states, err = openWritable(p, disks, o.Credential, o.Logger); err != nil {
		return nil, err
	}
	if pool == nil {
		t.Sources, err = fusedisk.OpenFiles(disks, p.opened(), o.Logger)
	} else {
		t.Sources, err = pool.Open(disks, p.opened())
	}
	if err != nil {
		for _, s := range t.states {
			s.Close()
		}
		var se *fusedisk.SourceError
		if errors.As(err, &se) {
			return nil, WithKind(ErrInput, err) // a source that cannot be served is a bad input
		}
		return nil, WithKind(ErrMount, err)
	}
	if o.Extents {
		addExtents(t.Sources, disks, dir, o.Logger)
	}
	t.Manifest, t.VMConfig = newManifest(p, disks, dir, o.Kind), p.VMConfig(dir)
	files, err := documents(p, t.Manifest, t.VMConfig)
	if err == nil {
		t.Root, err = fusedisk.NewTree(t.Sources, fusedisk.TreeOptions{Disks: disks, Files: files, Dir: dir, Owner: o.Owner, NoPassthrough: o.NoPassthrough, Logger: o.Logger})
	}
	if err != nil {
		t.Close()
		return nil, WithKind(ErrMount, err)
	}
	return t, nil
}

// addExtents gives each disk its extent descriptors where they are exact; the
// VMM reads any other through its flat image, as the log says of a read-only
// one (a disk with writable partitions never has them).
func addExtents(srcs *fusedisk.Sources, disks []fusedisk.Disk, dir string, log *zap.Logger) {
	for i := range disks {
		if disks[i].Disk.Writable() {
			continue
		}
		var err error
		if disks[i].Extents, err = srcs.Extents(disks[i], dir); err != nil {
			log.Warn("no extent descriptors; a VMM reads the disk through its flat image", zap.String("disk", disks[i].Paths(dir).Flat), zap.Error(err))
		}
	}
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

// openWritable opens the state file of each writable partition of disks
// read-write (one the caller opened is used through its descriptor, never
// reopened), locks it for this tree alone (lockState) and gives it to its disk
// as a writable source, served while a view of it is open (heldState, the
// engine running as cred). A state file another tree holds, or whose size as
// the VM sees it is not the one laid out, is an ErrInput error naming it as p
// does (an instance image, ...).
func openWritable(p *Payload, disks []fusedisk.Disk, cred *syscall.Credential, log *zap.Logger) (states []*heldState, err error) {
	defer func() {
		if err != nil {
			for _, s := range states {
				s.Close()
			}
			states = nil
		}
	}()
	kinds, names, opened := map[string]string{}, map[string]string{}, p.opened()
	for _, s := range p.State {
		kinds[s.Path], names[s.Path] = s.kind(), s.Name
	}
	for i := range disks {
		d := disks[i].Disk
		for _, part := range d.Partitions {
			if !part.Writable || len(part.Extents) == 0 || part.Extents[0].Kind != layout.File {
				continue
			}
			src := d.Sources[part.Extents[0].Source]
			kind := kinds[src.Path]
			if kind == "" {
				kind = "writable partition " + part.Label
			}
			name := names[src.Path]
			if name == "" {
				name = src.Path
			}
			f, err := openStateFile(src.Path, name, opened[src.Path])
			if err != nil {
				return states, &metadata.InputError{Kind: kind, Err: err}
			}
			unlock, err := lockState(f)
			if err != nil {
				f.Close()
				return states, WithKind(ErrInput, fmt.Errorf("%s %s: %w", kind, inputfile.Quote(name), err))
			}
			s := &heldState{f: f, unlock: unlock, cred: cred, log: log}
			states = append(states, s)
			size, _, err := virtualSize(f)
			switch {
			case err != nil:
				return states, WithKind(ErrInput, fmt.Errorf("%s %s: %w", kind, inputfile.Quote(name), err))
			case size != src.Size:
				return states, WithKind(ErrInput, fmt.Errorf("%s %s shows %d bytes, laid out for %d", kind, inputfile.Quote(name), size, src.Size))
			}
			if disks[i].Writable == nil {
				disks[i].Writable = map[string]fusedisk.Writable{}
			}
			disks[i].Writable[src.Path] = s
		}
	}
	return states, nil
}

// openStateFile opens the state file at path read-write, or duplicates opened,
// the file the caller opened (name names it for people), which is never
// reopened by a name: the tree's copy closes with it.
func openStateFile(path, name string, opened *os.File) (*os.File, error) {
	if opened == nil {
		return inputfile.OpenFile(path, os.O_RDWR)
	}
	fd, err := unix.FcntlInt(opened.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("dup", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
