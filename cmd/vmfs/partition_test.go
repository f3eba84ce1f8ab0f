package main

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"vmfs/testdata"
)

// What AVF writes at offset 0 of each type of partition (virtualizationservice's
// format_as_android_vm_instance and format_as_encryptedstore).
var partitionHeaders = map[string][]byte{
	"raw":            nil,
	"instance":       []byte("Android-VM-instance\x01\x00"),
	"encryptedstore": []byte("UNFORMATTED-STORAGE"),
}

// createPartition runs create-partition and fails the test unless it succeeds.
func createPartition(t *testing.T, args ...string) {
	t.Helper()
	if r := runVmfs(t, "", append([]string{"create-partition"}, args...)...); r.code != 0 || r.stderr != "" {
		t.Fatalf("create-partition %q: exit %d: %s", args, r.code, r.stderr)
	}
}

// checkPartition checks the image at path as QEMU sees it: its format, its size
// (whole sectors: QEMU rounds a QCOW2 image's down, a raw file's up), clean for
// qemu-img check, and header followed by zeros at offset 0. size is the exact size,
// read from the QCOW2 header or the raw file's length.
func checkPartition(t *testing.T, path, format string, size int64, header []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	qemuSize := size &^ 511
	if format == "raw" {
		qemuSize = (size + 511) &^ 511
		if st.Size() != size {
			t.Errorf("raw file of %d bytes, want %d", st.Size(), size)
		}
		if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > 64<<10 {
			t.Errorf("raw file takes %d bytes of disk: not sparse", used)
		}
	} else {
		testdata.QemuImgCheck(t, path)
		hdr := make([]byte, 32)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReadAt(hdr, 0)
		f.Close()
		if got := binary.BigEndian.Uint64(hdr[24:]); err != nil || got != uint64(size) {
			t.Errorf("QCOW2 header size %d (%v), want %d", got, err, size)
		}
	}
	if got, gotSize := testdata.QemuImgInfo(t, path); got != format || gotSize != qemuSize {
		t.Errorf("qemu-img info: %s of %d bytes, want %s of %d", got, gotSize, format, qemuSize)
	}
	want := append(bytes.Clone(header), make([]byte, 32-len(header))...)
	if got := testdata.QemuRead(t, path, format, 0, 32); !bytes.Equal(got, want) {
		t.Errorf("qemu-io reads % x at 0, want % x", got, want)
	}
}

// TestCreatePartition: for every type, format and size (1 MiB, 10 MiB, an odd size, 1
// GiB), create-partition makes a 0600 image that QEMU takes as it is: of the format and
// size, clean for qemu-img check (QCOW2), sparse (raw), with the type's header at offset
// 0 followed by zeros; and one QEMU can extend: after qemu-io writes 64 KiB near 1 MiB,
// it is still clean, holds those bytes, and the header is intact.
func TestCreatePartition(t *testing.T) {
	sizes := map[string]int64{"1M": 1 << 20, "10M": 10 << 20, "1000001": 1000001, "1G": 1 << 30}
	for typ, header := range partitionHeaders {
		for _, format := range []string{"qcow2", "raw"} {
			for arg, size := range sizes {
				t.Run(typ+"/"+format+"/"+arg, func(t *testing.T) {
					path := filepath.Join(t.TempDir(), "part.img")
					args := []string{"--type", typ, path, arg}
					if format == "raw" {
						args = append([]string{"--format", "raw"}, args...)
					}
					createPartition(t, args...)
					checkPartition(t, path, format, size, header)

					at := strconv.FormatInt(min(1<<20, size&^511-64<<10), 10)
					testdata.QemuIO(t, path, format, true, "write -P 0x5a "+at+" 64k")
					testdata.QemuIO(t, path, format, false, "read -P 0x5a "+at+" 64k")
					if format == "qcow2" {
						testdata.QemuImgCheck(t, path)
					}
					want := append(bytes.Clone(header), make([]byte, 32-len(header))...)
					if got := testdata.QemuRead(t, path, format, 0, 32); !bytes.Equal(got, want) {
						t.Errorf("after QEMU's write, qemu-io reads % x at 0, want % x", got, want)
					}
				})
			}
		}
	}
}

// TestCreatePartitionProfiles: --profile follows that release's vm: android12 and 13
// make a QCOW2 image of the size asked, android14 rounds the size up to 4 KiB, and
// android15 makes a raw file of the rounded size (--format still picks).
func TestCreatePartitionProfiles(t *testing.T) {
	for _, c := range []struct {
		profile string
		format  string // --format; "": the profile's
		want    string
		size    int64 // for 1000001 bytes asked
	}{
		{"android12", "", "qcow2", 1000001},
		{"android13", "", "qcow2", 1000001},
		{"android14", "", "qcow2", 1003520},
		{"android15", "", "raw", 1003520},
		{"android15", "qcow2", "qcow2", 1003520},
		{"android13", "raw", "raw", 1000001},
	} {
		t.Run(c.profile+"/"+c.format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "storage.img")
			args := []string{"--profile", c.profile, "--type", "encryptedstore", path, "1000001"}
			if c.format != "" {
				args = append([]string{"--format", c.format}, args...)
			}
			createPartition(t, args...)
			checkPartition(t, path, c.want, c.size, partitionHeaders["encryptedstore"])
		})
	}
}

// TestCreatePartitionRefuses: create-partition refuses, with one line naming it (exit
// 3), a path that exists as anything (a file, a directory, a FIFO, a socket, a device,
// a symlink to a file or a device, a dangling symlink), and leaves it as it was; a bad
// type, format, profile or size, or the wrong count of arguments, is a usage error
// (exit 2); a file it cannot make (no directory, a file size limit) is exit 3. None
// leaves a file behind.
func TestCreatePartitionRefuses(t *testing.T) {
	testdata.RequireRoot(t) // mknod
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("an instance image already"), 0o600); err != nil {
		t.Fatal(err)
	}
	var null unix.Stat_t
	if err := unix.Stat("/dev/null", &null); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(dir, "null")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(null.Rdev)); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	symlink := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, path, says string }{
		{"a file", file, "already exists"},
		{"a character device", dev, "already exists, as a character device"},
		{"a FIFO", fifo, "already exists, as a FIFO"},
		{"a directory", sub, "already exists, as a directory"},
		{"a socket", filepath.Join(dir, "sock"), "already exists, as a socket"},
		{"a symlink to a file", symlink("link", file), "already exists, as a symlink"},
		{"a symlink to a device", symlink("linknull", dev), "already exists, as a symlink"},
		{"a dangling symlink", symlink("dangling", filepath.Join(dir, "gone")), "already exists, as a symlink"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := snapshotDir(t, dir)
			checkBad(t, []string{"create-partition", "--type", "instance", c.path, "10M"}, nil, exitInput, []string{c.path, c.says}, "")
			if after := snapshotDir(t, dir); !maps.Equal(after, before) {
				t.Errorf("%s changed:\nbefore %v\nafter  %v", dir, before, after)
			}
		})
	}

	out := t.TempDir()
	img := filepath.Join(out, "inst.img")
	prlimit := []string{testdata.RequireTool(t, "prlimit"), "--fsize=300000", vmfsBin}
	for _, c := range []struct {
		name string
		args []string
		wrap []string
		code int
		says string
	}{
		{"an unknown type", []string{"--type", "bogus", img, "10M"}, nil, exitUsage, "--type"},
		{"an unknown format", []string{"--format", "vmdk", img, "10M"}, nil, exitUsage, "--format"},
		{"an unknown profile", []string{"--profile", "android16", img, "10M"}, nil, exitUsage, "--profile"},
		{"a size with an unknown unit", []string{img, "10T"}, nil, exitUsage, `size "10T"`},
		{"a negative size", []string{"--", img, "-1"}, nil, exitUsage, `size "-1"`},
		{"an empty size", []string{img, ""}, nil, exitUsage, `size ""`},
		{"no size", []string{img}, nil, exitUsage, "want 2 arguments"},
		{"a size of 0", []string{img, "0"}, nil, exitUsage, "partition size 0"},
		{"a size below the header", []string{"--type", "instance", img, "20"}, nil, exitUsage, "starts with 21 bytes"},
		{"a QCOW2 over 4 TiB", []string{img, "4097G"}, nil, exitUsage, "at most 4398046511104 bytes"},
		{"no directory", []string{filepath.Join(out, "none", "inst.img"), "10M"}, nil, exitInput, "no such file or directory"},
		{"a QCOW2 over the file size limit", []string{"--type", "instance", img, "10M"}, prlimit, exitInput, "file too large"},
		{"a raw file over the file size limit", []string{"--format", "raw", img, "1M"}, prlimit, exitInput, "file too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkBad(t, append([]string{"create-partition"}, c.args...), c.wrap, c.code, []string{c.says}, "")
			if left, _ := os.ReadDir(out); len(left) > 0 {
				t.Errorf("left behind in %s: %v", out, left)
			}
		})
	}
}
