package launcher

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"vmfs/testdata"

	"go.uber.org/zap/zaptest"

	"vmfs/metadata"
)

// argvRecorder writes an executable that stands in for the absent crosvm only
// to show what Launch passes: it saves its argv, says ready, and sleeps.
func argvRecorder(t *testing.T) (bin, argsFile string) {
	t.Helper()
	testdata.RequireTool(t, "sh")
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	bin = writeFile(t, filepath.Join(dir, "crosvm"),
		[]byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > "+argsFile+"\necho ready\nexec sleep 1000\n"))
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

func TestLaunchCrosvmAllocatesAndReleasesCID(t *testing.T) {
	bin, argsFile := argvRecorder(t)
	cidDir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "vmm.log")
	kernel := writeFile(t, filepath.Join(t.TempDir(), "kernel"), []byte("k"))
	cfg := &metadata.VMConfig{Kernel: kernel, Params: "console=ttyS0", Disks: []metadata.DiskImage{{Image: "/mnt/payload.composite"}}}
	o := Options{Crosvm: bin, CIDDir: cidDir, MemMiB: 512, Log: logFile}

	r, w := io.Pipe()
	vm, err := Launch(context.Background(), cfg, o, RunOptions{Stdout: w, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() { vm.Stop(0) })
	if line, err := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		t.Fatalf("read from vmm: %q, %v", line, err)
	}
	go io.Copy(io.Discard, r)

	if vm.CID() != firstGuestCID {
		t.Errorf("CID() = %d, want %d", vm.CID(), firstGuestCID)
	}
	raw, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want, err := CrosvmArgs(cfg, Options{CID: firstGuestCID, MemMiB: 512})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("crosvm got argv\n %q\nwant %q", got, want)
	}
	if _, err := os.Stat(logFile); err != nil {
		t.Errorf("vmm log not created: %v", err)
	}
	// While the VM runs its CID is taken.
	if cid, release, err := AllocateCID(cidDir); err != nil || cid != firstGuestCID+1 {
		t.Errorf("AllocateCID while the VM runs = %d, %v; want %d", cid, err, firstGuestCID+1)
	} else {
		release()
	}

	if err := vm.Stop(time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if cid, release, err := AllocateCID(cidDir); err != nil || cid != firstGuestCID {
		t.Errorf("AllocateCID after the VM exited = %d, %v; want %d back", cid, err, firstGuestCID)
	} else {
		release()
	}
}

func TestLaunchErrorsReleaseCID(t *testing.T) {
	bin, _ := argvRecorder(t)
	cidDir := t.TempDir()
	noDir := filepath.Join(t.TempDir(), "absent", "vmm.log")
	for _, tc := range []struct {
		name string
		cfg  *metadata.VMConfig
		o    Options
		is   error
	}{
		{"bad config", &metadata.VMConfig{}, Options{Crosvm: bin, CIDDir: cidDir}, ErrConfig},
		{"log in a missing directory", &metadata.VMConfig{Kernel: "/k"}, Options{Crosvm: bin, CIDDir: cidDir, Log: noDir}, fs.ErrNotExist},
		{"missing vmm", &metadata.VMConfig{Kernel: "/k"}, Options{Crosvm: noDir, CIDDir: cidDir}, fs.ErrNotExist},
		{"protected on qemu", &metadata.VMConfig{Kernel: "/k", Protected: true}, Options{VMM: VMMQemu, Qemu: bin}, ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, err := Launch(context.Background(), tc.cfg, tc.o, RunOptions{})
			if !errors.Is(err, tc.is) {
				t.Fatalf("Launch = %v, %v; want an error wrapping %v", vm, err, tc.is)
			}
			if cid, release, err := AllocateCID(cidDir); err != nil || cid != firstGuestCID {
				t.Errorf("AllocateCID after the failed Launch = %d, %v; want %d", cid, err, firstGuestCID)
			} else {
				release()
			}
		})
	}
}

// TestLaunchChecksBootFilesFirst: a missing kernel or initrd is a config error
// before any VMM starts, and Launch takes no CID for it.
func TestLaunchChecksBootFilesFirst(t *testing.T) {
	bin, argsFile := argvRecorder(t)
	dir := t.TempDir()
	kernel := writeFile(t, filepath.Join(dir, "kernel"), []byte("k"))
	for name, cfg := range map[string]*metadata.VMConfig{
		"kernel missing":     {Kernel: filepath.Join(dir, "none")},
		"initrd a directory": {Kernel: kernel, Initrd: dir},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Launch(context.Background(), cfg, Options{Crosvm: bin, CIDDir: t.TempDir()}, RunOptions{})
			if !errors.Is(err, ErrConfig) {
				t.Errorf("Launch: %v, want ErrConfig", err)
			}
			if _, err := os.Stat(argsFile); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the VMM ran: %v", err)
			}
		})
	}
}

// TestLaunchLogNobodyReads: a VMM log that is a FIFO nobody reads does not
// stall the VMM: a stand-in QEMU writes 4 MiB to stderr and exits on its own,
// and Run returns. (The VMM used to get the FIFO as its stderr and block on it.)
func TestLaunchLogNobodyReads(t *testing.T) {
	testdata.RequireTool(t, "sh")
	testdata.RequireTool(t, "dd")
	dir := t.TempDir()
	bin := writeFile(t, filepath.Join(dir, "qemu"), []byte("#!/bin/sh\ndd if=/dev/zero bs=64k count=64 >&2 2>/dev/null\n"))
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := writeFile(t, filepath.Join(dir, "kernel"), []byte("k"))
	log := unreadFIFO(t)
	o := Options{VMM: VMMQemu, Qemu: bin, Log: log.Name()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The timeout is a safety net: the stand-in ends on its own.
	if err := Run(ctx, &metadata.VMConfig{Kernel: kernel}, o, RunOptions{Logger: zaptest.NewLogger(t)}); err != nil {
		t.Errorf("Run = %v, want the vmm's own exit 0", err)
	}
}
