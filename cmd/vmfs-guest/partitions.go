package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// partition is a GPT partition as sysfs describes it.
type partition struct {
	Label string // GPT partition name (uevent PARTNAME)
	Dev   string // device node, e.g. /dev/vda2
	Disk  string // whole-disk name, e.g. vda
	Num   int    // partition number (uevent PARTN), 1-based
	Major uint32
	Minor uint32
}

func (p partition) String() string { return fmt.Sprintf("%s (%s)", p.Label, p.Dev) }

// majMin is how device-mapper tables name a block device.
func (p partition) majMin() string { return fmt.Sprintf("%d:%d", p.Major, p.Minor) }

// sysBlock is where the kernel lists block devices, partitions included.
const sysBlock = "/sys/class/block"

// scanPartitions lists the named partitions the kernel has found, by label. It fails when
// two partitions share a label, since the guest could not tell which one vmfs meant.
func scanPartitions() (map[string]partition, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	parts := map[string]partition{}
	for _, e := range entries {
		dir := filepath.Join(sysBlock, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
			continue // a whole disk
		}
		ev, err := os.ReadFile(filepath.Join(dir, "uevent"))
		if err != nil {
			return nil, err
		}
		p, err := parseUevent(string(ev))
		if err != nil {
			return nil, fmt.Errorf("%s/uevent: %w", dir, err)
		}
		if p.Label == "" {
			continue
		}
		// The partition's sysfs directory sits inside its disk's.
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return nil, err
		}
		p.Disk = filepath.Base(filepath.Dir(real))
		if old, dup := parts[p.Label]; dup {
			return nil, fmt.Errorf("partition label %q is on both %s and %s", p.Label, old.Dev, p.Dev)
		}
		parts[p.Label] = p
	}
	return parts, nil
}

// parseUevent reads the KEY=value lines of a partition's uevent file.
func parseUevent(ev string) (partition, error) {
	var p partition
	for line := range strings.Lines(ev) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		var err error
		switch k {
		case "PARTNAME":
			p.Label = v
		case "DEVNAME":
			p.Dev = "/dev/" + v
		case "PARTN":
			p.Num, err = strconv.Atoi(v)
		case "MAJOR":
			p.Major, err = parseU32(v)
		case "MINOR":
			p.Minor, err = parseU32(v)
		}
		if err != nil {
			return p, fmt.Errorf("%s=%q: %w", k, v, err)
		}
	}
	if p.Dev == "" || p.Num == 0 {
		return p, fmt.Errorf("no DEVNAME or PARTN in %q", ev)
	}
	return p, nil
}

func parseU32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// waitPartitions polls until every label in want is a partition with its device node,
// as microdroid_manager waits for /dev/block/by-name (10 s, formats.md 3.4). With
// anyOf it returns as soon as one of the labels is there.
func waitPartitions(want []string, anyOf bool, timeout time.Duration) (map[string]partition, error) {
	deadline := time.Now().Add(timeout)
	for {
		parts, err := scanPartitions()
		if err != nil {
			return nil, err
		}
		var missing []string
		for _, l := range want {
			p, ok := parts[l]
			if ok {
				_, err = os.Stat(p.Dev)
			}
			if !ok || err != nil {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 || anyOf && len(missing) < len(want) {
			return parts, nil
		}
		if time.Now().After(deadline) {
			var have []string
			for _, p := range parts {
				have = append(have, p.String())
			}
			sort.Strings(have)
			return nil, fmt.Errorf("partitions %s not found after %v (found: %s)",
				strings.Join(missing, ", "), timeout, strings.Join(have, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
