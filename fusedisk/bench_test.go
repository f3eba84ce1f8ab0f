package fusedisk

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"vmfs/metadata"
	"vmfs/testdata"
)

// benchAPKSize is the APK of the benchmark payload (random bytes, so no hole tricks).
const benchAPKSize = 256 << 20

// readSeq reads a file from start to end in 1 MiB reads and returns bytes and time.
func readSeq(b *testing.B, path string, buf []byte) (int64, time.Duration) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return n, time.Since(start)
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// BenchmarkSequentialRead compares sequential 1 MiB reads through vmfs with direct
// reads of the same original bytes, both from the page cache, measured in the same
// iteration. cold = first read after mount; hot = the second, from vmfs's own cache.
// The ratios (cold-x, hot-x) are vmfs throughput over direct throughput.
func BenchmarkSequentialRead(b *testing.B) {
	testdata.RequireFUSE(b)
	p := newPayload(b, edgeApexes, benchAPKSize, 2251+benchAPKSize/4096*32/127)
	buf := make([]byte, 1<<20)
	apk := p.paths[len(edgeApexes) : len(edgeApexes)+1]
	for _, tc := range []struct {
		name        string
		file        string
		direct      []string // the originals whose bytes the file holds
		passthrough bool
	}{
		{"payload.img", "payload.img", p.paths, false},
		{"microdroid-apk", "partitions/" + metadata.APKLabel, apk, false},
		// The APK is 4 KiB-aligned, so its partition is the file itself.
		{"microdroid-apk-passthrough", "partitions/" + metadata.APKLabel, apk, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var direct, cold, hot float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var dn int64
				var dt time.Duration
				for _, src := range tc.direct {
					readSeq(b, src, buf) // make sure the originals are in the page cache
					n, t := readSeq(b, src, buf)
					dn, dt = dn+n, dt+t
				}
				s, stop, err := serveDisk(b.TempDir(), p.disk, TreeOptions{NoPassthrough: !tc.passthrough}, MountOptions{ReadaheadKiB: benchReadahead()})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				cn, ct := readSeq(b, filepath.Join(s.Mountpoint, tc.file), buf)
				hn, ht := readSeq(b, filepath.Join(s.Mountpoint, tc.file), buf)
				b.StopTimer()
				if err := stop(); err != nil {
					b.Fatal(err)
				}
				direct += mbps(dn, dt)
				cold += mbps(cn, ct)
				hot += mbps(hn, ht)
			}
			n := float64(b.N)
			b.ReportMetric(direct/n, "direct-MB/s")
			b.ReportMetric(cold/n, "cold-MB/s")
			b.ReportMetric(hot/n, "hot-MB/s")
			b.ReportMetric(cold/direct, "cold-x")
			b.ReportMetric(hot/direct, "hot-x")
		})
	}
}

// benchReadahead lets a run try other readahead windows: VMFS_BENCH_RA_KIB=1024.
func benchReadahead() int {
	n, _ := strconv.Atoi(os.Getenv("VMFS_BENCH_RA_KIB"))
	return n
}
