package metadata

import (
	"bytes"
	"math"
	"testing"
)

// TestPartitionTypes: each type's name parses back to it, and its header is the bytes
// AVF writes: the 19-byte instance magic and a little-endian u16 1, the 19-byte
// unformatted storage magic, or nothing.
func TestPartitionTypes(t *testing.T) {
	for _, c := range []struct {
		name   string
		typ    PartitionType
		header []byte
	}{
		{"raw", RawPartition, nil},
		{"instance", InstancePartition, []byte("Android-VM-instance\x01\x00")},
		{"encryptedstore", EncryptedStorePartition, []byte("UNFORMATTED-STORAGE")},
	} {
		got, err := ParsePartitionType(c.name)
		if err != nil || got != c.typ || got.String() != c.name {
			t.Errorf("ParsePartitionType(%q) = %v, %v", c.name, got, err)
		}
		if h := c.typ.Header(); !bytes.Equal(h, c.header) {
			t.Errorf("%s header %q, want %q", c.name, h, c.header)
		}
	}
	for _, bad := range []string{"", "Raw", "vm-instance", "android_vm_instance"} {
		if _, err := ParsePartitionType(bad); err == nil {
			t.Errorf("ParsePartitionType(%q) took it", bad)
		}
	}
	for name, want := range map[string]ImageFormat{"qcow2": QCOW2Image, "raw": RawImage} {
		if got, err := ParseImageFormat(name); err != nil || got != want || got.String() != name {
			t.Errorf("ParseImageFormat(%q) = %v, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "default", "QCOW2", "img"} {
		if _, err := ParseImageFormat(bad); err == nil {
			t.Errorf("ParseImageFormat(%q) took it", bad)
		}
	}
}

// TestPartitionProfiles: AVF makes QCOW2 partitions of the size asked up to Android
// 13, rounds the size up to 4 KiB from Android 14, and makes raw files from Android 15.
func TestPartitionProfiles(t *testing.T) {
	for _, c := range []struct {
		p      Profile
		format ImageFormat
		sizes  map[int64]int64
	}{
		{Android12, QCOW2Image, map[int64]int64{1: 1, 1000001: 1000001, 10 << 20: 10 << 20}},
		{Android13, QCOW2Image, map[int64]int64{1: 1, 1000001: 1000001, 10 << 20: 10 << 20}},
		{Android14, QCOW2Image, map[int64]int64{1: 4096, 1000001: 1003520, 10 << 20: 10 << 20, math.MaxInt64: math.MaxInt64}},
		{Android15, RawImage, map[int64]int64{1: 4096, 4096: 4096, 4097: 8192, math.MaxInt64 - 4095: math.MaxInt64 - 4095}},
	} {
		if got := c.p.PartitionImage(); got != c.format {
			t.Errorf("%s: partition image %v, want %v", c.p, got, c.format)
		}
		for in, want := range c.sizes {
			if got := c.p.PartitionSize(in); got != want {
				t.Errorf("%s: PartitionSize(%d) = %d, want %d", c.p, in, got, want)
			}
		}
	}
}
