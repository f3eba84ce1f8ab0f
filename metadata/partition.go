package metadata

import (
	"encoding/binary"
	"fmt"
)

// PartitionType is what a new writable partition of a VM holds, as AVF's PartitionType
// (`vm create-partition --type`): virtualizationservice's initializeWritablePartition
// writes its Header at offset 0 of the new partition's virtual disk.
type PartitionType uint8

const (
	RawPartition            PartitionType = iota // "raw": nothing, zeros
	InstancePartition                            // "instance": the instance image (vm-instance)
	EncryptedStorePartition                      // "encryptedstore": storage the guest formats on first boot
)

var partitionTypes = [...]string{RawPartition: "raw", InstancePartition: "instance", EncryptedStorePartition: "encryptedstore"}

// ParsePartitionType returns the type called name: "raw", "instance" or
// "encryptedstore".
func ParsePartitionType(name string) (PartitionType, error) {
	for t, n := range partitionTypes {
		if n == name {
			return PartitionType(t), nil
		}
	}
	return 0, fmt.Errorf("unknown partition type %q: want raw, instance or encryptedstore", name)
}

func (t PartitionType) String() string { return partitionTypes[t] }

// The instance image's header: Microdroid's manager refuses a vm-instance partition
// that does not start with it (virtualizationservice's ANDROID_VM_INSTANCE_MAGIC and
// ANDROID_VM_INSTANCE_VERSION).
const (
	InstanceMagic   = "Android-VM-instance"
	InstanceVersion = 1 // little-endian u16 after the magic
)

// UnformattedStorageMagic marks encrypted storage the guest has not formatted yet
// (encryptedstore's UNFORMATTED_STORAGE_MAGIC): it formats the partition when it finds it.
const UnformattedStorageMagic = "UNFORMATTED-STORAGE"

// Header is what AVF writes at offset 0 of a new partition of type t: the instance
// magic and version, the unformatted storage magic, or nothing.
func (t PartitionType) Header() []byte {
	switch t {
	case InstancePartition:
		return binary.LittleEndian.AppendUint16([]byte(InstanceMagic), InstanceVersion)
	case EncryptedStorePartition:
		return []byte(UnformattedStorageMagic)
	}
	return nil
}

// ImageFormat is the file format of a writable partition image.
type ImageFormat uint8

const (
	DefaultImage ImageFormat = iota // the profile's (Profile.PartitionImage)
	QCOW2Image                      // QCOW2, as crosvm's QcowFile::new lays it out
	RawImage                        // a sparse file of the partition's size
)

var imageFormats = [...]string{DefaultImage: "default", QCOW2Image: "qcow2", RawImage: "raw"}

// ParseImageFormat returns the format called name: "qcow2" or "raw".
func ParseImageFormat(name string) (ImageFormat, error) {
	switch name {
	case "qcow2":
		return QCOW2Image, nil
	case "raw":
		return RawImage, nil
	}
	return 0, fmt.Errorf("unknown image format %q: want qcow2 or raw", name)
}

func (f ImageFormat) String() string { return imageFormats[f] }
