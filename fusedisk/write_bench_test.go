package fusedisk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmfs/testdata"
)

// BenchmarkStateWrite compares sequential writes into vm-instance, a QCOW2 state
// file, through the mount's flat image (each write in the file before its reply,
// then fsync) with the same writes by qemu-io into the QCOW2 directly (then a
// flush), in the same iteration. x is vmfs throughput over qemu-io's; qemu-io's
// time includes its start.
func BenchmarkStateWrite(b *testing.B) {
	const total = stateSize // each run writes the whole partition once
	for _, bs := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", bs>>10), func(b *testing.B) {
			var vm, direct float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				sd := newStateDisk(b, b.TempDir(), "qcow2")
				s, stop := sd.mount(b)
				f, err := os.OpenFile(filepath.Join(s.Mountpoint, "payload.img"), os.O_WRONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, bs)
				off := sd.disk.Partitions[1].Offset
				b.StartTimer()
				start := time.Now()
				for done := int64(0); done < total; done += int64(bs) {
					if _, err := f.WriteAt(buf, off+done); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				vt := time.Since(start)
				b.StopTimer()
				f.Close()
				stop()

				other := newStateDisk(b, b.TempDir(), "qcow2")
				args := []string{"-f", "qcow2"}
				for done := int64(0); done < total; done += int64(bs) {
					args = append(args, "-c", fmt.Sprintf("write -q %d %d", done, bs))
				}
				args = append(args, "-c", "flush", other.state)
				start = time.Now()
				if out, err := exec.Command(testdata.RequireTool(b, "qemu-io"), args...).CombinedOutput(); err != nil || strings.Contains(string(out), "error") {
					b.Fatalf("qemu-io: %v\n%s", err, out)
				}
				dt := time.Since(start)
				vm += mbps(total, vt)
				direct += mbps(total, dt)
			}
			n := float64(b.N)
			b.ReportMetric(vm/n, "vmfs-MB/s")
			b.ReportMetric(direct/n, "qemu-io-MB/s")
			b.ReportMetric(vm/direct, "x")
		})
	}
}
