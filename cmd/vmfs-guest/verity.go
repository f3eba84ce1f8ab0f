package main

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"vmfs/metadata"
)

// idsigSize returns the size of the .idsig at the start of a zero-padded partition: the
// four length-prefixed fields (version, hashing info, signing info, merkle tree) end there.
func idsigSize(r io.ReaderAt, partSize int64) (int64, error) {
	var u [4]byte
	off := int64(4) // after the version
	for _, field := range []string{"hashing info", "signing info", "merkle tree"} {
		if err := readFullAt(r, u[:], off); err != nil {
			return 0, fmt.Errorf("read idsig %s length: %w", field, err)
		}
		off += 4 + int64(binary.LittleEndian.Uint32(u[:]))
		if off > partSize {
			return 0, fmt.Errorf("idsig %s runs to byte %d, past the %d-byte partition", field, off, partSize)
		}
	}
	return off, nil
}

// readIdsig parses the idsig partition and checks that only zeros follow the idsig.
func readIdsig(p partition, r io.ReaderAt, partSize int64) (*metadata.Idsig, error) {
	size, err := idsigSize(r, partSize)
	if err != nil {
		return nil, err
	}
	sig, err := metadata.NewIdsig(p.Dev, r, size)
	if err != nil {
		return nil, err
	}
	pad := make([]byte, partSize-size)
	if err := readFullAt(r, pad, size); err != nil {
		return nil, fmt.Errorf("read idsig padding: %w", err)
	}
	for i, b := range pad {
		if b != 0 {
			return nil, fmt.Errorf("idsig padding byte %d is %#x, not zero", size+int64(i), b)
		}
	}
	return sig, nil
}

// attachLoop puts the byte range [off, off+size) of backing on a free read-only loop
// device, with LOOP_CONFIGURE as apkdmverity does, and returns the loop device's node.
func attachLoop(backing string, off, size int64) (string, uint64, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", 0, err
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return "", 0, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	b, err := os.Open(backing)
	if err != nil {
		return "", 0, err
	}
	defer b.Close()
	l, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", 0, err
	}
	defer l.Close()
	cfg := unix.LoopConfig{
		Fd:   uint32(b.Fd()),
		Size: blockSize,
		Info: unix.LoopInfo64{Offset: uint64(off), Sizelimit: uint64(size), Flags: unix.LO_FLAGS_READ_ONLY},
	}
	if err := unix.IoctlLoopConfigure(int(l.Fd()), &cfg); err != nil {
		return "", 0, fmt.Errorf("LOOP_CONFIGURE %s on %s: %w", dev, backing, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(l.Fd()), &st); err != nil {
		return "", 0, fmt.Errorf("stat %s: %w", dev, err)
	}
	return dev, st.Rdev, nil
}

// dmIoctl sends one device-mapper ioctl for the device called name; a non-empty table
// (one dm_target_spec and its parameters) follows the header, as DM_TABLE_LOAD wants.
// It returns the header the kernel wrote back.
func dmIoctl(ctl *os.File, req uint, name string, flags uint32, table []byte) (*unix.DmIoctl, error) {
	h := &unix.DmIoctl{
		Version:   [3]uint32{unix.DM_VERSION_MAJOR, 0, 0},
		Data_size: uint32(unix.SizeofDmIoctl + len(table)),
		Flags:     flags,
	}
	if len(name) >= len(h.Name) {
		return nil, fmt.Errorf("device-mapper name %q is longer than %d bytes", name, len(h.Name)-1)
	}
	copy(h.Name[:], name)
	if len(table) > 0 {
		h.Data_start = unix.SizeofDmIoctl
		h.Target_count = 1
	}
	buf, err := binary.Append(nil, binary.NativeEndian, h)
	if err != nil {
		return nil, err
	}
	buf = append(buf, table...)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), uintptr(req), uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return nil, errno
	}
	if _, err := binary.Decode(buf, binary.NativeEndian, h); err != nil {
		return nil, err
	}
	return h, nil
}

// verityTable is the DM_TABLE_LOAD payload for one "verity" target over the whole data
// device (formats.md 7.3; the kernel's Documentation/admin-guide/device-mapper/verity.rst):
// a dm_target_spec, then the NUL-terminated parameters, padded to 8 bytes.
func verityTable(dataDev, hashDev string, dataSize int64, root, salt []byte) ([]byte, string, error) {
	saltHex := "-" // the kernel's word for no salt; an empty string would shift the fields
	if len(salt) > 0 {
		saltHex = fmt.Sprintf("%x", salt)
	}
	params := fmt.Sprintf("1 %s %s %d %d %d 0 sha256 %x %s",
		dataDev, hashDev, blockSize, blockSize, dataSize/blockSize, root, saltHex)
	spec := unix.DmTargetSpec{Length: uint64(dataSize / 512)}
	copy(spec.Target_type[:], "verity")
	size := binary.Size(spec) + len(params) + 1
	spec.Next = uint32((size + 7) &^ 7)
	b, err := binary.Append(nil, binary.NativeEndian, &spec)
	if err != nil {
		return nil, "", err
	}
	b = append(b, params...)
	return append(b, make([]byte, int(spec.Next)-len(b))...), params, nil
}

// createVerity creates the read-only device-mapper device name from table, activates it
// and returns its node under /dev/mapper.
func createVerity(name string, table []byte) (string, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	h, err := dmIoctl(ctl, unix.DM_DEV_CREATE, name, 0, nil)
	if err != nil {
		return "", fmt.Errorf("DM_DEV_CREATE %s: %w", name, err)
	}
	if _, err := dmIoctl(ctl, unix.DM_TABLE_LOAD, name, unix.DM_READONLY_FLAG, table); err != nil {
		return "", fmt.Errorf("DM_TABLE_LOAD %s: %w", name, err)
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes the device, making the loaded table live.
	if _, err := dmIoctl(ctl, unix.DM_DEV_SUSPEND, name, 0, nil); err != nil {
		return "", fmt.Errorf("DM_DEV_SUSPEND (resume) %s: %w", name, err)
	}
	// devtmpfs names the node dm-<minor>; udev's /dev/mapper/<name> link is made here.
	node := "/dev/mapper/" + name
	if err := unix.Mknod(node, unix.S_IFBLK|0o400, int(h.Dev)); err != nil {
		return "", fmt.Errorf("mknod %s: %w", node, err)
	}
	return node, nil
}

// withKernelLog adds the kernel's device-mapper messages to err, keeping it unwrappable.
func withKernelLog(err error) error {
	if lines := kernelLog("device-mapper", "verity"); len(lines) > 0 {
		return fmt.Errorf("%w; kernel: %s", err, strings.Join(lines, "; "))
	}
	return err
}

// checkVerity does what apkdmverity does for an APK (formats.md 7.3): a loop device over
// the merkle tree inside the idsig partition, a dm-verity device called name over the APK
// partition with the idsig's root hash, then reads the verified device end to end. A
// block that does not match the tree makes the kernel fail the read with EIO. It returns
// the verified device's node.
func checkVerity(name string, apk, idsig partition) (string, string, error) {
	f, err := os.Open(idsig.Dev)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	idsigPart, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", "", err
	}
	sig, err := readIdsig(idsig, f, idsigPart)
	if err != nil {
		return "", "", err
	}
	apkSize, err := deviceSize(apk.Dev)
	if err != nil {
		return "", "", err
	}
	if apkSize == 0 || apkSize%blockSize != 0 {
		return "", "", fmt.Errorf("%s is %d bytes, not a non-zero multiple of %d", apk, apkSize, blockSize)
	}
	loop, loopDev, err := attachLoop(idsig.Dev, sig.TreeOffset, sig.TreeSize)
	if err != nil {
		return "", "", err
	}
	hashDev := fmt.Sprintf("%d:%d", unix.Major(loopDev), unix.Minor(loopDev))
	table, params, err := verityTable(apk.majMin(), hashDev, apkSize, sig.RootHash, sig.Salt)
	if err != nil {
		return "", "", err
	}
	node, err := createVerity(name, table)
	if err != nil {
		return "", "", withKernelLog(fmt.Errorf("table %q: %w", params, err))
	}
	n, err := readAll(node)
	if err != nil {
		return "", "", withKernelLog(err)
	}
	if n != apkSize {
		return "", "", fmt.Errorf("read %d bytes from %s, want %d", n, node, apkSize)
	}
	return fmt.Sprintf("verity %q (tree on %s = %s bytes %d..%d): read all %d bytes of %s",
		params, loop, idsig.Dev, sig.TreeOffset, sig.TreeOffset+sig.TreeSize, n, node), node, nil
}

// checkExtraAPK does for extra APK i what microdroid_manager does (Android 13+): a
// dm-verity device extra-apk-<i> from its idsig, read end to end, then the zip over the
// verified, zero-padded device, as zipfuse mounts it at /mnt/extra-apk/<i>.
func checkExtraAPK(i int, apk, idsig partition) (string, error) {
	reason, node, err := checkVerity(metadata.ExtraAPKLabel(i), apk, idsig)
	if err != nil {
		return "", err
	}
	f, err := os.Open(node)
	if err != nil {
		return "", err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return "", fmt.Errorf("open extra apk %d zip over %s: %w", i, node, err)
	}
	return fmt.Sprintf("%s; zip of %d entries opened over it", reason, len(zr.File)), nil
}

func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// readAll reads dev to its end and returns how many bytes it read.
func readAll(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := f.Read(buf)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return off, nil
		}
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return off, fmt.Errorf("read %s at byte %d (block %d): %w", dev, off, off/blockSize, err)
		}
	}
}
