package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"vmfs/testdata"
)

// crosvm's constants and QcowHeader::create_for_size_and_path (disk/src/qcow/mod.rs),
// restated here as the oracle for the header Create writes.
const (
	crosvmMagic          = 0x5146_49fb // QCOW_MAGIC
	crosvmClusterBits    = 16          // DEFAULT_CLUSTER_BITS
	crosvmRefcountOrder  = 4           // DEFAULT_REFCOUNT_ORDER
	crosvmV3HeaderSize   = 104         // V3_BARE_HEADER_SIZE
	crosvmClusterSize    = 1 << crosvmClusterBits
	crosvmHeaderClusters = 1 // div_round_up(size_of::<QcowHeader>(), cluster_size)
)

func divRoundUp(a, b int64) int64 { return (a + b - 1) / b }

// crosvmHeader is the header crosvm computes for a virtual size: l1_size,
// l1_table_offset, refcount_table_offset, refcount_table_clusters.
func crosvmHeader(size int64) (l1Size, l1Off, refTableOff, refTableClusters int64) {
	l2Size := int64(crosvmClusterSize / 8)
	numClusters := divRoundUp(size, crosvmClusterSize)
	numL2Clusters := divRoundUp(numClusters, l2Size)
	l1Clusters := divRoundUp(numL2Clusters, crosvmClusterSize) // crosvm divides entries by bytes
	// max_refcount_clusters: 2-byte refcounts for data, then for the refcount clusters.
	all := numClusters + l1Clusters + numL2Clusters + crosvmHeaderClusters
	forData := divRoundUp(all*2, crosvmClusterSize)
	forRefcounts := divRoundUp(forData*2, crosvmClusterSize)
	return numL2Clusters, crosvmClusterSize, crosvmClusterSize * (l1Clusters + 1),
		divRoundUp((forData+forRefcounts)*8, crosvmClusterSize)
}

// TestCreateLayout: the header holds crosvm's fields for each size, and the clusters
// are where crosvm puts them (refcount table at 2, refcount block at 4, L2 table at
// 5, data at 6) with the two defects of crosvm's image fixed: cluster 3 free and the
// L1 entry flagged COPIED. A file that held something is truncated first: every
// byte the layout does not name is zero.
func TestCreateLayout(t *testing.T) {
	head := []byte("Android-VM-instance\x01\x00")
	for _, size := range []int64{1, 21, 1 << 20, 10 << 20, 1000001, 1 << 30, 512<<20 + 1, MaxSize} {
		for _, head := range [][]byte{nil, head} {
			if int64(len(head)) > size {
				continue
			}
			t.Run(strconv.FormatInt(size, 10)+"/"+strconv.Itoa(len(head)), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "img")
				// What a reused file held: none of it may stay.
				if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, 9*crosvmClusterSize), 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := Create(f, size, head); err != nil {
					t.Fatal(err)
				}
				img, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				checkLayout(t, img, size, head)
			})
		}
	}
}

func checkLayout(t *testing.T, img []byte, size int64, head []byte) {
	t.Helper()
	const c = crosvmClusterSize
	clusters := int64(5)
	if len(head) > 0 {
		clusters = 7
	}
	if int64(len(img)) != clusters*c {
		t.Fatalf("file of %d bytes, want %d clusters", len(img), clusters)
	}
	be := binary.BigEndian
	l1Size, l1Off, refTableOff, refTableClusters := crosvmHeader(size)
	for _, f := range []struct {
		name     string
		off, len int
		want     uint64
	}{
		{"magic", 0, 4, crosvmMagic},
		{"version", 4, 4, 3},
		{"backing_file_offset", 8, 8, 0},
		{"backing_file_size", 16, 4, 0},
		{"cluster_bits", 20, 4, crosvmClusterBits},
		{"size", 24, 8, uint64(size)},
		{"crypt_method", 32, 4, 0},
		{"l1_size", 36, 4, uint64(l1Size)},
		{"l1_table_offset", 40, 8, uint64(l1Off)},
		{"refcount_table_offset", 48, 8, uint64(refTableOff)},
		{"refcount_table_clusters", 56, 4, uint64(refTableClusters)},
		{"nb_snapshots", 60, 4, 0},
		{"snapshots_offset", 64, 8, 0},
		{"incompatible_features", 72, 8, 0},
		{"compatible_features", 80, 8, 0},
		{"autoclear_features", 88, 8, 0},
		{"refcount_order", 96, 4, crosvmRefcountOrder},
		{"header_size", 100, 4, crosvmV3HeaderSize},
		{"header extension end marker", 104, 8, 0},
	} {
		var got uint64
		for _, b := range img[f.off : f.off+f.len] {
			got = got<<8 | uint64(b)
		}
		if got != f.want {
			t.Errorf("header %s = %#x, want crosvm's %#x", f.name, got, f.want)
		}
	}
	if refTableClusters != 1 || refTableOff != 2*c {
		t.Fatalf("crosvm's refcount table: %d clusters at %#x; the layout below assumes 1 at cluster 2", refTableClusters, refTableOff)
	}

	// Each cluster's bytes (header fields big-endian, as all of QCOW2's), as crosvm leaves them, bar its two defects.
	want := make([]byte, len(img))
	copy(want, img[:crosvmV3HeaderSize]) // checked above
	be.PutUint64(want[2*c:], 4*c)        // the one refcount block, at cluster 4
	refcounts := []uint16{1, 1, 1, 0, 1} // cluster 3: crosvm's first block, left free
	if len(head) > 0 {
		refcounts = append(refcounts, 1, 1)
		be.PutUint64(want[l1Off:], 5*c|1<<63) // L1[0]: the L2 table, COPIED
		be.PutUint64(want[5*c:], 6*c|1<<63)   // L2[0]: the data cluster, COPIED
		copy(want[6*c:], head)
	}
	for i, r := range refcounts {
		be.PutUint16(want[4*c+2*i:], r)
	}
	for cl := int64(0); cl < clusters; cl++ {
		if got, w := img[cl*c:(cl+1)*c], want[cl*c:(cl+1)*c]; !bytes.Equal(got, w) {
			i := 0
			for got[i] == w[i] {
				i++
			}
			t.Errorf("cluster %d differs at byte %#x: %#x, want %#x", cl, i, got[i], w[i])
		}
	}
}

// TestCreateRefuses: a size outside [1, MaxSize], or a head that fits neither the
// size nor one cluster, is ErrSize, and the file is left as it was.
func TestCreateRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	orig := []byte("what was there")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		size int64
		head int
	}{{0, 0}, {-1, 0}, {MaxSize + 1, 0}, {20, 21}, {1 << 20, ClusterSize + 1}} {
		if err := Create(f, c.size, make([]byte, c.head)); !errors.Is(err, ErrSize) {
			t.Errorf("Create(size %d, %d bytes): %v, want ErrSize", c.size, c.head, err)
		}
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, orig) {
		t.Errorf("the file changed: %q", got)
	}
}

// TestCreateQemu: QEMU's qemu-img and qemu-io take the smallest and largest images
// Create makes, and images whose virtual size leaves a partial sector or needs a second
// L2 table: clean and of the size; and, where QEMU sees 64 KiB or more, with the head
// at offset 0, and still clean with the head intact once QEMU has written at the end
// of the disk (allocating clusters, refcounts and, past 512 MiB, an L2 table of its
// own).
func TestCreateQemu(t *testing.T) {
	head := []byte("UNFORMATTED-STORAGE")
	for _, size := range []int64{19, 1000001, 512<<20 + 64<<10, MaxSize} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "img")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := Create(f, size, head); err != nil {
				t.Fatal(err)
			}
			f.Close()
			testdata.QemuImgCheck(t, path)
			sectors := size &^ 511 // QEMU drops a partial last sector
			if format, got := testdata.QemuImgInfo(t, path); format != "qcow2" || got != sectors {
				t.Errorf("qemu-img info: %s of %d bytes, want qcow2 of %d", format, got, sectors)
			}
			if sectors < 64<<10 { // a disk too small for QEMU to read the head from
				return
			}
			if got := testdata.QemuRead(t, path, "qcow2", 0, int64(len(head))); !bytes.Equal(got, head) {
				t.Errorf("qemu-io reads %q at 0, want %q", got, head)
			}
			at := strconv.FormatInt(sectors-64<<10, 10)
			testdata.QemuIO(t, path, "qcow2", true, "write -P 0x5a "+at+" 64k")
			testdata.QemuImgCheck(t, path)
			testdata.QemuIO(t, path, "qcow2", false, "read -P 0x5a "+at+" 64k")
			if got := testdata.QemuRead(t, path, "qcow2", 0, int64(len(head))); !bytes.Equal(got, head) {
				t.Errorf("after QEMU's write, qemu-io reads %q at 0, want %q", got, head)
			}
		})
	}
}
