package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// fsType is how vmfs mounts appear in /proc/self/mountinfo.
const fsType = "fuse.vmfs"

// mountEntry is one vmfs line of /proc/self/mountinfo.
type mountEntry struct {
	point string
	pid   int // the serving process, from the source field "vmfs:<pid>"
}

// fsName is the mount source a server with this pid gives its mount.
func fsName(pid int) string { return fmt.Sprintf("vmfs:%d", pid) }

// vmfsMounts lists the vmfs mounts visible to this process.
func vmfsMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
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
		if sep < 5 || sep+2 >= len(fields) || fields[sep+1] != fsType {
			continue
		}
		e := mountEntry{point: unescapeMountinfo(fields[4])}
		if pid, ok := strings.CutPrefix(fields[sep+2], "vmfs:"); ok {
			e.pid, _ = strconv.Atoi(pid)
		}
		out = append(out, e)
	}
	return out, sc.Err()
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

// findMount returns the vmfs mount at point, if any.
func findMount(point string) (*mountEntry, error) {
	ms, err := vmfsMounts()
	if err != nil {
		return nil, err
	}
	for i := range ms {
		if ms[i].point == point {
			return &ms[i], nil
		}
	}
	return nil, nil
}

// serverAlive reports whether pid is still the vmfs server of point, so that a
// recycled pid never gets our signal.
func serverAlive(pid int, point string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	hasMount, hasPoint := false, false
	for _, a := range args {
		hasMount = hasMount || a == "mount"
		hasPoint = hasPoint || a == point
	}
	return hasMount && hasPoint
}
