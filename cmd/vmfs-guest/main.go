// Command vmfs-guest is /init of vmfs's test guest. It uses a vmfs payload disk the way
// Microdroid does (formats.md 3, 7, 8): finds the partitions by GPT label, decodes the
// payload metadata, opens each APEX through its size trailer as apexd did in mid-2021,
// reads the payload config from the zero-padded APK, and reads the APK through a real
// dm-verity device built from the idsig's merkle tree, as apkdmverity does. It then
// prints one line, "VMFS-VERDICT {json}", on the console and powers the VM off.
//
// It runs only inside the guest (build-guest.sh packs it into an initramfs with the kernel
// modules it loads), never writes to the payload disk, and imports no vmfs package but
// metadata, so it builds static without cgo.
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

	var m *metadata.Metadata
	var parts map[string]partition
	var metaLabel string
	if !r.step("metadata", func() (string, error) {
		var err error
		if parts, err = waitPartitions(metadataLabels, true, partitionWait); err != nil {
			return "", err
		}
		for _, l := range metadataLabels {
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
		return fmt.Sprintf("%s: %s", parts[metaLabel], describeMetadata(m)), nil
	}) {
		return
	}

	if !r.step("partitions", func() (string, error) {
		labels := []string{metaLabel, m.GetApk().GetPayloadPartitionName(), m.GetApk().GetIdsigPartitionName()}
		for i, a := range m.GetApexes() {
			labels = append(labels, apexLabel(i, a))
		}
		var err error
		if parts, err = waitPartitions(labels, false, partitionWait); err != nil {
			return "", err
		}
		return checkLayout(m, parts, metaLabel)
	}) {
		return
	}

	for i, a := range m.GetApexes() {
		p := parts[apexLabel(i, a)]
		r.step("apex:"+a.GetName(), func() (string, error) {
			reason, err := onDevice(p, func(dev io.ReaderAt, size int64) (string, error) {
				return checkApex(a.GetName(), dev, size)
			})
			return fmt.Sprintf("%s: %s", p, reason), err
		})
	}

	apk := parts[m.GetApk().GetPayloadPartitionName()]
	idsig := parts[m.GetApk().GetIdsigPartitionName()]
	r.step("apk-config", func() (string, error) {
		reason, err := onDevice(apk, func(dev io.ReaderAt, size int64) (string, error) {
			return checkAPK(m, dev, size)
		})
		return fmt.Sprintf("%s: %s", apk, reason), err
	})
	// Named after the APK partition, as Microdroid's init.rc runs apkdmverity.
	r.step("apk-verity", func() (string, error) {
		return checkVerity(m.GetApk().GetPayloadPartitionName(), apk, idsig)
	})
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
