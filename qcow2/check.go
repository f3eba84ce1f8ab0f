package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrUnsupported is matched (errors.Is) by the error for an image Check refuses.
var ErrUnsupported = errors.New("qcow2: not an image a VM's state can be")

// IsImage reports whether r starts with the QCOW2 magic.
func IsImage(r io.ReaderAt) bool {
	var m [4]byte
	_, err := r.ReadAt(m[:], 0)
	return err == nil && binary.BigEndian.Uint32(m[:]) == Magic
}

// Incompatible feature bits (QCOW2 spec, header bytes 72-79) an image may have.
const (
	featureDirty      = 1 << 0 // refcounts may be stale: QEMU repairs them on open
	featureCorrupt    = 1 << 1 // QEMU refuses to write it
	featureDataFile   = 1 << 2 // an external data file, opened by name
	featureZstd       = 1 << 3 // compression type in the header
	featureExtendedL2 = 1 << 4
)

// Check reads the header of the QCOW2 image r and refuses what a VM's state
// cannot be when its image is served without opening any other file: a backing
// file, an external data file, encryption (the VM has no key to give), a corrupt
// image, or an incompatible feature not named here. A version 2 or 3 image
// without those, compressed or with snapshots, passes.
func Check(r io.ReaderAt) error {
	hdr := make([]byte, HeaderLength)
	if _, err := r.ReadAt(hdr[:72], 0); err != nil {
		return fmt.Errorf("%w: header: %v", ErrUnsupported, err)
	}
	be := binary.BigEndian
	if be.Uint32(hdr) != Magic {
		return fmt.Errorf("%w: no QCOW2 magic", ErrUnsupported)
	}
	version := be.Uint32(hdr[4:])
	var incompatible uint64
	switch version {
	case 2:
	case 3:
		if _, err := r.ReadAt(hdr[72:80], 72); err != nil {
			return fmt.Errorf("%w: header: %v", ErrUnsupported, err)
		}
		incompatible = be.Uint64(hdr[72:])
	default:
		return fmt.Errorf("%w: version %d", ErrUnsupported, version)
	}
	switch {
	case be.Uint64(hdr[8:]) != 0:
		return fmt.Errorf("%w: it has a backing file", ErrUnsupported)
	case be.Uint32(hdr[32:]) != 0:
		return fmt.Errorf("%w: it is encrypted (method %d)", ErrUnsupported, be.Uint32(hdr[32:]))
	case incompatible&featureDataFile != 0:
		return fmt.Errorf("%w: its data is in an external file", ErrUnsupported)
	case incompatible&featureCorrupt != 0:
		return fmt.Errorf("%w: it is marked corrupt (qemu-img check -r all repairs it)", ErrUnsupported)
	case incompatible&^(featureDirty|featureZstd|featureExtendedL2) != 0:
		return fmt.Errorf("%w: incompatible features %#x", ErrUnsupported, incompatible)
	}
	return nil
}
