// Command vmfs-guest is /init of vmfs's test guest. It uses a vmfs payload disk the way
// Microdroid of the disk's Android release does (formats.md 3, 7, 8; formats-later.md):
// finds the partitions by GPT label, decodes the payload metadata and tells from it
// which releases write such a disk (the kernel parameter vmfs.profile= names one where
// the metadata cannot), opens each APEX through its size trailer as apexd did in
// mid-2021 or as the whole zero-padded partition as later, checks the payload (the
// config in the zero-padded APK, or a payload binary inside it), and reads the APK and
// each extra APK through a real dm-verity device built from its idsig's merkle tree, as
// apkdmverity does. It then prints one line, "VMFS-VERDICT {json}" naming the profile,
// on the console and powers the VM off.
//
// With the VM's state partitions (android13+) it checks vm-instance's header as
// Microdroid's manager does and keeps a boot record after it, and formats encrypted
// storage on first boot (state.go); the verdict reports both.
//
// It runs only inside the guest (build-guest.sh packs it into an initramfs with the kernel
// modules it loads), writes only to the state partitions, never to the payload disk, and
// imports no vmfs package but metadata and verdict, so it builds static without cgo.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"vmfs/metadata"
)

const (
	// partitionWait bounds the wait for the payload disk's partitions, like
	// microdroid_manager's 10 s wait for the metadata partition.
	partitionWait = 10 * time.Second
	// agentTimeout ends a stuck agent (a read that never returns) with a failing verdict.
	agentTimeout = time.Minute
	// startedLine is the agent's first console line.
	startedLine = "vmfs-guest: checking the payload disk"
)

func main() {
	r := &report{}
	end := func() {
		quietConsole()
		w := console()
		if err := r.finish(w); err != nil {
			fmt.Fprintln(os.Stderr, "vmfs-guest:", err)
		}
		w.Close()
		powerOff()
	}
	time.AfterFunc(agentTimeout, func() {
		r.add(check{Name: "agent", Reason: fmt.Sprintf("timed out after %v", agentTimeout)})
		end()
	})
	func() {
		defer func() {
			if p := recover(); p != nil {
				r.add(check{Name: "agent", Reason: fmt.Sprintf("panic: %v\n%s", p, debug.Stack())})
			}
		}()
		run(r)
	}()
	end()
}

// run performs the checks in order. A failed step that later ones need ends the run; the
// APEX, APK and dm-verity checks are independent of each other.
func run(r *report) {
	if !r.step("mount", mountPseudoFS) {
		return
	}
	// One line before the checks, so that the host can tell the guest runs.
	w := console()
	fmt.Fprintln(w, startedLine)
	w.Close()
	if !r.step("modules", loadModules) {
		return
	}

	// The profile may be named on the kernel command line; without /proc it is not.
	cmdline, _ := os.ReadFile("/proc/cmdline")
	var m *metadata.Metadata
	var parts map[string]partition
	var metaLabel string
	var rels []release
	if !r.step("metadata", func() (string, error) {
		var err error
		if parts, err = waitPartitions(metadataLabels(), true, partitionWait); err != nil {
			return "", err
		}
		for _, l := range metadataLabels() {
			if _, ok := parts[l]; ok {
				metaLabel = l
				break
			}
		}
		f, err := os.Open(parts[metaLabel].Dev)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if m, err = readMetadata(f); err != nil {
			return "", fmt.Errorf("%s: %w", parts[metaLabel], err)
		}
		if rels, err = releasesFor(metaLabel, m, string(cmdline)); err != nil {
			return "", fmt.Errorf("%s: %w", parts[metaLabel], err)
		}
		r.setProfile(profileNames(rels))
		return fmt.Sprintf("%s: %s disk: %s", parts[metaLabel], profileNames(rels), describeMetadata(m)), nil
	}) {
		return
	}

	// The releases that fit one metadata label lay out the disk alike: rels[0] stands
	// for them where the disk's shape is concerned.
	var nExtra int
	if !r.step("partitions", func() (string, error) {
		var err error
		if parts, err = waitPartitions(payloadLabels(m, metaLabel, 0), false, partitionWait); err != nil {
			return "", err
		}
		// Like microdroid_manager, find the extra APKs by label.
		nExtra = countExtras(parts, parts[metaLabel].Disk)
		if nExtra > 0 && !rels[0].extraApks {
			return "", fmt.Errorf("%d extra apk partitions, which %s disks do not have", nExtra, profileNames(rels))
		}
		return checkLayout(parts, payloadLabels(m, metaLabel, nExtra))
	}) {
		return
	}
	// The state disk comes before the payload disk: its partitions are there.
	if all, err := scanPartitions(); err == nil {
		parts = all
	}
	checkState(r, parts)

	seen := map[string]int{}
	for i, a := range m.GetApexes() {
		p := parts[metadata.ApexLabel(i)]
		// Shared-libs APEXes go on the disk in each version: number the repeats.
		name := "apex:" + a.GetName()
		if seen[a.GetName()]++; seen[a.GetName()] > 1 {
			name += fmt.Sprintf("#%d", seen[a.GetName()])
		}
		r.step(name, func() (string, error) {
			reason, err := onDevice(p, func(dev io.ReaderAt, size int64) (string, error) {
				return checkApex(rels[0], a.GetName(), dev, size)
			})
			return fmt.Sprintf("%s: %s", p, reason), err
		})
	}

	apk := parts[m.GetApk().GetPayloadPartitionName()]
	idsig := parts[m.GetApk().GetIdsigPartitionName()]
	r.step("apk-config", func() (string, error) {
		reason, err := onDevice(apk, func(dev io.ReaderAt, size int64) (string, error) {
			reason, kept, err := checkAPK(rels, m, nExtra, dev, size)
			if err == nil {
				rels = kept
				r.setProfile(profileNames(rels))
			}
			return reason, err
		})
		return fmt.Sprintf("%s: %s", apk, reason), err
	})
	// Named after the APK partition, as Microdroid's init.rc runs apkdmverity.
	r.step("apk-verity", func() (string, error) {
		reason, _, err := checkVerity(m.GetApk().GetPayloadPartitionName(), apk, idsig)
		return reason, err
	})
	for i := range nExtra {
		r.step(fmt.Sprintf("extra-apk:%d", i), func() (string, error) {
			return checkExtraAPK(i, parts[metadata.ExtraAPKLabel(i)], parts[metadata.ExtraIdsigLabel(i)])
		})
	}
}

// onDevice runs fn over the partition's block device and its size; errors name the partition.
func onDevice(p partition, fn func(io.ReaderAt, int64) (string, error)) (string, error) {
	f, err := os.Open(p.Dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("size of %s: %w", p, err)
	}
	reason, err := fn(f, size)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return reason, nil
}
