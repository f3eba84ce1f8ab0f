package vmfs

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/metadata"
	"vmfs/qcow2"
)

// PartitionSpec is a writable partition image for a VM (an instance image, encrypted
// storage), as `vm create-partition` makes one.
type PartitionSpec struct {
	Size    int64                  // bytes of the partition, as asked: the profile may round it up
	Type    metadata.PartitionType // what is written at its offset 0
	Profile metadata.Profile       // the Android release whose virtualization service to follow
	Format  metadata.ImageFormat   // metadata.DefaultImage: the profile's
}

// image is the size and format of the partition s asks for, once the profile has
// had its say; a size it cannot have is an ErrArgument error.
func (s PartitionSpec) image() (int64, metadata.ImageFormat, error) {
	format := s.Format
	if format == metadata.DefaultImage {
		format = s.Profile.PartitionImage()
	}
	if s.Size < 1 {
		return 0, 0, WithKind(ErrArgument, fmt.Errorf("partition size %d: want at least 1 byte", s.Size))
	}
	size := s.Profile.PartitionSize(s.Size)
	if head := s.Type.Header(); size < int64(len(head)) {
		return 0, 0, WithKind(ErrArgument, fmt.Errorf("partition size %d: an %s partition starts with %d bytes", size, s.Type, len(head)))
	}
	if format == metadata.QCOW2Image && size > qcow2.MaxSize {
		return 0, 0, WithKind(ErrArgument, fmt.Errorf("partition size %d: a QCOW2 partition is at most %d bytes (4 TiB, crosvm's layout)", size, int64(qcow2.MaxSize)))
	}
	return size, format, nil
}

// ParseSize reads a partition size: bytes, as `vm create-partition` takes them (a
// decimal u64, a leading + allowed), or a number of KiB, MiB or GiB with a K, M or G
// after it.
func ParseSize(s string) (int64, error) {
	num, unit := s, uint64(1)
	if i := len(s) - 1; i > 0 {
		switch s[i] {
		case 'K', 'k':
			num, unit = s[:i], 1<<10
		case 'M', 'm':
			num, unit = s[:i], 1<<20
		case 'G', 'g':
			num, unit = s[:i], 1<<30
		}
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(num, "+"), 10, 64)
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("size %q: want a number of bytes, or of KiB, MiB or GiB with a K, M or G after it", s)
	}
	return int64(n * unit), nil
}

// CreatePartition creates path as a new writable partition image, as `vm
// create-partition` does on s.Profile's Android: a QCOW2 image (crosvm's layout, see
// package qcow2) or a sparse raw file of the partition's size, holding at offset 0
// of its virtual disk the header of s.Type. The file is made 0600: a VM's state is
// its owner's alone.
//
// Like `vm`, it never opens what is there: a path that exists, as anything (a file, a
// directory, a device, a symlink, even a dangling one), is refused and left as it is.
// A size s cannot have is an ErrArgument error, a file that cannot be made an ErrInput
// error; either way nothing is left at path.
func CreatePartition(path string, s PartitionSpec) error {
	if _, _, err := s.image(); err != nil {
		return fmt.Errorf("create partition %s: %w", inputfile.Quote(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = errors.New("already exists")
			if st, lerr := os.Lstat(path); lerr == nil && !st.Mode().IsRegular() {
				err = fmt.Errorf("already exists, as %s", inputfile.Kind(st.Mode()))
			}
		}
		return WithKind(ErrInput, fmt.Errorf("create partition %s: %w", inputfile.Quote(path), pathless(err)))
	}
	made, err := f.Stat()
	if err == nil {
		err = FormatPartition(f, s)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if made != nil {
			removeOwn(path, made)
		}
		return WithKind(ErrInput, fmt.Errorf("create partition %s: %w", inputfile.Quote(path), pathless(err)))
	}
	return nil
}

// pathless is err without the path of an *fs.PathError, for a message that says it
// once already.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// removeOwn removes path if it is still made, the file this process made there
// (another may have replaced it since).
func removeOwn(path string, made os.FileInfo) {
	if st, err := os.Lstat(path); err == nil && os.SameFile(st, made) {
		os.Remove(path)
	}
}

// FormatPartition makes f, an open regular file, the partition image s describes,
// whatever it held, as AVF's initializeWritablePartition formats the file a client
// created and sent; the image is on disk (fsync) when it returns. A size s cannot
// have is an ErrArgument error and f is left untouched, as it is when f is not a
// regular file (an ErrInput error).
func FormatPartition(f *os.File, s PartitionSpec) error {
	size, format, err := s.image()
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return WithKind(ErrInput, err)
	}
	if !st.Mode().IsRegular() {
		return WithKind(ErrInput, fmt.Errorf("%s, not a regular file", inputfile.Kind(st.Mode())))
	}
	head := s.Type.Header()
	if format == metadata.QCOW2Image {
		err = qcow2.Create(f, size, head)
	} else {
		err = formatRaw(f, size, head)
	}
	if err == nil {
		err = f.Sync()
	}
	return err
}

// formatRaw makes f a sparse file of size bytes starting with head.
func formatRaw(f *os.File, size int64, head []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	_, err := f.WriteAt(head, 0)
	return err
}
