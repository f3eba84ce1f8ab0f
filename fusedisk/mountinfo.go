package fusedisk

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// FSType is how a vmfs mount appears in /proc/self/mountinfo: the kernel's "fuse."
// and the subtype vmfs gives its mounts.
const (
	subtype = "vmfs"
	FSType  = "fuse." + subtype
)

// MountInfo is one mount of /proc/self/mountinfo.
type MountInfo struct {
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
		out = append(out, MountInfo{Point: unescapeMountinfo(fields[4]), Dev: fields[2], FSType: fields[sep+1], Source: fields[sep+2]})
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
