package fusedisk

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/splice"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/layout"
)

// concat builds the payload disk p lays out by hand from its source files: the
// GPT header, each partition (its content, zeros to 4 KiB and, for an APEX, its
// size in the last 4 bytes), the GPT footer. It shares no code with layout's reader.
func (p *payload) concat(t testing.TB) []byte {
	t.Helper()
	pad := func(b []byte) []byte { return append(b, make([]byte, (4096-len(b)%4096)%4096)...) }
	out := append([]byte{}, p.disk.Header.Extents[0].Data...)
	out = append(out, pad(append([]byte{}, p.disk.Partitions[0].Extents[0].Data...))...)
	napex := len(p.paths) - 2
	for i, path := range p.paths {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		size := len(b)
		if i < napex {
			b = pad(append(b, 0, 0, 0, 0))
			binary.BigEndian.PutUint32(b[len(b)-4:], uint32(size))
		}
		out = append(out, pad(b)...)
	}
	return append(out, p.disk.Footer.Extents[0].Data...)
}

// freshPipes empties go-fuse's pool of splice pipes, so that the next reads get
// pipes of the default size, as in a server that has just started. A pooled pipe
// keeps the size an earlier read grew it to and can hide a miscount.
func freshPipes() { splice.ClearSplicePool() }

// TestWholeReads: payload.img read whole has exactly its size and the bytes of the
// sources, for random layouts of small odd-sized APEXes. Their partitions take
// more pipe buffers than pages, and a reply that does not fit go-fuse's splice
// pipe used to arrive short, which the kernel took for the end of the file.
func TestWholeReads(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 40; i++ {
		var apexes []int64
		for range 1 + r.IntN(8) {
			apexes = append(apexes, 4096*(1+r.Int64N(3))+[]int64{-5, -4, -3, -2, -1, 1, 2, 3, 4, 5}[r.IntN(10)])
		}
		apk, idsig := 1+r.Int64N(40000), 1+r.Int64N(5000)
		t.Run(fmt.Sprintf("%v_%d_%d", apexes, apk, idsig), func(t *testing.T) {
			p := newPayload(t, apexes, apk, idsig)
			want := p.concat(t)
			freshPipes()
			s := mount(t, p.disk, TreeOptions{})
			img := filepath.Join(s.Mountpoint, "payload.img")
			for _, how := range []struct {
				name  string
				flags int
				n     int
			}{
				{"os.ReadFile (reads of the whole size)", 0, len(want) + 512},
				{"cat (128 KiB reads)", 0, 128 << 10},
				{"O_DIRECT 1 MiB", syscall.O_DIRECT, 1 << 20},
			} {
				f, err := os.OpenFile(img, os.O_RDONLY|how.flags, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := checkWhole(f, make([]byte, how.n), want); err != nil {
					t.Errorf("%s: %v", how.name, err)
				}
				f.Close()
			}
		})
	}
}

// TestSpliceFits checks the pipe accounting against the kernel: a reply that
// spliceFits admits is moved whole into a pipe as small as go-fuse may grow its
// own, header first, whether it is a piece of one file (spliced from the file, at
// any offset) or a read across extents assembled by readPipe.
func TestSpliceFits(t *testing.T) {
	p := newPayload(t, []int64{4092, 4099, 8187, 4097, 12291, 4093}, 300<<10+5, 4001)
	opened, err := OpenSources([]Disk{{Disk: p.disk}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	srcs, err := opened.forDisk(p.disk)
	if err != nil {
		t.Fatal(err)
	}
	n := &fileNode{im: &p.disk.Flat, srcs: srcs, log: zap.NewNop()}
	r := rand.New(rand.NewPCG(3, 4))
	short := 0
	for i := 0; i < 3000; i++ {
		off := r.Int64N(n.im.Size)
		size := int(min(1+r.Int64N(maxRead), n.im.Size-off))
		if i%2 == 0 { // small, so that the pipe is small too
			size = int(min(1+r.Int64N(64<<10), n.im.Size-off))
		}
		first, last := n.im.Index(off), n.im.Index(off+int64(size)-1)
		slots := n.pipeSlots(off, size, first, last)
		var src int
		var srcOff *int64
		done := func() {}
		switch e := &n.im.Extents[first]; {
		case first == last && e.Kind == layout.File:
			src, srcOff = srcs[e.Source].fd, new(int64)
			*srcOff = e.SourceOff + off - e.Off
		case first == last:
			continue // served from memory, no pipe
		default:
			res, ok := n.readPipe(off, size, first, last, slots)
			if !ok {
				t.Fatalf("readPipe %d at %d failed", size, off)
			}
			pr := res.(interface{ Stateful() (uintptr, int) })
			fd, _ := pr.Stateful()
			src, done = int(fd), res.Done
		}
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, outHeaderSize+size); err != nil {
			t.Fatal(err)
		}
		unix.Write(fds[1], make([]byte, outHeaderSize))
		moved, err := unix.Splice(src, srcOff, fds[1], nil, size, unix.SPLICE_F_NONBLOCK)
		unix.Close(fds[0])
		unix.Close(fds[1])
		done()
		if err != nil && err != unix.EAGAIN {
			t.Fatal(err)
		}
		if int(moved) < size {
			short++
			if spliceFits(size, slots) {
				t.Errorf("read %d at %d in %d slots: spliceFits, but the kernel moved %d", size, off, slots, moved)
			}
		}
	}
	if short == 0 {
		t.Error("no splice was short: the test never reached a pipe's limit")
	}
	t.Logf("%d short splices, all refused by spliceFits", short)
}
