// Package layout turns resolved inputs into a Disk: for every partition an ordered
// list of extents (a slice of an original file, zeros, or synthesized bytes), the GPT
// header and footer, the whole flat disk as extents, the crosvm composite
// descriptor that points at the partitions, and the extent descriptors (a VMDK
// and a composite) that point at the originals' sectors and synthesized pieces.
//
// It is pure: it opens no files (sources are named by index and read through
// io.ReaderAt by the caller's Reader), takes metadata as bytes rather than types, and
// imports of vmfs only metadata's partition labels (one set for the host, the disk
// and the guest); no FUSE and no logger. The same Disk drives every
// reader, so NewReader is the reference the zero-copy FUSE paths must equal.
//
// # Disk format
//
// The start follows crosvm and virtualizationservice: a 20480-byte header (protective
// MBR, GPT header at LBA 1, 128 entries of 128 bytes at LBA 2), partitions from byte
// 20480, each a 4 KiB multiple. The end is spec-correct, unlike crosvm's 2021 writer:
// the backup entries and then the backup header in the very last LBA, which names its
// own entries LBA, so `sgdisk -v` finds no problems.
//
// The payload disk comes in the formats Android used (Format): mid-2021, partition 1
// "metadata" and each APEX followed by its size trailer; from Android 13, partition 1
// "payload-metadata", each APEX zero-padded like every other partition, and extra APKs
// with their idsigs after the APK's. Which release wants which is the metadata
// package's Profile; layout takes the label and the choice as plain values.
package layout
