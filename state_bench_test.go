package vmfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmfs/metadata"
	"vmfs/testdata"
)

// benchStateSize is the instance image BenchmarkStateWriteMount writes whole:
// large enough that qemu-io's start is a small part of its time.
const benchStateSize = 64 << 20

// BenchmarkStateWriteMount compares sequential writes into vm-instance, a 64 MiB
// QCOW2 instance image (android14), through a mount's disk.img (each write in the
// file before its reply, then fsync) with the same writes by one qemu-io process
// into a twin image directly (many -c writes, then flush), in the same
// iteration. qemu-io's start (the same process with only a flush) is measured
// on the twin first and taken off; the mount's engine starts at the open, before
// the clock. x is vmfs throughput over qemu-io's.
func BenchmarkStateWriteMount(b *testing.B) {
	testdata.RequireFUSE(b)
	qemuIO := testdata.RequireTool(b, "qemu-io")
	testdata.RequireTool(b, "qemu-storage-daemon")
	for _, bs := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", bs>>10), func(b *testing.B) {
			var vm, direct float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				inst, twin := filepath.Join(dir, "inst.img"), filepath.Join(dir, "twin.img")
				for _, path := range []string{inst, twin} {
					if err := CreatePartition(path, PartitionSpec{Size: benchStateSize, Type: metadata.InstancePartition, Profile: metadata.Android14}); err != nil {
						b.Fatal(err)
					}
				}
				vt := writeThroughMount(b, inst, bs)

				args := []string{"-f", "qcow2"}
				for done := 0; done < benchStateSize; done += bs {
					args = append(args, "-c", fmt.Sprintf("write -q %d %d", done, bs))
				}
				args = append(args, "-c", "flush", twin)
				startup := timeQemuIO(b, qemuIO, "-f", "qcow2", "-c", "flush", twin)
				dt := timeQemuIO(b, qemuIO, args...) - startup
				vm += float64(benchStateSize) / vt.Seconds() / 1e6
				direct += float64(benchStateSize) / dt.Seconds() / 1e6
			}
			n := float64(b.N)
			b.ReportMetric(vm/n, "vmfs-MB/s")
			b.ReportMetric(direct/n, "qemu-io-MB/s")
			b.ReportMetric(vm/direct, "x")
		})
	}
}

// writeThroughMount mounts the android14 sample with the instance image inst,
// writes it whole through disk.img in bs-byte writes and an fsync, and returns
// the time the writes and the fsync took.
func writeThroughMount(b *testing.B, inst string, bs int) time.Duration {
	b.Helper()
	ctx := context.Background()
	spec := Spec{
		Profile: metadata.Android14, APK: testdata.LaterAPKPath(), Idsig: testdata.LaterIdsigPath(), ConfigPath: testdata.ConfigPath,
		ApexInfoList: testdata.LaterAPEXInfoListPath(), OSDir: testdata.OSDir(), Instance: inst,
	}
	for _, e := range testdata.LaterExtraAPKs() {
		spec.ExtraIdsigs = append(spec.ExtraIdsigs, e.Idsig)
	}
	p, err := Resolve(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	mnt := b.TempDir()
	srv, err := Mount(ctx, p, mnt, MountOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Unmount()
	var flat string
	var off int64 = -1
	for _, d := range p.Disks() {
		for _, part := range d.Disk.Partitions {
			if part.Label == metadata.InstanceLabel {
				flat, off = d.Paths(mnt).Flat, part.Offset
			}
		}
	}
	if off < 0 {
		b.Fatal("no vm-instance partition")
	}
	f, err := os.OpenFile(flat, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, bs)
	b.StartTimer()
	start := time.Now()
	for done := 0; done < benchStateSize; done += bs {
		if _, err := f.WriteAt(buf, off+int64(done)); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	b.StopTimer()
	return d
}

// timeQemuIO runs qemu-io with args and returns its wall time.
func timeQemuIO(b *testing.B, qemuIO string, args ...string) time.Duration {
	b.Helper()
	start := time.Now()
	out, err := exec.Command(qemuIO, args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "error") {
		b.Fatalf("qemu-io: %v\n%s", err, out)
	}
	return time.Since(start)
}
