package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/testdata/composite"
)

// profileArgs are the flags and payload arguments of the committed sample at prof:
// the mid-2021 sample at android12, the Android 13+ one with its two extra APKs
// at the later profiles, with a fresh instance image in the form of prof's `vm
// run-app`; binary names the payload by its binary (android14+).
// At android13 osDir gets the partitioned disk 1 the instance goes on (stateOSDir).
func profileArgs(t *testing.T, prof metadata.Profile, binary bool, osDir string) []string {
	if prof == metadata.Android13 {
		osDir = stateOSDir(t, osDir)
	}
	return stateArgs(t, prof, binary, osDir, filepath.Join(t.TempDir(), "inst.img"))
}

// stateArgs are profileArgs with the instance image at instance.
func stateArgs(t *testing.T, prof metadata.Profile, binary bool, osDir, instance string) []string {
	if prof == metadata.Android12 {
		return []string{"--profile", prof.String(), "--os-dir", osDir, "--apex-info-list", testdata.APEXInfoListPath(), testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath}
	}
	args := []string{"--os-dir", osDir, "--apex-info-list", testdata.LaterAPEXInfoListPath()}
	return append(args, laterArgs(prof, binary, filepath.Dir(testdata.LaterAPKPath()), instance)...)
}

// laterArgs name the Android 13+ sample in dir (the fixtures' later/, or a copy)
// at prof with the instance image, as stateArgs does, without the sources: as a
// service's client names it.
func laterArgs(prof metadata.Profile, binary bool, dir, instance string) []string {
	args := []string{"--profile", prof.String()}
	for _, e := range testdata.LaterExtraAPKs() {
		if binary && prof == metadata.Android15 {
			args = append(args, "--extra-apk", filepath.Join(dir, filepath.Base(e.APK)))
		}
		if !binary || prof == metadata.Android15 {
			args = append(args, "--extra-idsig", filepath.Join(dir, filepath.Base(e.Idsig)))
		}
	}
	apk := filepath.Join(dir, filepath.Base(testdata.LaterAPKPath()))
	switch {
	case prof == metadata.Android13:
		return append(args, apk, apk+".idsig", instance, testdata.ConfigPath)
	case binary:
		args = append(args, "--payload-binary-name", testdata.PayloadBinaryName)
	default:
		args = append(args, "--config-path", testdata.ConfigPath)
	}
	return append(args, apk, apk+".idsig", instance)
}

// TestProfileMounts: for each profile a mount of the sample passes sgdisk -v, has
// the labels sfdisk reads in that release's order, metadata protoc decodes with
// that release's fields, and partitions a loop device reads byte for byte; list
// shows the profile.
func TestProfileMounts(t *testing.T) {
	testdata.RequireFUSE(t)
	testdata.RequireRoot(t) // loop devices
	sgdisk, sfdisk, protoc := testdata.RequireTool(t, "sgdisk"), testdata.RequireTool(t, "sfdisk"), testdata.RequireTool(t, "protoc")
	losetup, partx := testdata.RequireTool(t, "losetup"), testdata.RequireTool(t, "partx")
	for _, prof := range metadata.Profiles() {
		t.Run(prof.String(), func(t *testing.T) {
			mnt := t.TempDir()
			if r := runVmfs(t, "", append(append([]string{"mount"}, profileArgs(t, prof, false, testdata.OSDir())...), mnt)...); r.code != 0 {
				t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
			}
			t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
			img := filepath.Join(mnt, "payload.img")
			if out, err := exec.Command(sgdisk, "-v", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
				t.Errorf("sgdisk -v: %v\n%s", err, out)
			}
			checkExtentViews(t, mnt)
			var table struct {
				PartitionTable struct{ Partitions []struct{ Name string } }
			}
			out, err := exec.Command(sfdisk, "--json", img).Output()
			if err == nil {
				err = json.Unmarshal(out, &table)
			}
			if err != nil {
				t.Fatalf("sfdisk --json: %v %s", err, out)
			}
			var labels []string
			for _, p := range table.PartitionTable.Partitions {
				labels = append(labels, p.Name)
			}
			if labels[0] != prof.MetadataLabel() || labels[len(labels)-1] != map[bool]string{true: "microdroid-apk-idsig", false: "extra-idsig-1"}[prof == metadata.Android12] {
				t.Errorf("labels %v", labels)
			}
			meta, err := os.ReadFile(filepath.Join(mnt, "partitions", prof.MetadataLabel()))
			if err != nil {
				t.Fatal(err)
			}
			n := binary.BigEndian.Uint32(meta)
			cmd := exec.Command(protoc, "--proto_path=../../metadata", "--decode=android.microdroid.Metadata", "microdroid_metadata.proto")
			cmd.Stdin = bytes.NewReader(meta[4 : 4+n])
			decoded, err := cmd.Output()
			wantField := map[bool]string{true: "config_path: \"/mnt/apk/assets/vm_config.json\"", false: "partition_name: \"microdroid-apex-0\""}[prof == metadata.Android12]
			if err != nil || !strings.Contains(string(decoded), wantField) {
				t.Errorf("protoc --decode: %v, want %q in:\n%s", err, wantField, decoded)
			}
			dev, err := exec.Command(losetup, "-r", "-f", "--show", img).Output()
			if err != nil {
				t.Fatalf("losetup: %v", err)
			}
			loop := strings.TrimSpace(string(dev))
			defer exec.Command(losetup, "-d", loop).Run()
			defer exec.Command(partx, "-d", loop).Run()
			if out, err := exec.Command(partx, "-a", loop).CombinedOutput(); err != nil {
				t.Fatalf("partx -a: %v %s", err, out)
			}
			for i, label := range labels {
				got, err := os.ReadFile(fmt.Sprintf("%sp%d", loop, i+1))
				want, _ := os.ReadFile(filepath.Join(mnt, "partitions", label))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%sp%d differs from partitions/%s (%v)", loop, i+1, label, err)
				}
			}
			if r := runVmfs(t, "", "list"); !strings.Contains(r.stdout, prof.String()) {
				t.Errorf("list does not show %s:\n%s", prof, r.stdout)
			}
		})
	}
}

// checkExtentViews: QEMU reads each disk's VMDK as its flat image and as its
// partition composite reassembled (qemu-img compare), and the extent composite
// reassembles the flat image too; the payload disk has them.
func checkExtentViews(t *testing.T, mnt string) {
	t.Helper()
	qemuImg := testdata.RequireTool(t, "qemu-img")
	m, err := vmfs.ReadManifest(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if m.Payload().VMDK == "" {
		t.Errorf("the payload disk has no VMDK: %+v", m.Payload())
	}
	for _, d := range m.Disks {
		if d.VMDK == "" {
			continue
		}
		whole := composite.Reassemble(t, composite.Read(t, d.Composite))
		parts := filepath.Join(t.TempDir(), "partitions.img")
		if err := os.WriteFile(parts, whole, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, other := range []string{d.Flat, parts} {
			if out, err := exec.Command(qemuImg, "compare", "-f", "vmdk", "-F", "raw", d.VMDK, other).CombinedOutput(); err != nil {
				t.Errorf("qemu-img compare %s %s: %v\n%s", d.VMDK, other, err, out)
			}
		}
		flat, err := os.ReadFile(d.Flat)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(composite.Reassemble(t, composite.Read(t, d.Extents)), flat) {
			t.Errorf("%s does not reassemble %s", d.Extents, d.Flat)
		}
	}
}

// TestProfileBoots: the test guest checks each profile's disk as that Microdroid
// would, and its verdict names the profile; android14 also with a payload binary
// name.
func TestProfileBoots(t *testing.T) {
	testdata.RequireFUSE(t)
	for _, tc := range []struct {
		prof   metadata.Profile
		binary bool
	}{{metadata.Android12, false}, {metadata.Android13, false}, {metadata.Android14, false}, {metadata.Android14, true}, {metadata.Android15, false}} {
		t.Run(fmt.Sprintf("%s binary=%t", tc.prof, tc.binary), func(t *testing.T) {
			console := filepath.Join(t.TempDir(), "console.txt")
			args := append([]string{"run-app", "--vmm", "qemu", "--require-verdict", "--console", console, "--timeout", "3m"}, profileArgs(t, tc.prof, tc.binary, guestDir(t))...)
			// The VMM reads the payload through its extents: the VMDK.
			if r := runVmfs(t, "", append(args, "--dry-run")...); !strings.Contains(r.stdout, "/payload.vmdk,format=vmdk,") {
				t.Errorf("run-app --dry-run: exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
			r := runVmfs(t, "", args...)
			out, _ := os.ReadFile(console)
			if r.code != 0 || !strings.Contains(string(out), `"profile":"`+tc.prof.String()+`"`) {
				t.Errorf("run-app: exit %d: %s\nconsole:\n%s", r.code, r.stderr, out)
			}
		})
	}
}

// TestProfileExtraAPKFlipped: one flipped byte in an extra APK fails that extra
// APK's dm-verity read in the guest.
func TestProfileExtraAPKFlipped(t *testing.T) {
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", filepath.Dir(testdata.LaterAPKPath())+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	extra := filepath.Join(dir, filepath.Base(testdata.LaterExtraAPKs()[1].APK))
	b, err := os.ReadFile(extra)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0xff
	os.WriteFile(extra, b, 0o644)
	args := []string{"run-app", "--vmm", "qemu", "--require-verdict", "--console", "/dev/null", "--timeout", "3m",
		"--profile", "android13", "--os-dir", stateOSDir(t, guestDir(t)), "--apex-info-list", testdata.LaterAPEXInfoListPath()}
	for _, e := range testdata.LaterExtraAPKs() {
		args = append(args, "--extra-idsig", e.Idsig)
	}
	args = append(args, filepath.Join(dir, filepath.Base(testdata.LaterAPKPath())), testdata.LaterIdsigPath(), filepath.Join(dir, "inst.img"), testdata.ConfigPath)
	r := runVmfs(t, "", args...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "extra-apk:1") {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}
