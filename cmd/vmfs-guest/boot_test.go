package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vmfs/fusedisk"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/testdata/sampledisk"
	"vmfs/verdict"
)

// bootTimeout only guards against a hung VM; a boot takes about 8 s under TCG.
const bootTimeout = 5 * time.Minute

// TestBoot boots the test guest (build/guest) under QEMU with TCG on payload disks of each
// profile served by fusedisk from this process, and asserts the agent's verdict from the
// serial console.
//
// Drive map: the only drive is virtio disk 0 = <mount>/payload.img, the guest's /dev/vda.
// At android12: vda1 metadata, vda2..vda4 microdroid-apex-0..2 (com.android.adbd,
// com.android.os.statsd, com.vmfs.edge), vda5 microdroid-apk, vda6 microdroid-apk-idsig.
// At android13 and later: vda1 payload-metadata, then the APEXes Android 13+ picks from
// later/apex-info-list.xml (sampledisk.Disk.Apexes, sorted by name), the APK and its
// idsig, and with extra APKs extra-apk-0, extra-idsig-0, extra-apk-1, extra-idsig-1.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under testing.Short(): boots a VM")
	}
	testdata.RequireRoot(t)
	qemu := testdata.RequireTool(t, "qemu-system-x86_64")
	testdata.RequireFUSE(t)
	cfg := guestConfig(t)

	extra1 := testdata.LaterExtraAPKs()[1]
	for _, tc := range []struct {
		name string
		opts sampledisk.Options
		// flip names an APK (with its idsig) to boot with one byte inverted in a stored entry.
		flip *testdata.ExtraAPK
		// param is the vmfs.profile= kernel parameter, if any; profile the verdict's.
		param, profile string
		// fail maps the checks that must fail to the errno they must report; every
		// other check must pass.
		fail map[string]string
	}{
		{name: "android12", profile: "android12"},
		{name: "android12 apk with one flipped byte", flip: &testdata.ExtraAPK{APK: testdata.APKPath(), Idsig: testdata.IdsigPath()},
			profile: "android12", fail: map[string]string{"apk-verity": "EIO"}},
		{name: "android13", opts: sampledisk.Options{Profile: metadata.Android13}, param: "android13", profile: "android13"},
		// Without the parameter the guest names what the metadata allows.
		{name: "android14 unnamed", opts: sampledisk.Options{Profile: metadata.Android14}, profile: "android13|android14|android15"},
		{name: "android14 binary name", opts: sampledisk.Options{Profile: metadata.Android14, BinaryName: true, Debug: metadata.DebugFull},
			param: "android14", profile: "android14"},
		{name: "android15 extra apk with one flipped byte", opts: sampledisk.Options{Profile: metadata.Android15, BinaryName: true},
			flip: &extra1, param: "android15", profile: "android15", fail: map[string]string{"extra-apk:1": "EIO"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.flip != nil {
				tc.opts.Replace = map[string]string{tc.flip.APK: flipped(t, *tc.flip)}
			}
			d, err := sampledisk.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			params := cfg.Params
			if tc.param != "" {
				params += " " + profileParam + tc.param
			}
			console, took := boot(t, qemu, cfg, params, serve(t, d.Disk))
			t.Logf("boot took %v", took.Round(time.Millisecond))
			v, err := parseVerdict(console)
			if err != nil {
				t.Fatalf("%v; console:\n%s", err, console)
			}
			js, _ := json.MarshalIndent(v, "", "  ")
			t.Logf("verdict: %s", js)
			var names []string
			for _, c := range v.Checks {
				names = append(names, c.Name)
				wantErrno, mustFail := tc.fail[c.Name]
				switch {
				case !mustFail && !c.OK:
					t.Errorf("check %s failed: %s", c.Name, c.Reason)
				case mustFail && c.OK:
					t.Errorf("check %s passed, want it to fail with %s: %s", c.Name, wantErrno, c.Reason)
				case mustFail && c.Errno != wantErrno:
					t.Errorf("check %s failed with errno %q, want %s: %s", c.Name, c.Errno, wantErrno, c.Reason)
				}
			}
			if want := wantChecks(d); !slices.Equal(names, want) {
				t.Errorf("checks %v, want %v", names, want)
			}
			if v.OK != (len(tc.fail) == 0) || v.Profile != tc.profile {
				t.Errorf("verdict ok = %v, profile %q; want ok with %d checks expected to fail, profile %q", v.OK, v.Profile, len(tc.fail), tc.profile)
			}
		})
	}
}

// wantChecks lists the checks the agent runs on d, in order.
func wantChecks(d *sampledisk.Disk) []string {
	checks := []string{"mount", "modules", "metadata", "partitions"}
	seen := map[string]int{}
	for _, a := range d.Apexes {
		seen[a.ModuleName]++
		name := "apex:" + a.ModuleName
		if seen[a.ModuleName] > 1 {
			name += fmt.Sprintf("#%d", seen[a.ModuleName])
		}
		checks = append(checks, name)
	}
	checks = append(checks, "apk-config", "apk-verity")
	for i := range d.ExtraApks {
		checks = append(checks, fmt.Sprintf("extra-apk:%d", i))
	}
	return checks
}

// guestConfig returns the test guest's VM config, after running build-guest.sh so the
// initramfs carries this agent (quick when nothing changed; the kernel must already be
// there from `make guest`, so the test never downloads).
func guestConfig(t *testing.T) *metadata.VMConfig {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "build", "guest"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kernel.pkg")); err != nil {
		testdata.Missing(t, "no test guest in %s: run make guest", dir)
	}
	if out, err := exec.Command("./build-guest.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("build-guest.sh %s: %v\n%s", dir, err, out)
	}
	cfg, err := metadata.LoadVMConfig(filepath.Join(dir, "microdroid.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// flipped copies an APK with one byte inverted inside its first stored entry past the
// manifest, where neither the zip structure nor the payload config changes, so only
// dm-verity can notice.
func flipped(t *testing.T, a testdata.ExtraAPK) string {
	b, err := os.ReadFile(a.APK)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(zr.File, func(f *zip.File) bool { return f.Method == zip.Store && f.Name != "AndroidManifest.xml" })
	if i < 0 {
		t.Fatalf("%s has no stored entry", a.APK)
	}
	off, err := zr.File[i].DataOffset()
	if err != nil {
		t.Fatal(err)
	}
	off += int64(zr.File[i].CompressedSize64 / 2)
	b[off] ^= 0xff
	path := filepath.Join(t.TempDir(), filepath.Base(a.APK))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The host-side oracle agrees that the APK no longer matches its idsig.
	if err := metadata.VerifyFiles(path, a.Idsig); !errors.Is(err, metadata.ErrMismatch) {
		t.Fatalf("VerifyFiles on the flipped APK = %v, want ErrMismatch", err)
	}
	t.Logf("flipped byte %#x of %s (block %d), in %s", off, a.APK, off/blockSize, zr.File[i].Name)
	return path
}

// serve mounts d with fusedisk in this process (go-fuse serves from goroutines, so the
// QEMU child reading the mount does not deadlock) and returns the flat disk's path.
func serve(t *testing.T, d *layout.Disk) string {
	t.Helper()
	mnt := t.TempDir()
	disks := []fusedisk.Disk{{Disk: d}}
	srcs, err := fusedisk.OpenSources(disks, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srcs.Close() })
	root, err := fusedisk.NewTree(srcs, fusedisk.TreeOptions{Disks: disks, Dir: mnt})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fusedisk.Mount(mnt, root, fusedisk.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
		srv.Wait()
	})
	return disks[0].Paths(mnt).Flat
}

// boot runs the guest with kernel parameters params on disk (read-only virtio) and returns
// the console output and how long QEMU ran.
func boot(t *testing.T, qemu string, cfg *metadata.VMConfig, params, disk string) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", params,
		// QEMU option values escape a comma by doubling it.
		"-drive", "file=" + strings.ReplaceAll(disk, ",", ",,") + ",format=raw,if=virtio,readonly=on",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("qemu did not finish within %v; console:\n%s", bootTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("qemu %s: %v; console:\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), took
}

// parseVerdict finds the single verdict line the agent printed in the console output.
func parseVerdict(console string) (*verdict.Verdict, error) {
	var found *verdict.Verdict
	for line := range strings.Lines(console) {
		v, err := verdict.Parse(line)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		if found != nil {
			return nil, errors.New("console has more than one verdict line")
		}
		found = v
	}
	if found == nil {
		return nil, errors.New("console has no verdict line")
	}
	return found, nil
}
