package fusedisk

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/splice"

	"golang.org/x/sys/unix"

	"vmfs/testdata"
)

// stressDuration is 5 s in `make test`; `make stress` sets VMFS_STRESS_SECONDS=60.
func stressDuration() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("VMFS_STRESS_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 5 * time.Second
}

// openFDs counts this process's fds less go-fuse's pooled splice pipes (two fds
// each), which grow with the highest read concurrency seen and are reused.
func openFDs(t *testing.T) int {
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(names) - 2*splice.Total()
}

// TestStress: 16 readers do random reads of payload.img and every partition file,
// half through the page cache and half with O_DIRECT (so every read reaches vmfs),
// and now and then read a file whole, as cat does; no byte may differ from the
// reference, no whole read may end early, and the server must not leak goroutines
// or fds. The small odd-sized APEXes make many small extents.
func TestStress(t *testing.T) {
	p := newPayload(t, append(edgeApexes, 4099, 8187, 4097, 12291, 4095), 3<<20+5, 10443)
	s := mount(t, p.disk, TreeOptions{})
	files := map[string][]byte{"payload.img": p.reference(t, &p.disk.Flat)}
	for i := range p.disk.Partitions {
		part := &p.disk.Partitions[i]
		files[filepath.Join("partitions", part.Label)] = p.reference(t, &part.Image)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	// A first round warms go-fuse's reader goroutines and splice pipe pool; the
	// second must not grow them.
	stress(t, s.Mountpoint, files, names, time.Second)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	stress(t, s.Mountpoint, files, names, stressDuration())
	// The kernel releases the readers' handles asynchronously after close.
	testdata.Eventually(t, 10*time.Second, func() bool {
		return runtime.NumGoroutine() <= goroutines+4 && openFDs(t) <= fds+4 && splice.Used() == 0
	})
	if g := runtime.NumGoroutine(); g > goroutines+4 {
		t.Errorf("goroutines grew from %d to %d", goroutines, g)
	}
	if n := openFDs(t); n > fds+4 {
		t.Errorf("open fds (besides pooled pipes) grew from %d to %d", fds, n)
	}
	if n := splice.Used(); n != 0 {
		t.Errorf("%d splice pipes still in use after every read returned", n)
	}
}

func stress(t *testing.T, mnt string, files map[string][]byte, names []string, d time.Duration) {
	deadline := time.Now().Add(d)
	var reads, mismatches atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			flags := os.O_RDONLY
			if w%2 == 1 {
				flags |= syscall.O_DIRECT
			}
			buf := make([]byte, 1<<20)
			for time.Now().Before(deadline) {
				name := names[r.IntN(len(names))]
				want := files[name]
				f, err := os.OpenFile(filepath.Join(mnt, name), flags, 0)
				if err != nil {
					t.Error(err)
					return
				}
				for i := 0; i < 20; i++ {
					off := r.Int64N(int64(len(want)))
					n := 1 + r.IntN(len(buf))
					if flags&syscall.O_DIRECT != 0 { // O_DIRECT wants aligned offsets and sizes
						off, n = off&^4095, (n+4095)&^4095
					}
					m, err := f.ReadAt(buf[:n], off)
					end := min(off+int64(n), int64(len(want)))
					if (err != nil && err != io.EOF) || int64(m) != end-off || !bytes.Equal(buf[:m], want[off:end]) {
						mismatches.Add(1)
						t.Errorf("%s: read %d at %d: %d bytes, %v", name, n, off, m, err)
					}
					reads.Add(1)
				}
				if r.IntN(4) == 0 {
					n := 1 + r.IntN(len(buf))
					if flags&syscall.O_DIRECT != 0 {
						n = (n + 4095) &^ 4095
					}
					freshPipes()
					if err := checkWhole(f, buf[:n], want); err != nil {
						mismatches.Add(1)
						t.Errorf("%s: whole in %d-byte reads: %v", name, n, err)
					}
					reads.Add(1)
				}
				f.Close()
			}
		}(w)
	}
	wg.Wait()
	t.Logf("%d reads, %d mismatches in %v", reads.Load(), mismatches.Load(), d)
}

// checkWhole reads f from its start to its end in reads of len(buf) bytes, as cat
// does, and compares the length and the bytes with want. It drops f's cached pages
// first, so that the read reaches vmfs.
func checkWhole(f *os.File, buf, want []byte) error {
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	pos := 0
	for {
		m, err := f.Read(buf)
		if m > 0 && (pos+m > len(want) || !bytes.Equal(buf[:m], want[pos:pos+m])) {
			return fmt.Errorf("bytes differ in [%d, %d)", pos, pos+m)
		}
		pos += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if pos != len(want) {
		return fmt.Errorf("%d bytes, want %d", pos, len(want))
	}
	return nil
}
