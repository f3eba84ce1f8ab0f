package fusedisk

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"vmfs/layout"
)

// Extents are a disk's extent descriptors, as a tree seen at some directory
// serves them (Disk.Extents): each synthesized piece's file, and the
// descriptors naming those and the originals.
type Extents struct {
	synth map[string]*layout.Image // by path in the tree
	vmdk  []byte
	cdisk []byte
}

// remoteFS names the filesystem of fd when it is one whose files a VMM's own
// open may not read as vmfs's did: a FUSE server answers each reader as it
// likes, a network filesystem caches per client. "" for a local one.
func remoteFS(fd int) string {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return "an unknown filesystem"
	}
	switch uint32(st.Type) {
	case unix.FUSE_SUPER_MAGIC:
		return "FUSE"
	case unix.NFS_SUPER_MAGIC:
		return "NFS"
	case unix.SMB_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC:
		return "SMB"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.CEPH_SUPER_MAGIC:
		return "Ceph"
	case unix.AFS_SUPER_MAGIC:
		return "AFS"
	}
	return ""
}

// Extents builds d's extent descriptors for a tree seen at dir, or says why
// they would not give a VMM the disk's bytes (an error wrapping
// layout.ErrNotExact). A VMM opens the originals by their paths: each must
// still lead to the file the sources hold, on a local filesystem, and crosvm
// must read each piece raw.
func (s *Sources) Extents(d Disk, dir string) (*Extents, error) {
	srcs, err := s.forDisk(d.Disk)
	if err != nil {
		return nil, err
	}
	pieces, err := d.Disk.Pieces()
	if err != nil {
		return nil, err
	}
	readers := make([]io.ReaderAt, len(srcs))
	for i, src := range srcs {
		readers[i] = src.reader()
	}
	in, at := d.Paths(""), d.Paths(dir)
	x := &Extents{synth: map[string]*layout.Image{}}
	paths := make([]string, len(pieces))
	head := make([]byte, 4096)
	for i := range pieces {
		p := &pieces[i]
		var r io.ReaderAt
		if p.Synthesized() {
			name := strconv.Itoa(i)
			x.synth[filepath.Join(in.Pieces, name)] = &p.Synth
			paths[i] = filepath.Join(at.Pieces, name)
			r = layout.NewReader(&p.Synth, readers)
		} else {
			src := srcs[p.Source]
			if !src.leadsTo(src.path) {
				return nil, fmt.Errorf("%s no longer leads to the file vmfs opened: %w", src.path, layout.ErrNotExact)
			}
			if fs := remoteFS(src.fd); fs != "" {
				return nil, fmt.Errorf("%s is on %s, which may show another opener other bytes: %w", src.path, fs, layout.ErrNotExact)
			}
			paths[i] = src.path
			r = io.NewSectionReader(src.reader(), p.SourceOff, p.Len)
		}
		n, err := r.ReadAt(head[:min(p.Len, int64(len(head)))], 0)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if t := layout.CrosvmImageType(head[:n]); t != "" {
			return nil, fmt.Errorf("%s at byte %d of the disk starts like a %s image, which crosvm would not read raw: %w", paths[i], p.Off, t, layout.ErrNotExact)
		}
	}
	if x.vmdk, err = d.Disk.VMDK(pieces, paths); err != nil {
		return nil, err
	}
	if x.cdisk, err = d.Disk.PiecesComposite(pieces, paths); err != nil {
		return nil, err
	}
	return x, nil
}
