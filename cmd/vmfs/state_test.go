package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs"
	"vmfs/internal/proc"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/verdict"
)

// TestStateUsage: each profile takes the payload and its state in the form of its
// own `vm run-app`; any other is a usage error naming that form, and makes nothing.
func TestStateUsage(t *testing.T) {
	dir := t.TempDir()
	inst := filepath.Join(dir, "inst.img")
	apk, idsig, cfg := testdata.LaterAPKPath(), testdata.LaterIdsigPath(), testdata.ConfigPath
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"android12 with an instance", []string{"--profile", "android12", testdata.APKPath(), testdata.IdsigPath(), inst, cfg},
			"android12 takes <apk> <idsig> <config_path>"},
		{"android13 without an instance", []string{"--profile", "android13", apk, idsig, cfg},
			"android13 takes <apk> <idsig> <instance> <config_path>"},
		{"android13 with --config-path", []string{"--profile", "android13", "--config-path", cfg, apk, idsig, inst},
			"--config-path is an argument; android13 takes <apk> <idsig> <instance> <config_path>"},
		{"android14 with a config path argument", []string{"--profile", "android14", apk, idsig, inst, cfg},
			"android14 takes <apk> <idsig> <instance> with one of --config-path, --payload-binary-name"},
		{"android14 with neither", []string{"--profile", "android14", apk, idsig, inst},
			"give one of --config-path and --payload-binary-name"},
		{"android15 with both", []string{"--profile", "android15", "--config-path", cfg, "--payload-binary-name", "x.so", apk, idsig, inst},
			"give one of --config-path and --payload-binary-name"},
		{"android13 with storage", []string{"--profile", "android13", "--storage", filepath.Join(dir, "st.img"), apk, idsig, inst, cfg},
			"no --storage (from android14)"},
		{"android14 with an instance id", []string{"--profile", "android14", "--instance-id-file", filepath.Join(dir, "id"), "--config-path", cfg, apk, idsig, inst},
			"no --instance-id-file (android15)"},
		{"a bad storage size", []string{"--profile", "android14", "--storage", filepath.Join(dir, "st.img"), "--storage-size", "10X", "--config-path", cfg, apk, idsig, inst},
			"--storage-size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, cmd := range []string{"run-app", "inspect"} {
				r := runVmfs(t, "", append([]string{cmd, "--os-dir", guestDir(t)}, c.args...)...)
				if r.code != exitUsage || !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("%s: exit %d, stderr %q; want exit %d and one line with %q", cmd, r.code, r.stderr, exitUsage, c.want)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestStateMount: a mount at android15 makes the missing instance image (raw, 10
// MiB, the instance header) and storage, shows them as the partitions of a disk of
// their own before the payload disk, writable in layout.json and named read-write in
// the composite; list shows the instance; a second mount of the same instance is
// refused while the first is there, and allowed once it is gone.
func TestStateMount(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	inst, storage := filepath.Join(dir, "inst.img"), filepath.Join(dir, "storage.img")
	args := append([]string{"mount", "--storage", storage, "--storage-size", "20000"}, profileArgs(t, metadata.Android15, false, testdata.OSDir())...)
	args[len(args)-1] = inst
	mnt := t.TempDir()
	if r := runVmfs(t, "", append(args, mnt)...); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })

	for path, want := range map[string]struct {
		size int64
		head string
	}{inst: {vmfs.DefaultStateSize, metadata.InstanceMagic + "\x01\x00"}, storage: {20480, metadata.UnformattedStorageMagic}} {
		b, err := os.ReadFile(path)
		if err != nil || int64(len(b)) != want.size || !bytes.HasPrefix(b, []byte(want.head)) {
			t.Errorf("%s: %d bytes (%v), want %d starting %q", path, len(b), err, want.size, want.head)
		}
	}
	// testdata's OS config has one disk: the state disk is disk 1, the payload 2.
	for label, path := range map[string]string{metadata.InstanceLabel: inst, metadata.StorageLabel: storage} {
		got, err := os.ReadFile(filepath.Join(mnt, "disks/1/partitions", label))
		want, _ := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("disks/1/partitions/%s differs from %s (%v)", label, path, err)
		}
	}
	var vm metadata.VMConfig
	if b, err := os.ReadFile(filepath.Join(mnt, "vm.json")); err != nil || json.Unmarshal(b, &vm) != nil || len(vm.Disks) != 3 ||
		vm.Disks[1].Image != filepath.Join(mnt, "disks/1/disk.composite") || !vm.Disks[1].Writable || vm.Disks[2].Writable {
		t.Errorf("vm.json disks: %+v (%v)", vm.Disks, err)
	}
	lay, _ := os.ReadFile(filepath.Join(mnt, "layout.json"))
	var layouts map[string]struct {
		Partitions []struct {
			Label    string
			Writable bool
		}
	}
	if err := json.Unmarshal(lay, &layouts); err != nil {
		t.Fatal(err)
	}
	if ps := layouts["disks/1/disk"].Partitions; len(ps) != 2 || ps[0].Label != metadata.InstanceLabel || !ps[0].Writable || ps[1].Label != metadata.StorageLabel || !ps[1].Writable {
		t.Errorf("layout.json disks/1: %+v", ps)
	}
	comp, _ := os.ReadFile(filepath.Join(mnt, "disks/1/disk.composite"))
	if !bytes.Contains(comp, []byte(inst)) || !bytes.Contains(comp, []byte(storage)) {
		t.Errorf("the composite does not name the state files")
	}
	if r := runVmfs(t, "", "list"); !strings.Contains(r.stdout, "INSTANCE") || !strings.Contains(r.stdout, inst) {
		t.Errorf("list does not show the instance:\n%s", r.stdout)
	}

	second := t.TempDir()
	r := runVmfs(t, "", append(args, second)...)
	if r.code != exitInput || !strings.Contains(r.stderr, "instance image "+inst+": in use") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("second mount: exit %d: %q; want exit %d, in use", r.code, r.stderr, exitInput)
	}
	if r := runVmfs(t, "", "unmount", mnt); r.code != 0 {
		t.Fatalf("unmount: %d %s", r.code, r.stderr)
	}
	if r := runVmfs(t, "", append(args, second)...); r.code != 0 {
		t.Errorf("mount once the first is gone: exit %d: %s", r.code, r.stderr)
	}
	runVmfs(t, "", "unmount", second)
}

// stateOSDir is osDir's OS config with a partitioned disk 1, for Android 13 to
// put vm-instance on (testdata.StateOSDir).
func stateOSDir(t *testing.T, osDir string) string {
	t.Helper()
	dir := t.TempDir()
	if err := testdata.StateOSDir(osDir, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bootVerdict boots the sample at prof with the state files in args and returns
// the guest's verdict; the run must pass.
func bootVerdict(t *testing.T, args []string) *verdict.Verdict {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console.txt")
	r := runVmfs(t, "", append([]string{"run-app", "--vmm", "qemu", "--require-verdict", "--console", console, "--timeout", "3m"}, args...)...)
	out, _ := os.ReadFile(console)
	if r.code != 0 {
		t.Fatalf("run-app: exit %d: %s\nconsole:\n%s", r.code, r.stderr, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, err := verdict.Parse(line); v != nil || err != nil {
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no verdict on the console:\n%s", out)
	return nil
}

// TestStateBoots: a VM boots twice with one instance image (and storage), which
// vmfs makes on the first run: the second boot finds the first boot's record and
// the storage the first boot formatted; qemu-img check finds the QCOW2 images
// clean after both. android13 has the instance on the OS disk, android14/15 on a
// disk of its own.
func TestStateBoots(t *testing.T) {
	testdata.RequireFUSE(t)
	for _, tc := range []struct {
		prof    metadata.Profile
		binary  bool
		storage bool
	}{{metadata.Android14, false, false}, {metadata.Android13, false, false}, {metadata.Android14, true, true}, {metadata.Android15, false, true}} {
		t.Run(fmt.Sprintf("%s binary=%t storage=%t", tc.prof, tc.binary, tc.storage), func(t *testing.T) {
			dir := t.TempDir()
			inst, storage := filepath.Join(dir, "inst.img"), filepath.Join(dir, "storage.img")
			osDir := guestDir(t)
			if tc.prof == metadata.Android13 {
				osDir = stateOSDir(t, osDir)
			}
			args := stateArgs(t, tc.prof, tc.binary, osDir, inst)
			if tc.storage {
				args = append([]string{"--storage", storage}, args...)
			}
			bootsTwice(t, tc.prof, args, inst, storage, tc.storage)
		})
	}
}

// bootsTwice boots args at prof twice, whose instance image is inst (and
// storage, with --storage in args): the first boot finds no boot record and
// unformatted storage, the second the first's record and its storage marker;
// after each, qemu-img check finds QCOW2 state files clean.
func bootsTwice(t *testing.T, prof metadata.Profile, args []string, inst, storage string, withStorage bool) {
	t.Helper()
	for boot := uint32(1); boot <= 2; boot++ {
		v := bootVerdict(t, args)
		if v.Instance == nil || v.Instance.Found != boot-1 || v.Instance.Boots != boot {
			t.Errorf("boot %d: instance %+v, want found %d, boots %d", boot, v.Instance, boot-1, boot)
		}
		if withStorage && (v.Storage == nil || v.Storage.Formatted != (boot == 2)) {
			t.Errorf("boot %d: storage %+v, want formatted before: %t", boot, v.Storage, boot == 2)
		}
		if prof.PartitionImage() != metadata.QCOW2Image {
			continue
		}
		testdata.QemuImgCheck(t, inst)
		if withStorage {
			testdata.QemuImgCheck(t, storage)
		}
	}
}

// TestStateOneVM: while a VM runs on an instance image, a second run on it is
// refused at once, naming the file, and the first run goes on.
func TestStateOneVM(t *testing.T) {
	testdata.RequireFUSE(t)
	inst := filepath.Join(t.TempDir(), "inst.img")
	args := append([]string{"run-app", "--vmm", "qemu", "--console", "/dev/null", "--timeout", "3m"}, stateArgs(t, metadata.Android15, false, guestDir(t), inst)...)
	first := start(t, t.TempDir(), args...)
	first.waitFor(t, "vm started")
	r := runVmfs(t, "", args...)
	if r.code != exitInput || !strings.Contains(r.stderr, "instance image "+inst+": in use") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("second run: exit %d: %q; want exit %d, in use", r.code, r.stderr, exitInput)
	}
	if code := first.exit(t, 3*time.Minute); code != 0 {
		t.Errorf("first run: exit %d:\n%s", code, first.output())
	}
}

// fakeCrosvm is a stand-in for crosvm, a real process: it writes 4 KiB of 0x5a
// at 1 MiB into the QCOW2 image $VMFS_TEST_STATE with qemu-io, as crosvm writes a
// state file a composite names read-write, writes its pid to $VMFS_TEST_PIDFILE
// and waits to be killed, holding what it inherited.
func fakeCrosvm(t *testing.T) string {
	t.Helper()
	qemuIO := testdata.RequireTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "crosvm")
	script := "#!/bin/sh\n" + qemuIO + " -f qcow2 -c 'write -P 0x5a 1M 4k' \"$VMFS_TEST_STATE\" >&2 || exit 1\n" +
		"echo $$ > \"$VMFS_TEST_PIDFILE\"\nexec sleep infinity\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// mountState mounts an android14 payload with the instance image inst (made
// when missing) with vmfs mount, unmounted at cleanup, and returns its
// mountpoint, its server's status and its manifest.
func mountState(t *testing.T, inst string) (string, *vmfs.MountStatus, *vmfs.Manifest) {
	t.Helper()
	mnt := t.TempDir()
	if r := runVmfs(t, "", append(append([]string{"mount"}, stateArgs(t, metadata.Android14, false, guestDir(t), inst)...), mnt)...); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
	server, err := vmfs.Status(context.Background(), mnt)
	if err != nil || server == nil {
		t.Fatalf("mount not in mountinfo: %v", err)
	}
	m, err := vmfs.ReadManifest(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return mnt, server, m
}

// TestStateOneWriterCrosvm: crosvm writes a state file itself, so a mount's views
// of it and crosvm never write it at once. While a view is open, a crosvm launch
// on the mount is refused (exit 3, naming the file) and nothing starts; while
// crosvm runs, both views refuse opens with EBUSY and the mount runs no engine;
// once it has ended, the views show what crosvm wrote, next to what the view wrote
// before, and qemu-img check is clean.
func TestStateOneWriterCrosvm(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	inst, pidfile := filepath.Join(dir, "inst.img"), filepath.Join(dir, "crosvm.pid")
	t.Setenv("VMFS_TEST_STATE", inst)
	t.Setenv("VMFS_TEST_PIDFILE", pidfile)
	mnt, server, m := mountState(t, inst)
	var views []string
	for _, d := range m.Disks {
		if p := d.Partitions[metadata.InstanceLabel]; p != "" {
			views = []string{p, d.Flat}
		}
	}
	if views == nil {
		t.Fatalf("no %s in the manifest: %+v", metadata.InstanceLabel, m.Disks)
	}
	runCrosvm := []string{"run-app", "--mount", mnt, "--vmm", "crosvm", "--crosvm", fakeCrosvm(t), "--console", "/dev/null", "--timeout", "20s"}

	view, err := os.OpenFile(views[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := runVmfs(t, "", runCrosvm...)
	if r.code != exitInput || !strings.Contains(r.stderr, "state file "+inst+": ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("crosvm while a view is open: exit %d: %q; want exit %d naming %s", r.code, r.stderr, exitInput, inst)
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Errorf("crosvm started while a view was open")
	}
	if _, err := view.WriteAt(bytes.Repeat([]byte{0x11}, 4096), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := view.Close(); err != nil {
		t.Fatal(err)
	}

	vm := start(t, "", runCrosvm...)
	var pid int
	if !testdata.Eventually(t, time.Minute, func() bool {
		b, err := os.ReadFile(pidfile)
		return err == nil && json.Unmarshal(bytes.TrimSpace(b), &pid) == nil
	}) {
		t.Fatalf("crosvm did not start:\n%s", vm.output())
	}
	for _, v := range views {
		if f, err := os.Open(v); !errors.Is(err, syscall.EBUSY) {
			t.Errorf("open %s while crosvm runs: %v, want EBUSY", v, err)
			if err == nil {
				f.Close()
			}
		}
	}
	if e := children(server.Pid, "qemu-storage-daemon"); len(e) != 0 {
		t.Errorf("the mount runs engines while crosvm runs: %v", e)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	vm.exit(t, time.Minute)

	for _, c := range []struct {
		off  int64
		fill byte
	}{{1 << 20, 0x5a}, {2 << 20, 0x11}} {
		b := make([]byte, 4096)
		f, err := os.Open(views[0])
		if err != nil {
			t.Fatalf("open once crosvm is gone: %v", err)
		}
		_, err = f.ReadAt(b, c.off)
		f.Close()
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{c.fill}, 4096)) {
			t.Errorf("at %d: %x... (%v), want %#x", c.off, b[:8], err, c.fill)
		}
	}
	testdata.QemuImgCheck(t, inst)
}

// TestStateKill: kill -9 of a `vmfs mount` just after an fsync'd write through
// disk.img, the file still open: qemu-io reads the write from the QCOW2
// instance, qemu-img check finds it clean, and the mount's engine
// (qemu-storage-daemon) dies with it.
func TestStateKill(t *testing.T) {
	testdata.RequireFUSE(t)
	inst := filepath.Join(t.TempDir(), "inst.img")
	mnt, server, m := mountState(t, inst)
	// Where vm-instance starts in disk.img, from layout.json.
	var flat string
	var at int64 = -1
	var layouts map[string]struct {
		Partitions []struct {
			Label  string
			Offset int64
		}
	}
	lay, _ := os.ReadFile(filepath.Join(mnt, "layout.json"))
	if err := json.Unmarshal(lay, &layouts); err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Disks {
		for _, p := range layouts[d.Name+"/disk"].Partitions {
			if p.Label == metadata.InstanceLabel {
				flat, at = d.Flat, p.Offset
			}
		}
	}
	if at < 0 {
		t.Fatalf("no %s in layout.json:\n%s", metadata.InstanceLabel, lay)
	}
	f, err := os.OpenFile(flat, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x3c}, 64<<10), at+1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	daemons := children(server.Pid, "qemu-storage-daemon")
	if len(daemons) != 1 {
		t.Fatalf("engines of the mount: %v, want one", daemons)
	}
	syscall.Kill(server.Pid, syscall.SIGKILL)
	for _, pid := range daemons {
		if !proc.WaitExit(pid, 10*time.Second) {
			t.Errorf("qemu-storage-daemon %d outlives vmfs", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !proc.WaitExit(server.Pid, 10*time.Second) {
		t.Fatal("vmfs survived SIGKILL")
	}
	testdata.QemuIO(t, inst, "qcow2", false, "read -P 0x3c 1M 64k")
	testdata.QemuImgCheck(t, inst)
}

// TestStateInstanceID: at android15 a missing --instance-id-file is made with 64
// random bytes, the owner's alone, and kept with its mount; an existing one too
// short to hold an ID is refused (exit 3, naming it), and what the refused mount
// would have made (its instance image) is not left behind.
func TestStateInstanceID(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	id := filepath.Join(dir, "id")
	mount := func(inst string) result {
		t.Helper()
		mnt := t.TempDir()
		r := runVmfs(t, "", append(append([]string{"mount", "--instance-id-file", id}, stateArgs(t, metadata.Android15, true, testdata.OSDir(), inst)...), mnt)...)
		if r.code == 0 {
			t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
		}
		return r
	}
	if r := mount(filepath.Join(dir, "inst.img")); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	if st, err := os.Stat(id); err != nil || st.Size() != vmfs.InstanceIDSize || st.Mode().Perm() != 0o600 {
		t.Errorf("instance id file: %v, %v; want %d bytes, 0600", st, err, vmfs.InstanceIDSize)
	}
	if err := os.WriteFile(id, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	inst := filepath.Join(dir, "other.img")
	if r := mount(inst); r.code != exitInput || !strings.Contains(r.stderr, "instance id file "+id+": 3 bytes, want 64") {
		t.Errorf("mount with a 3-byte instance id file: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(inst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused mount left its instance image: %v", err)
	}
}
