package service

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"vmfs"
	"vmfs/layout"
	"vmfs/testdata"
)

// stressDuration is 5 s in `make test`; `make stress` sets VMFS_STRESS_SECONDS=60.
func stressDuration() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("VMFS_STRESS_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 5 * time.Second
}

// randomAPK writes an APK of the fixtures' three APEXes whose bulk is random
// bytes of seed, stored, so that no two payloads read alike.
func randomAPK(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	w, err := zw.Create(testdata.ConfigPath)
	if err == nil {
		_, err = w.Write([]byte(`{"os":{"name":"microdroid"},"apexes":[{"name":"com.android.adbd"},{"name":"com.android.os.statsd"},{"name":"com.vmfs.edge"}]}`))
	}
	if err == nil {
		w, err = zw.CreateHeader(&zip.FileHeader{Name: "assets/random.bin", Method: zip.Store})
	}
	if err == nil {
		b := make([]byte, size)
		r := rand.New(rand.NewPCG(seed, 3))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		_, err = w.Write(b)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// flatOf is the reference bytes of a payload's flat disk: the layout read over
// plain files.
func flatOf(t *testing.T, spec vmfs.Spec) []byte {
	t.Helper()
	p, err := vmfs.Resolve(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	var rs []io.ReaderAt
	for _, s := range p.Disk.Sources {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rs = append(rs, f)
	}
	b := make([]byte, p.Disk.Flat.Size)
	if _, err := layout.NewReader(&p.Disk.Flat, rs).ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServiceStress: 16 readers, each on a payload of its own among 16 that one
// service serves (sharing their APEXes, each open once), read random ranges of
// payload.img, half with O_DIRECT so that every read reaches the service; no byte
// may differ from that payload's reference.
func TestServiceStress(t *testing.T) {
	s, c, _ := startService(t)
	dir := t.TempDir()
	const payloads = 16
	dirs, want := make([]string, payloads), make([][]byte, payloads)
	for i := range payloads {
		spec := vmfs.Spec{APK: filepath.Join(dir, fmt.Sprintf("app%d.apk", i)), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath}
		randomAPK(t, spec.APK, 1<<20+i*12289, uint64(i))
		p, err := c.Add(context.Background(), "", spec, "")
		if err != nil {
			t.Fatal(err)
		}
		dirs[i] = p.Dir
		spec.ApexInfoList, spec.OSDir = s.o.ApexInfoList, s.o.OSDir
		want[i] = flatOf(t, spec)
	}
	// The service runs in this process: the APEXes all 16 read are open once.
	apex := testdata.Path(testdata.APEXes()[0].Rel)
	if n := testdata.FDsOn(t, apex); n != 1 {
		t.Errorf("%s, read by %d payloads, is open %d times, want once", apex, payloads, n)
	}
	deadline := time.Now().Add(stressDuration())
	var reads, wrong atomic.Int64
	var wg sync.WaitGroup
	for w := range payloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			flags := os.O_RDONLY
			if w%2 == 1 {
				flags |= syscall.O_DIRECT
			}
			f, err := os.OpenFile(filepath.Join(dirs[w], "payload.img"), flags, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(uint64(w), 5))
			buf := make([]byte, 1<<20)
			for time.Now().Before(deadline) {
				off, n := r.Int64N(int64(len(want[w]))), 1+r.IntN(len(buf))
				if flags&syscall.O_DIRECT != 0 { // aligned offsets and sizes
					off, n = off&^4095, (n+4095)&^4095
				}
				m, err := f.ReadAt(buf[:n], off)
				end := min(off+int64(n), int64(len(want[w])))
				if (err != nil && err != io.EOF) || int64(m) != end-off || !bytes.Equal(buf[:m], want[w][off:end]) {
					wrong.Add(1)
					t.Errorf("payload %d: read %d at %d: %d bytes, %v", w, n, off, m, err)
				}
				reads.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d reads over %d payloads, %d wrong", reads.Load(), payloads, wrong.Load())
}
