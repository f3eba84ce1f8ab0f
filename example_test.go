package vmfs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"vmfs"
	"vmfs/launcher"
	"vmfs/testdata"
)

// sample is the committed sample payload.
func sample() vmfs.Spec {
	return vmfs.Spec{
		APK: testdata.APKPath(), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath,
		ApexInfoList: testdata.APEXInfoListPath(), OSDir: testdata.OSDir(),
	}
}

// Mount the sample payload and read what the mount serves.
func Example() {
	ctx := context.Background()
	p, err := vmfs.Resolve(ctx, sample())
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vmfs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(dir)
	srv, err := vmfs.Mount(ctx, p, dir, vmfs.MountOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Unmount()

	disk := srv.Manifest.Payload()
	st, err := os.Stat(disk.Flat)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(disk.Flat), st.Size() == p.Disk.Flat.Size, len(disk.Partitions), "partitions")
	// Output: payload.img true 6 partitions
}

// Find a mount from its directory alone, through the manifest it serves.
func ExampleOpen() {
	ctx := context.Background()
	p, err := vmfs.Resolve(ctx, sample())
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "vmfs-example")
	defer os.Remove(dir)
	srv, err := vmfs.Mount(ctx, p, dir, vmfs.MountOptions{Kind: "example"})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Unmount()

	m, err := vmfs.Open(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Server.Kind, m.Server.Pid == os.Getpid(), filepath.Base(m.Inputs.APK), filepath.Base(m.VMConfig))
	// Output: example true sample.apk vm.json
}

// A dry run of RunApp: verify the sample, mount it privately and print the QEMU
// command line instead of booting (the real run boots it and watches the verdict).
func ExampleRunApp() {
	var cmdline strings.Builder
	err := vmfs.RunApp(context.Background(), vmfs.RunOptions{
		Spec:   sample(),
		VM:     launcher.Options{VMM: launcher.VMMQemu},
		DryRun: &cmdline,
	})
	if err != nil {
		log.Fatal(err)
	}
	words := strings.Fields(cmdline.String())
	fmt.Println(filepath.Base(words[0]), strings.Contains(cmdline.String(), "/payload.vmdk,format=vmdk,if=virtio,readonly=on"))
	// Output: qemu-system-x86_64 true
}
