package fusedisk_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"vmfs/fusedisk"
	"vmfs/layout"
)

// Example serves a disk of one partition, a file of 12 bytes, in three steps:
// open the sources, build the tree, mount it. It needs FUSE (root, or
// fusermount3 and a /dev/fuse the user may open).
func Example() {
	dir, err := os.MkdirTemp("", "fusedisk-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	boot, mnt := filepath.Join(dir, "boot.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(boot, []byte("hello, disk\n"), 0o644); err != nil {
		fmt.Println(err)
		return
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		fmt.Println(err)
		return
	}
	d, err := layout.FilesDisk([]layout.FilePart{{Label: "boot", Source: layout.Source{Path: boot, Size: 12}}}, layout.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	disks := []fusedisk.Disk{{Disk: d}}

	srcs, err := fusedisk.OpenSources(disks, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srcs.Close()
	root, err := fusedisk.NewTree(srcs, fusedisk.TreeOptions{Disks: disks, Dir: mnt})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := fusedisk.Mount(mnt, root, fusedisk.MountOptions{FsName: "example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		srv.Unmount()
		srv.Wait() // before srcs.Close, deferred earlier
	}()

	b, err := os.ReadFile(disks[0].Paths(mnt).Partitions["boot"])
	if err != nil {
		fmt.Println(err)
		return
	}
	// A read-only partition is zero-padded to 4 KiB.
	fmt.Printf("partitions/boot: %d bytes: %s", len(b), bytes.TrimRight(b, "\x00"))
	// Output: partitions/boot: 4096 bytes: hello, disk
}
