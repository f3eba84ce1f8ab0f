package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"

	"vmfs/metadata"
	"vmfs/verdict"
)

// The guest's boot record in vm-instance, after the instance header (a format of
// the test guest's own; Microdroid keeps its instance data there): at
// bootRecordOffset, bootRecordMagic, then the boot count and the CRC-32 (IEEE) of
// both, little-endian u32s.
const (
	bootRecordOffset = 4096
	bootRecordMagic  = "VMFSBOOT"
	bootRecordSize   = len(bootRecordMagic) + 8
)

// storageMarker is what the guest writes at offset 0 of encryptedstore when it
// formats it, as encryptedstore formats a partition it finds UNFORMATTED-STORAGE.
const storageMarker = "VMFS-GUEST-STORAGE-1"

// checkInstance checks the instance header as Microdroid's manager does (magic,
// version), reads the boot record after it and writes the next one, on disk
// (fsync) before it returns.
func checkInstance(p partition) (*verdict.Instance, error) {
	f, err := os.OpenFile(p.Dev, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, len(metadata.InstanceMagic)+2)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("%s: header: %w", p, err)
	}
	if string(head[:len(metadata.InstanceMagic)]) != metadata.InstanceMagic {
		return nil, fmt.Errorf("%s: header %q, want the magic %q", p, head, metadata.InstanceMagic)
	}
	if v := binary.LittleEndian.Uint16(head[len(metadata.InstanceMagic):]); v != metadata.InstanceVersion {
		return nil, fmt.Errorf("%s: instance version %d, want %d", p, v, metadata.InstanceVersion)
	}
	rec := make([]byte, bootRecordSize)
	if _, err := f.ReadAt(rec, bootRecordOffset); err != nil {
		return nil, fmt.Errorf("%s: boot record: %w", p, err)
	}
	var st verdict.Instance
	switch {
	case bytes.Equal(rec, make([]byte, bootRecordSize)): // none yet: a first boot
	case string(rec[:len(bootRecordMagic)]) != bootRecordMagic:
		return nil, fmt.Errorf("%s: boot record %q: not the guest's", p, rec)
	default:
		n := len(bootRecordMagic)
		if sum := binary.LittleEndian.Uint32(rec[n+4:]); sum != crc32.ChecksumIEEE(rec[:n+4]) {
			return nil, fmt.Errorf("%s: boot record %x: checksum %08x, want %08x", p, rec, sum, crc32.ChecksumIEEE(rec[:n+4]))
		}
		st.Found = binary.LittleEndian.Uint32(rec[n:])
	}
	st.Boots = st.Found + 1
	rec = binary.LittleEndian.AppendUint32([]byte(bootRecordMagic), st.Boots)
	rec = binary.LittleEndian.AppendUint32(rec, crc32.ChecksumIEEE(rec))
	if _, err := f.WriteAt(rec, bootRecordOffset); err != nil {
		return nil, fmt.Errorf("%s: writing the boot record: %w", p, err)
	}
	// The host keeps what the guest wrote only once the VMM has flushed it.
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%s: fsync: %w", p, err)
	}
	return &st, nil
}

// checkStorage formats encrypted storage the host left UNFORMATTED-STORAGE, or
// finds the guest's own marker from an earlier boot.
func checkStorage(p partition) (*verdict.Storage, error) {
	f, err := os.OpenFile(p.Dev, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, max(len(storageMarker), len(metadata.UnformattedStorageMagic)))
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	switch {
	case bytes.HasPrefix(head, []byte(storageMarker)):
		return &verdict.Storage{Formatted: true}, nil
	case !bytes.HasPrefix(head, []byte(metadata.UnformattedStorageMagic)):
		return nil, fmt.Errorf("%s: starts %q, neither %q nor the guest's marker", p, head, metadata.UnformattedStorageMagic)
	}
	if _, err := f.WriteAt([]byte(storageMarker), 0); err != nil {
		return nil, fmt.Errorf("%s: formatting: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%s: fsync: %w", p, err)
	}
	return &verdict.Storage{}, nil
}

// checkState checks the VM's state partitions, those it has: the instance image
// and encrypted storage.
func checkState(r *report, parts map[string]partition) {
	if p, ok := parts[metadata.InstanceLabel]; ok {
		r.step("instance", func() (string, error) {
			st, err := checkInstance(p)
			if err != nil {
				return "", err
			}
			r.setState(func(v *verdict.Verdict) { v.Instance = st })
			return fmt.Sprintf("%s: boot record %d found, %d written", p, st.Found, st.Boots), nil
		})
	}
	if p, ok := parts[metadata.StorageLabel]; ok {
		r.step("storage", func() (string, error) {
			st, err := checkStorage(p)
			if err != nil {
				return "", err
			}
			r.setState(func(v *verdict.Verdict) { v.Storage = st })
			return fmt.Sprintf("%s: formatted before: %t", p, st.Formatted), nil
		})
	}
}
