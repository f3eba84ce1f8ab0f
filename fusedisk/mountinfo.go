package fusedisk

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FSType is how a vmfs mount appears in /proc/self/mountinfo: the kernel's "fuse."
// and the subtype vmfs gives its mounts.
const (
	subtype = "vmfs"
	FSType  = "fuse." + subtype
)

// MountInfo is one mount of /proc/self/mountinfo.
type MountInfo struct {
	ID     int    // unique among the mounts that exist; reused once a mount is freed
	Parent int    // the ID of the mount this one sits on
	Root   string // the directory of the filesystem mounted here ("/" for its root), unescaped
	Point  string // mountpoint, unescaped
	Dev    string // major:minor of the filesystem (a FUSE mount's minor names its fusectl connection)
	FSType string
	Source string // what the filesystem calls its source (Options.FsName for vmfs)
}

// Mounts lists the mounts this process sees, in the order they were made (a later
// mount on the same point hides an earlier one).
func Mounts() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fld := range fields {
			if fld == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+2 >= len(fields) {
			continue
		}
		id, _ := strconv.Atoi(fields[0])
		parent, _ := strconv.Atoi(fields[1])
		out = append(out, MountInfo{ID: id, Parent: parent, Root: unescapeMountinfo(fields[3]), Point: unescapeMountinfo(fields[4]),
			Dev: fields[2], FSType: fields[sep+1], Source: fields[sep+2]})
	}
	return out, sc.Err()
}

// MountAt returns the top mount at point, or nil when nothing is mounted there.
func MountAt(point string) (*MountInfo, error) {
	ms, err := Mounts()
	if err != nil {
		return nil, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == point {
			return &ms[i], nil
		}
	}
	return nil, nil
}

// byID returns the mount of ms with ID id, or nil.
func byID(ms []MountInfo, id int) *MountInfo {
	for i := range ms {
		if ms[i].ID == id {
			return &ms[i]
		}
	}
	return nil
}

// covered reports the mount of ms that sits on top of m, at its very
// mountpoint, or nil.
func covered(ms []MountInfo, m *MountInfo) *MountInfo {
	for i := range ms {
		if ms[i].Parent == m.ID && ms[i].Point == m.Point {
			return &ms[i]
		}
	}
	return nil
}

// statMount is statx of path, relative to dir ("" for dir itself), with the
// ID of the mount it is in.
func statMount(dir int, path string) (*unix.Statx_t, error) {
	var stx unix.Statx_t
	flags := 0
	if path == "" {
		flags = unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dir, path, flags, unix.STATX_MNT_ID, &stx); err != nil {
		return nil, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return nil, errors.New("statx gives no mount ID (kernel < 5.8)")
	}
	return &stx, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
