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
	point  string
	source string // as the server named it: "vmfs:<pid>"
	pid    int    // the serving process, from source
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
		e := mountEntry{point: m.Point, source: m.Source}
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

// isTop reports whether m is the top mount at its mountpoint (nothing covers it).
func isTop(m mountEntry) bool {
	top, err := fusedisk.MountAt(m.point)
	return err == nil && top != nil && top.FSType == fusedisk.FSType && top.Source == m.source
}

// A server's state, as list and unmount see it.
const (
	stateServing = "serving"
	stateStopped = "stopped"
	stateDead    = "dead"
)

// serverState says whether pid serves point, is stopped (SIGSTOP, or a debugger),
// or is gone; it reads /proc only, never the mount, so it cannot block.
func serverState(pid int, point string) string {
	if !serverAlive(pid, point) {
		return stateDead
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stateDead
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, so cut at the last ')'.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		switch b[i+2] {
		case 'T', 't':
			return stateStopped
		case 'Z', 'X':
			return stateDead
		}
	}
	return stateServing
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
