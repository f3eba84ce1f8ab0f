// Package qcow2 writes the QCOW2 image Android's virtualization service makes for a
// VM's writable partition (an instance image, encrypted storage) up to Android 14: a
// new, empty image of a given virtual size, laid out as crosvm's QcowFile::new lays it
// out, with a few bytes written at virtual offset 0 as AVF formats the partition.
//
// It owns that writer, the check of an existing image's header (Check) before vmfs
// serves it and the reading of its virtual size (VirtualSize): it follows no path (it
// reads and writes a File it is given) and imports no other vmfs package.
//
// # Layout
//
// The layout follows crosvm's disk/src/qcow/mod.rs (QcowHeader::create_for_size_and_path,
// QcowHeader::write_to, QcowFile::new_from_header, rebuild_refcounts and
// file_offset_write), as of 2021 to 2024, the releases whose AVF made QCOW2 images.
// crosvm writes the header, then rebuilds the refcounts into a refcount block in
// cluster 3, then, on its first refcount update, moves that block to a new cluster 4;
// the first write allocates the L2 table (cluster 5), then the data cluster (cluster 6).
// Create writes the same clusters at the same offsets, with two differences, each a
// defect `qemu-img check` reports in crosvm's image: cluster 3 is left free (crosvm
// keeps a refcount of 1 on it: a leaked cluster), and the L1 entry carries the
// COPIED flag its refcount of 1 calls for (crosvm writes L1 entries without it).
// crosvm reads either image the same way: it masks the flags off and takes a free
// cluster as free.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The header fields crosvm sets (QCOW2 spec: docs/interop/qcow2.txt in QEMU).
const (
	Magic         = 0x514649fb // "QFI\xfb"
	Version       = 3
	ClusterBits   = 16 // 64 KiB clusters, crosvm's DEFAULT_CLUSTER_BITS
	ClusterSize   = 1 << ClusterBits
	RefcountOrder = 4   // 16-bit refcounts, the only width crosvm reads
	HeaderLength  = 104 // a version 3 header with no optional fields
)

// l2Entries is how many 8-byte entries one table cluster holds.
const l2Entries = ClusterSize / 8

// MaxSize is the largest virtual size Create lays out: what the L2 tables one L1
// cluster points to map (8192 × 512 MiB). crosvm reserves one cluster for the L1
// table whatever the size, so a larger image would have its L1 table run into its
// refcount table.
const MaxSize = l2Entries * l2Entries * ClusterSize

// Where each cluster of a new image is, in crosvm's order.
const (
	headerCluster   = iota // the header, then the empty header extension list
	l1Cluster              // the L1 table
	refTableCluster        // the refcount table: one entry, the refcount block's
	_                      // free: crosvm's first refcount block, abandoned
	refBlockCluster        // the refcount block: counts of the first 32768 clusters
	l2Cluster              // the L2 table mapping virtual [0, 512 MiB), once head is written
	dataCluster            // virtual [0, 64 KiB), once head is written
)

// copied is QCOW_OFLAG_COPIED: the cluster an L1 or L2 entry points to has a
// refcount of 1, so it is written in place.
const copied = 1 << 63

// File is what Create writes: an *os.File, for one.
type File interface {
	io.WriterAt
	Truncate(size int64) error
}

// ErrSize is matched (errors.Is) by the error for a virtual size Create does not lay
// out, or a head that does not fit it.
var ErrSize = errors.New("qcow2: size out of range")

// Create makes f a new image of size virtual bytes holding head at virtual offset 0:
// it truncates f, then writes the image, sparse (only the clusters in use take
// space). An empty head writes no data cluster, as crosvm writes none for a raw
// partition. size must be in [1, MaxSize]; head must fit in size and in one cluster.
func Create(f File, size int64, head []byte) error {
	if size < 1 || size > MaxSize {
		return fmt.Errorf("%w: virtual size %d is not in [1, %d]", ErrSize, size, int64(MaxSize))
	}
	if int64(len(head)) > size || len(head) > ClusterSize {
		return fmt.Errorf("%w: %d bytes at offset 0 do not fit a virtual size of %d in one cluster", ErrSize, len(head), size)
	}
	used := []int{headerCluster, l1Cluster, refTableCluster, refBlockCluster}
	end := refBlockCluster + 1
	if len(head) > 0 {
		used = append(used, l2Cluster, dataCluster)
		end = dataCluster + 1
	}
	// Truncated first: nothing a reused file held stays in a free cluster.
	if err := f.Truncate(0); err != nil {
		return err
	}
	if err := f.Truncate(int64(end) * ClusterSize); err != nil {
		return err
	}

	be := binary.BigEndian
	hdr := make([]byte, HeaderLength)
	be.PutUint32(hdr[0:], Magic)
	be.PutUint32(hdr[4:], Version)
	// 8: backing file offset, 16: its length: none.
	be.PutUint32(hdr[20:], ClusterBits)
	be.PutUint64(hdr[24:], uint64(size))
	// 32: encryption method: none.
	be.PutUint32(hdr[36:], uint32(l1Size(size)))
	be.PutUint64(hdr[40:], l1Cluster*ClusterSize)
	be.PutUint64(hdr[48:], refTableCluster*ClusterSize)
	be.PutUint32(hdr[56:], 1) // refcount table clusters
	// 60: snapshots, 64: their offset; 72, 80, 88: incompatible, compatible and
	// autoclear feature bits: none.
	be.PutUint32(hdr[96:], RefcountOrder)
	be.PutUint32(hdr[100:], HeaderLength)
	// The header extensions that follow end at once: an end marker of 8 zero bytes,
	// which the truncated file already holds.

	refTable := be.AppendUint64(nil, refBlockCluster*ClusterSize)
	refBlock := make([]byte, 2*end)
	for _, c := range used {
		be.PutUint16(refBlock[2*c:], 1)
	}
	type chunk struct {
		off  int64
		data []byte
	}
	writes := []chunk{
		{headerCluster * ClusterSize, hdr},
		{refTableCluster * ClusterSize, refTable},
		{refBlockCluster * ClusterSize, refBlock},
	}
	if len(head) > 0 {
		writes = append(writes,
			chunk{l1Cluster * ClusterSize, be.AppendUint64(nil, l2Cluster*ClusterSize|copied)},
			chunk{l2Cluster * ClusterSize, be.AppendUint64(nil, dataCluster*ClusterSize|copied)},
			chunk{dataCluster * ClusterSize, head})
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			return err
		}
	}
	return nil
}

// l1Size is the number of L1 entries of an image of size virtual bytes: one per
// L2 table, each mapping l2Entries clusters.
func l1Size(size int64) int64 {
	clusters := (size + ClusterSize - 1) / ClusterSize
	return (clusters + l2Entries - 1) / l2Entries
}

// VirtualSize is the virtual size of the QCOW2 image r, and false when r does not
// start with the QCOW2 magic (a raw image).
func VirtualSize(r io.ReaderAt) (int64, bool, error) {
	var h [32]byte
	if _, err := r.ReadAt(h[:], 0); err != nil && err != io.EOF {
		return 0, false, err
	}
	if binary.BigEndian.Uint32(h[0:]) != Magic {
		return 0, false, nil
	}
	size := binary.BigEndian.Uint64(h[24:])
	if size > 1<<62 {
		return 0, true, fmt.Errorf("%w: a virtual size of %d bytes", ErrSize, size)
	}
	return int64(size), true, nil
}
