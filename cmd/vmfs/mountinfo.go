package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"vmfs/fusedisk"
)

// mountEntry is a vmfs mount.
type mountEntry struct {
	point string
	pid   int // the serving process, from the source field "vmfs:<pid>"
}

// fsName is the mount source a server with this pid gives its mount.
func fsName(pid int) string { return fmt.Sprintf("vmfs:%d", pid) }

// vmfsMounts lists the vmfs mounts visible to this process.
func vmfsMounts() ([]mountEntry, error) {
	ms, err := fusedisk.Mounts()
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range ms {
		if m.FSType != fusedisk.FSType {
			continue
		}
		e := mountEntry{point: m.Point}
		if pid, ok := strings.CutPrefix(m.Source, "vmfs:"); ok {
			e.pid, _ = strconv.Atoi(pid)
		}
		out = append(out, e)
	}
	return out, nil
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
