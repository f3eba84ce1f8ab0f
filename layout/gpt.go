package layout

import (
	"encoding/binary"
	"hash/crc32"
	"unicode/utf16"

	"github.com/google/uuid"
)

// GPT geometry (UEFI spec 2.10 ch. 5; constants as in crosvm disk/src/gpt.rs).
const (
	SectorSize     = 512
	PartitionAlign = 4096 // every partition starts and ends on a 4 KiB boundary
	MaxPartitions  = 128  // entries in the table
	MaxLabelUnits  = 36   // UTF-16 code units in an entry's name

	entrySize   = 128
	entriesSize = MaxPartitions * entrySize // 16384 bytes, 32 sectors
	gptHdrSize  = 92
	// HeaderSize is the disk's first 40 sectors: MBR, GPT header, entries, and
	// zeros up to the first 4 KiB-aligned partition.
	HeaderSize = 20480
	// FooterSize is the disk's last 40 sectors: zeros that keep the disk 4 KiB
	// aligned, the backup entries, then the backup header in the last LBA.
	FooterSize = 20480
	footerPad  = FooterSize - entriesSize - SectorSize // 3584
)

// LinuxFSType is the partition type GUID virtualizationservice gives every partition.
var LinuxFSType = uuid.MustParse("0FC63DAF-8483-4772-8E79-3D69D8477DE4")

// putGUID writes u in GPT's mixed-endian form: the first three fields little-endian.
func putGUID(b []byte, u uuid.UUID) {
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	copy(b[8:16], u[8:])
}

func align4K(n int64) int64 { return (n + PartitionAlign - 1) &^ (PartitionAlign - 1) }

// entries builds the 16384-byte partition entry array.
func entries(parts []Partition) []byte {
	b := make([]byte, entriesSize)
	for i, p := range parts {
		e := b[i*entrySize : (i+1)*entrySize]
		putGUID(e[0:16], LinuxFSType)
		putGUID(e[16:32], p.GUID)
		binary.LittleEndian.PutUint64(e[32:], uint64(p.Offset/SectorSize))            // first LBA
		binary.LittleEndian.PutUint64(e[40:], uint64((p.Offset+p.Size)/SectorSize-1)) // last LBA, inclusive
		// attributes (48..56) stay 0
		for j, u := range utf16.Encode([]rune(p.Label)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	return b
}

// gptHeader is one copy of the GPT header; fields as in UEFI spec table 5-5.
type gptHeader struct {
	current, backup   uint64 // this copy's LBA, the other copy's LBA
	firstUse, lastUse uint64 // usable LBA range for partitions, inclusive
	entriesLBA        uint64 // where this copy's entry array starts
	diskGUID          uuid.UUID
	entriesCRC        uint32
}

// marshal returns the header in a zero-padded 512-byte sector.
func (h *gptHeader) marshal() []byte {
	b := make([]byte, SectorSize)
	copy(b[0:8], "EFI PART")
	binary.LittleEndian.PutUint32(b[8:], 0x00010000) // revision 1.0
	binary.LittleEndian.PutUint32(b[12:], gptHdrSize)
	// 16: header CRC, filled last; 20: reserved
	binary.LittleEndian.PutUint64(b[24:], h.current)
	binary.LittleEndian.PutUint64(b[32:], h.backup)
	binary.LittleEndian.PutUint64(b[40:], h.firstUse)
	binary.LittleEndian.PutUint64(b[48:], h.lastUse)
	putGUID(b[56:72], h.diskGUID)
	binary.LittleEndian.PutUint64(b[72:], h.entriesLBA)
	binary.LittleEndian.PutUint32(b[80:], MaxPartitions)
	binary.LittleEndian.PutUint32(b[84:], entrySize)
	binary.LittleEndian.PutUint32(b[88:], h.entriesCRC)
	binary.LittleEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[:gptHdrSize]))
	return b
}

// protectiveMBR returns sector 0: one 0xEE entry covering LBA 1 to the last LBA.
func protectiveMBR(diskSize int64) []byte {
	b := make([]byte, SectorSize)
	e := b[446:462]
	e[2] = 0x02 // CHS of LBA 1, as sgdisk and the UEFI spec write it
	e[4] = 0xEE // GPT protective
	e[5], e[6], e[7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(min(diskSize/SectorSize-1, 0xFFFFFFFF)))
	b[510], b[511] = 0x55, 0xAA
	return b
}

// gptImages returns the header and footer bytes for parts laid out up to end,
// the byte where the footer starts.
func gptImages(parts []Partition, diskGUID uuid.UUID, end int64) (header, footer []byte) {
	ents := entries(parts)
	diskSize := end + FooterSize
	lastLBA := uint64(diskSize/SectorSize - 1)
	backupEntries := uint64((end + footerPad) / SectorSize)
	h := gptHeader{
		current: 1, backup: lastLBA,
		firstUse: HeaderSize / SectorSize, lastUse: backupEntries - 1,
		entriesLBA: 2, diskGUID: diskGUID, entriesCRC: crc32.ChecksumIEEE(ents),
	}
	header = make([]byte, HeaderSize)
	copy(header, protectiveMBR(diskSize))
	copy(header[SectorSize:], h.marshal())
	copy(header[2*SectorSize:], ents)

	h.current, h.backup, h.entriesLBA = lastLBA, 1, backupEntries
	footer = make([]byte, FooterSize)
	copy(footer[footerPad:], ents)
	copy(footer[footerPad+entriesSize:], h.marshal())
	return header, footer
}
