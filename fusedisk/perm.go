package fusedisk

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// reach says who may read a file, in the order the kernel tries the classes of its
// mode: the owner, then its group, then everyone else. A class counts only when the
// classes before it may read too, so that a reach holds for every class it names.
type reach uint8

const (
	rootOnly   reach = iota // no class: only root (CAP_DAC_OVERRIDE) reads
	ownerOnly               // the owner
	ownerGroup              // the owner and the group
	everyone
)

// reachOf is how far bit (4 read, 2 write, 1 execute) goes down the classes of mode.
func reachOf(mode uint32, bit uint32) reach {
	r := rootOnly
	for _, shift := range []uint32{6, 3, 0} {
		if mode>>shift&bit == 0 {
			break
		}
		r++
	}
	return r
}

// access is who may read a source: its owner, its group and how far read goes;
// and how far write goes, for a writable source.
type access struct {
	uid, gid uint32
	reach    reach
	write    reach
}

// accessOf is who may read the open file fd, whose fstat is st: its mode, cut by
// the directories on its path, which must be searchable to reach it. The path is
// the file's own (/proc/self/fd), not the symlinks it was opened through: whoever
// may take that path may read the bytes. A directory cuts in terms of the file's
// classes only where it has the file's owner and group; else it leaves root only.
func accessOf(fd int, st *unix.Stat_t) access {
	a := access{uid: st.Uid, gid: st.Gid, reach: reachOf(st.Mode, 4), write: reachOf(st.Mode, 2)}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || !filepath.IsAbs(path) {
		// the path is unknown: only the owner for sure
		a.reach, a.write = min(a.reach, ownerOnly), min(a.write, ownerOnly)
		return a
	}
	for dir := filepath.Dir(path); max(a.reach, a.write) > rootOnly; dir = filepath.Dir(dir) {
		var d unix.Stat_t
		cut := rootOnly
		if unix.Stat(dir, &d) == nil {
			switch x := reachOf(d.Mode, 1); {
			case x == everyone:
				cut = everyone
			case x == ownerGroup && d.Uid == a.uid && d.Gid == a.gid:
				cut = ownerGroup
			case x >= ownerOnly && d.Uid == a.uid:
				cut = ownerOnly
			}
		}
		a.reach, a.write = min(a.reach, cut), min(a.write, cut)
		if dir == "/" {
			break
		}
	}
	return a
}

// perm is a node's owner, group and permission bits.
type perm struct{ uid, gid, mode uint32 }

// permOf is the perm of a node that reveals what srcs hold: read for a class only
// where every source lets that class's people read it, write (see writeBits) and execute never. A
// source everyone may read restricts nothing. The owner and group are those of
// the other sources when they share them; where they differ, the owner is the
// server's own user, who opened them all, and the group no one's in particular.
func permOf(srcs []*source) perm {
	p := perm{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	least := everyone
	sameUID, sameGID := true, true
	for _, s := range srcs {
		a := s.access
		if a.reach == everyone {
			continue
		}
		if least == everyone {
			p.uid, p.gid = a.uid, a.gid
		}
		sameUID = sameUID && a.uid == p.uid
		sameGID = sameGID && a.gid == p.gid
		least = min(least, a.reach)
	}
	if !sameUID {
		p.uid = uint32(os.Geteuid())
	}
	if !sameGID {
		p.gid = uint32(os.Getegid())
	}
	switch {
	case least == everyone:
		p.mode = 0o444
	case least == ownerGroup && sameGID:
		p.mode = 0o440
	case least >= ownerOnly && sameUID:
		p.mode = 0o400
	}
	if !sameUID {
		p.mode |= 0o400
	}
	return p
}

// writeBits are the write bits of a node with perm p that reads srcs: write for
// a class only where the node lets it read and every writable source among srcs
// lets its people write, as that source's owner and group are the node's.
func writeBits(p perm, srcs []*source) uint32 {
	bits := (p.mode & 0o444) >> 1
	for _, s := range srcs {
		if s.w == nil {
			continue
		}
		a := s.access
		switch {
		case a.write == everyone:
		case a.write >= ownerGroup && a.uid == p.uid && a.gid == p.gid:
			bits &= 0o220
		case a.write >= ownerOnly && a.uid == p.uid:
			bits &= 0o200
		default:
			bits = 0
		}
	}
	return bits
}
