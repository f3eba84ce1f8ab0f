package vmfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vmfs/metadata"
	"vmfs/testdata"
)

// TestFormatPartitionOpenFile: FormatPartition formats a file through its descriptor
// alone, as a service formats one a client created and sent: the file, whose name is
// gone and which held something, becomes the image (QCOW2 or raw), read here through
// /proc/<pid>/fd by QEMU.
func TestFormatPartitionOpenFile(t *testing.T) {
	for _, format := range []metadata.ImageFormat{metadata.QCOW2Image, metadata.RawImage} {
		t.Run(format.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "instance.img")
			if err := os.WriteFile(path, bytes.Repeat([]byte("junk"), 1<<18), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			s := PartitionSpec{Size: 10 << 20, Type: metadata.InstancePartition, Format: format}
			if err := FormatPartition(f, s); err != nil {
				t.Fatal(err)
			}
			fd := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
			if got, size := testdata.QemuImgInfo(t, fd); got != format.String() || size != s.Size {
				t.Errorf("qemu-img info: %s of %d bytes, want %s of %d", got, size, format, s.Size)
			}
			if format == metadata.QCOW2Image {
				testdata.QemuImgCheck(t, fd)
			}
			want := append(metadata.InstancePartition.Header(), make([]byte, 11)...)
			if got := testdata.QemuRead(t, fd, format.String(), 0, 32); !bytes.Equal(got, want) {
				t.Errorf("qemu-io reads %q, want %q", got, want)
			}
		})
	}
}

// TestFormatPartitionRefuses: FormatPartition writes nothing into a file it is handed
// that is not a regular file (a FIFO, a character device), nor into one for a size out
// of range (ErrArgument).
func TestFormatPartitionRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{fifo: "a FIFO (named pipe), not a regular file"}
	if os.Geteuid() == 0 { // mknod: a null device of this test's own, never /dev's
		var null unix.Stat_t
		if err := unix.Stat("/dev/null", &null); err != nil {
			t.Fatal(err)
		}
		dev := filepath.Join(dir, "null")
		if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(null.Rdev)); err != nil {
			t.Fatal(err)
		}
		paths[dev] = "a character device, not a regular file"
	}
	for path, want := range paths {
		f, err := os.OpenFile(path, os.O_RDWR, 0) // O_RDWR: a FIFO opens without a reader
		if err != nil {
			t.Fatal(err)
		}
		err = FormatPartition(f, PartitionSpec{Size: 1 << 20, Type: metadata.InstancePartition})
		f.Close()
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), want) {
			t.Errorf("FormatPartition(%s): %v, want ErrInput saying %q", path, err, want)
		}
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range []PartitionSpec{
		{Size: 0},
		{Size: 20, Type: metadata.InstancePartition},
		{Size: 18, Type: metadata.EncryptedStorePartition, Profile: metadata.Android13},
		{Size: 4<<40 + 1, Format: metadata.QCOW2Image},
	} {
		if err := FormatPartition(f, s); !errors.Is(err, ErrArgument) {
			t.Errorf("FormatPartition(%+v): %v, want ErrArgument", s, err)
		}
	}
	if got, _ := os.ReadFile(file); string(got) != "kept" {
		t.Errorf("the file changed: %q", got)
	}
}

// TestParseSize: bytes as `vm` reads a u64 (a leading + too), or K, M, G multiples of
// 1024; anything else, or more than an int64, is refused.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "10485760": 10 << 20, "+5": 5, "1K": 1 << 10, "4k": 4 << 10, "10M": 10 << 20,
		"1G": 1 << 30, "8589934591G": 8589934591 << 30, "9223372036854775807": 1<<63 - 1,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "-1", "-0", "++5", "1T", "1.5M", "0x10", "10 M", "1KB",
		"9223372036854775808", "8589934592G"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
