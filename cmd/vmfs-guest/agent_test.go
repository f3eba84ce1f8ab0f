package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/testdata/sampledisk"
)

// The agent's format checks run here on the host over the partition images vmfs lays out;
// boot_test.go runs them in the guest over the real block devices.

// sampleDisk lays out the samples' payload disk (testdata/sampledisk).
func sampleDisk(t testing.TB, o sampledisk.Options) *sampledisk.Disk {
	t.Helper()
	d, err := sampledisk.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// releaseOf is the guest's release table row of p.
func releaseOf(t testing.TB, p metadata.Profile) release {
	t.Helper()
	i := slices.IndexFunc(releases, func(r release) bool { return r.profile == p })
	if i < 0 {
		t.Fatalf("no release for %s", p)
	}
	return releases[i]
}

// partitionBytes reads the partition labelled label of d, as the guest sees it.
func partitionBytes(t testing.TB, d *layout.Disk, label string) []byte {
	t.Helper()
	var readers []io.ReaderAt
	for _, s := range d.Sources {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		readers = append(readers, f)
	}
	for i := range d.Partitions {
		p := &d.Partitions[i]
		if p.Label == label {
			b := make([]byte, p.Size)
			if _, err := layout.NewReader(&p.Image, readers).ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no partition %q", label)
	return nil
}

// diskMetadata reads the metadata partition of d as the guest does.
func diskMetadata(t testing.TB, d *sampledisk.Disk) *metadata.Metadata {
	t.Helper()
	m, err := readMetadata(bytes.NewReader(partitionBytes(t, d.Disk, d.Partitions[0].Label)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// profileOptions are the sample disks the agent's checks must accept.
var profileOptions = []sampledisk.Options{
	{},
	{Profile: metadata.Android13},
	{Profile: metadata.Android14, Debug: metadata.DebugFull},
	{Profile: metadata.Android14, BinaryName: true},
	{Profile: metadata.Android15},
	{Profile: metadata.Android15, BinaryName: true},
}

func optionsName(o sampledisk.Options) string {
	if o.BinaryName {
		return o.Profile.String() + " binary name"
	}
	return o.Profile.String()
}

func TestModuleOrder(t *testing.T) {
	for _, tc := range []struct {
		name, dep string
		want      []string
		wantErr   string
	}{
		{
			name: "dependencies first",
			dep: "md/dm-verity.ko: md/dm-bufio.ko md/dm-mod.ko lib/rs.ko\n" +
				"md/dm-bufio.ko: md/dm-mod.ko\n\nmd/dm-mod.ko:\nlib/rs.ko:\n",
			want: []string{"md/dm-mod.ko", "md/dm-bufio.ko", "lib/rs.ko", "md/dm-verity.ko"},
		},
		{name: "missing dependency", dep: "a.ko: b.ko\n", wantErr: "a.ko needs b.ko, which is not listed"},
		{name: "cycle", dep: "a.ko: b.ko\nb.ko: a.ko\n", wantErr: "dependency cycle"},
		{name: "no colon", dep: "a.ko\n", wantErr: "has no ':'"},
		{name: "listed twice", dep: "a.ko:\na.ko:\n", wantErr: "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := moduleOrder(strings.NewReader(tc.dep))
			if tc.wantErr != "" {
				// moduleOrder's errors are for the verdict's reader; no caller branches on them.
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("moduleOrder error = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("moduleOrder = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseUevent(t *testing.T) {
	for _, tc := range []struct {
		name, ev string
		want     partition
		ok       bool
	}{
		{
			name: "named partition",
			ev:   "MAJOR=254\nMINOR=5\nDEVNAME=vda5\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=5\nPARTNAME=microdroid-apk\n",
			want: partition{Label: "microdroid-apk", Dev: "/dev/vda5", Num: 5, Major: 254, Minor: 5},
			ok:   true,
		},
		{name: "no PARTN", ev: "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"},
		{name: "bad MINOR", ev: "MAJOR=254\nMINOR=x\nDEVNAME=vda1\nPARTN=1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUevent(tc.ev)
			if (err == nil) != tc.ok || tc.ok && got != tc.want {
				t.Fatalf("parseUevent = %+v, %v; want %+v, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestCheckApex(t *testing.T) {
	for _, o := range profileOptions {
		d := sampleDisk(t, o)
		m := diskMetadata(t, d)
		for i, a := range m.GetApexes() {
			t.Run(optionsName(o)+"/"+a.GetName(), func(t *testing.T) {
				b := partitionBytes(t, d.Disk, metadata.ApexLabel(i))
				if _, err := checkApex(releaseOf(t, o.Profile), a.GetName(), bytes.NewReader(b), int64(len(b))); err != nil {
					t.Fatalf("checkApex on vmfs's partition: %v", err)
				}
			})
		}
	}

	// One mangled partition per row. At android12 apex 2 is com.vmfs.edge, 4093 bytes in
	// 8192; at android13 apex 1 is com.vmfs.edge, 12288 bytes, no trailer.
	android12, android13 := sampleDisk(t, sampledisk.Options{}), sampleDisk(t, sampledisk.Options{Profile: metadata.Android13})
	trailer := func(b []byte, size uint32) []byte {
		binary.BigEndian.PutUint32(b[len(b)-4:], size)
		return b
	}
	for _, tc := range []struct {
		name    string
		disk    *sampledisk.Disk
		apex    int
		mangle  func([]byte) []byte
		name2   string // the name the metadata gives, when not the APEX's
		wantErr string
	}{
		{name: "trailer too large", disk: android12, apex: 2, mangle: func(b []byte) []byte { return trailer(b, uint32(len(b))) },
			wantErr: "size trailer says 8192 bytes"},
		{name: "trailer zero", disk: android12, apex: 2, mangle: func(b []byte) []byte { return trailer(b, 0) },
			wantErr: "size trailer says 0 bytes"},
		{name: "extra block", disk: android12, apex: 2, mangle: func(b []byte) []byte {
			out := append(append([]byte{}, b[:len(b)-4]...), make([]byte, blockSize)...)
			return append(out, b[len(b)-4:]...)
		}, wantErr: "a 4093-byte apex needs align4K(4093+4) = 8192"},
		{name: "trailer one byte long", disk: android12, apex: 2, mangle: func(b []byte) []byte { return trailer(b, 4094) },
			wantErr: "end at byte 4093, not at the apex size 4094"},
		{name: "no eocd", disk: android12, apex: 2, mangle: func(b []byte) []byte {
			copy(b[bytes.LastIndex(b, []byte("PK\x05\x06")):], "XXXX")
			return b
		}, wantErr: "no zip end of central directory record"},
		{name: "other name", disk: android12, apex: 2, mangle: func(b []byte) []byte { return b }, name2: "com.android.other",
			wantErr: `apex_manifest.pb names "com.vmfs.edge", the metadata "com.android.other"`},
		{name: "zero padding after the zip", disk: android13, apex: 1, mangle: func(b []byte) []byte { return append(b, make([]byte, blockSize)...) },
			wantErr: "not at the partition end 16384 (libziparchive refuses the 4096 bytes after)"},
		{name: "a size trailer where there is none", disk: android13, apex: 1, mangle: func(b []byte) []byte {
			return trailer(append(b, make([]byte, blockSize)...), 12288)
		}, wantErr: "libziparchive refuses the 4096 bytes after"},
		{name: "other name, no trailer", disk: android13, apex: 1, mangle: func(b []byte) []byte { return b }, name2: "com.android.other",
			wantErr: `apex_manifest.pb names "com.vmfs.edge", the metadata "com.android.other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := diskMetadata(t, tc.disk)
			b := tc.mangle(partitionBytes(t, tc.disk.Disk, metadata.ApexLabel(tc.apex)))
			name := m.GetApexes()[tc.apex].GetName()
			if tc.name2 != "" {
				name = tc.name2
			}
			rel := releaseOf(t, metadata.Android12)
			if tc.disk == android13 {
				rel = releaseOf(t, metadata.Android13)
			}
			_, err := checkApex(rel, name, bytes.NewReader(b), int64(len(b)))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkApex error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckAPK(t *testing.T) {
	if st, err := os.Stat(testdata.APKPath()); err != nil || st.Size()%blockSize == 0 {
		t.Fatalf("the sample APK must need padding for this test: %v, %v", st, err)
	}
	for _, o := range profileOptions {
		t.Run(optionsName(o), func(t *testing.T) {
			d := sampleDisk(t, o)
			apk := partitionBytes(t, d.Disk, "microdroid-apk")
			rel := releaseOf(t, o.Profile)
			reason, kept, err := checkAPK([]release{rel}, diskMetadata(t, d), d.ExtraApks, bytes.NewReader(apk), int64(len(apk)))
			if err != nil || len(kept) != 1 || kept[0] != rel {
				t.Fatalf("checkAPK on vmfs's padded partition: %v (kept %v)", err, kept)
			}
			if !strings.Contains(reason, "runs lib/x86_64/libsample.so") {
				t.Errorf("reason %q does not say it found the payload", reason)
			}
		})
	}

	android12 := sampleDisk(t, sampledisk.Options{})
	later := sampleDisk(t, sampledisk.Options{Profile: metadata.Android15})
	binary15 := sampleDisk(t, sampledisk.Options{Profile: metadata.Android15, BinaryName: true})
	for _, tc := range []struct {
		name    string
		disk    *sampledisk.Disk
		rels    []release
		nExtra  int
		edit    func(*metadata.Metadata)
		wantErr string
	}{
		{name: "config missing", disk: android12, rels: releases[:1], edit: func(m *metadata.Metadata) {
			m.Payload = &metadata.Metadata_ConfigPath{ConfigPath: "/mnt/apk/assets/none.json"}
		}, wantErr: "payload config: open assets/none.json"},
		{name: "apex missing from metadata", disk: android12, rels: releases[:1], edit: func(m *metadata.Metadata) { m.Apexes = m.Apexes[:2] },
			wantErr: "the metadata lists [com.android.adbd com.android.os.statsd]"},
		{name: "android12 apexes out of order", disk: android12, rels: releases[:1], edit: func(m *metadata.Metadata) {
			m.Apexes[0], m.Apexes[1] = m.Apexes[1], m.Apexes[0]
		}, wantErr: "the metadata lists [com.android.os.statsd com.android.adbd com.vmfs.edge]"},
		{name: "android15 config apex missing", disk: later, rels: releases[3:], edit: func(m *metadata.Metadata) {
			m.Apexes = slices.DeleteFunc(m.Apexes, func(a *metadata.ApexPayload) bool { return a.GetName() == "com.vmfs.edge" })
		}, nExtra: 2, wantErr: "asks for apexes [com.vmfs.edge com.android.os.statsd]"},
		{name: "extra apks missing", disk: later, rels: releases[3:], edit: func(*metadata.Metadata) {},
			nExtra: 1, wantErr: "the payload expects 2 extra apks, the disk has 1"},
		{name: "extra apk count", disk: binary15, rels: releases[3:], edit: func(*metadata.Metadata) {},
			nExtra: 3, wantErr: "the payload expects 2 extra apks, the disk has 3"},
		{name: "payload binary not in the apk", disk: binary15, rels: releases[3:], edit: func(m *metadata.Metadata) {
			m.GetConfig().PayloadBinaryName = "libnone.so"
		}, nExtra: 2, wantErr: "payload lib/x86_64/libnone.so is not a file in the apk"},
		{name: "the android12 config at android13 only", disk: android12, rels: releases[1:2], edit: func(*metadata.Metadata) {},
			wantErr: "android13: payload config /mnt/apk/assets/vm_config.json: export_tombstones is required at android13"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := diskMetadata(t, tc.disk)
			tc.edit(m)
			apk := partitionBytes(t, tc.disk.Disk, "microdroid-apk")
			_, _, err := checkAPK(tc.rels, m, tc.nExtra, bytes.NewReader(apk), int64(len(apk)))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkAPK error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}

	// A config only some candidate releases take narrows them: the Android 12 sample's
	// lacks export_tombstones, which Android 13 requires.
	t.Run("narrows the releases", func(t *testing.T) {
		m := diskMetadata(t, android12)
		apk := partitionBytes(t, android12.Disk, "microdroid-apk")
		_, kept, err := checkAPK(releases[1:], m, 0, bytes.NewReader(apk), int64(len(apk)))
		if err != nil || profileNames(kept) != "android14|android15" {
			t.Fatalf("kept %s, %v; want android14|android15", profileNames(kept), err)
		}
	})
}

func TestReleasesFor(t *testing.T) {
	meta := func(o sampledisk.Options) *metadata.Metadata { return diskMetadata(t, sampleDisk(t, o)) }
	m12, m13 := meta(sampledisk.Options{}), meta(sampledisk.Options{Profile: metadata.Android13})
	m14bin, m15bin := meta(sampledisk.Options{Profile: metadata.Android14, BinaryName: true}),
		meta(sampledisk.Options{Profile: metadata.Android15, BinaryName: true})
	for _, tc := range []struct {
		name, label string
		m           *metadata.Metadata
		cmdline     string
		want        string // profile names; "" with wantErr
		wantErr     string
	}{
		{"android12", "metadata", m12, "console=ttyS0", "android12", ""},
		{"later config path", "payload-metadata", m13, "", "android13|android14|android15", ""},
		{"named on the kernel command line", "payload-metadata", m13, "quiet vmfs.profile=android14 panic=-1", "android14", ""},
		{"binary name", "payload-metadata", m14bin, "", "android14|android15", ""},
		{"extra apk count", "payload-metadata", m15bin, "", "android15", ""},
		{"android12 label, later metadata", "metadata", m13, "", "", `apex 0 (com.android.os.statsd) has partition_name "microdroid-apex-0", android12's host writes ""`},
		{"later label, android12 metadata", "payload-metadata", m12, "", "", `android13's host writes "microdroid-apex-0"`},
		{"kernel names a release the disk is not", "payload-metadata", m15bin, "vmfs.profile=android14", "",
			"the kernel names android14, but the disk is not android14's"},
		{"kernel names no release", "payload-metadata", m13, "vmfs.profile=android16", "", "unknown profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := releasesFor(tc.label, tc.m, tc.cmdline)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("releasesFor = %v, %v; want an error saying %q", profileNames(got), err, tc.wantErr)
				}
				return
			}
			if err != nil || profileNames(got) != tc.want {
				t.Fatalf("releasesFor = %s, %v; want %s", profileNames(got), err, tc.want)
			}
		})
	}
}

func TestCheckLayout(t *testing.T) {
	m := diskMetadata(t, sampleDisk(t, sampledisk.Options{Profile: metadata.Android13}))
	good := func() map[string]partition {
		parts := map[string]partition{}
		for i, l := range payloadLabels(m, "payload-metadata", 2) {
			parts[l] = partition{Label: l, Dev: fmt.Sprintf("/dev/vda%d", i+1), Disk: "vda", Num: i + 1}
		}
		parts["vbmeta_a"] = partition{Label: "vbmeta_a", Dev: "/dev/vdb1", Disk: "vdb", Num: 1}
		return parts
	}
	if n := countExtras(good(), "vda"); n != 2 {
		t.Fatalf("countExtras = %d, want 2", n)
	}
	if _, err := checkLayout(good(), payloadLabels(m, "payload-metadata", 2)); err != nil {
		t.Fatalf("checkLayout on the laid out order: %v", err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(map[string]partition)
		wantErr string
	}{
		{"idsig before the extra apk", func(p map[string]partition) {
			a, s := p["extra-apk-1"], p["extra-idsig-1"]
			a.Num, s.Num = s.Num, a.Num
			p["extra-apk-1"], p["extra-idsig-1"] = a, s
		}, "extra-apk-1 (/dev/vda10) is partition 11 of vda, want 10"},
		{"apk on another disk", func(p map[string]partition) {
			e := p["microdroid-apk"]
			e.Disk = "vdb"
			p["microdroid-apk"] = e
		}, "microdroid-apk (/dev/vda6) is on vdb, the metadata on vda"},
		// Found by label like microdroid_manager does, extra-apk-1 is not counted
		// without extra-apk-0, and its idsigs are left over.
		{"extra apk 0 on another disk", func(p map[string]partition) {
			e := p["extra-apk-0"]
			e.Disk = "vdb"
			p["extra-apk-0"] = e
		}, "vda also holds extra-apk-1 (/dev/vda10), extra-idsig-0 (/dev/vda9), extra-idsig-1 (/dev/vda11)"},
		{"a stray partition", func(p map[string]partition) {
			p["extra-idsig-2"] = partition{Label: "extra-idsig-2", Dev: "/dev/vda12", Disk: "vda", Num: 12}
		}, "vda also holds extra-idsig-2 (/dev/vda12)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := good()
			tc.edit(parts)
			_, err := checkLayout(parts, payloadLabels(m, "payload-metadata", countExtras(parts, "vda")))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkLayout error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadIdsig(t *testing.T) {
	for _, tc := range []struct {
		o      sampledisk.Options
		label  string
		source string
	}{
		{sampledisk.Options{}, "microdroid-apk-idsig", testdata.IdsigPath()},
		{sampledisk.Options{Profile: metadata.Android13}, "extra-idsig-1", testdata.LaterExtraAPKs()[1].Idsig},
	} {
		d := sampleDisk(t, tc.o)
		good := partitionBytes(t, d.Disk, tc.label)
		want, err := metadata.OpenIdsig(tc.source)
		if err != nil {
			t.Fatal(err)
		}
		p := partition{Label: tc.label, Dev: "/dev/vda6"}
		for _, mc := range []struct {
			name    string
			mangle  func([]byte)
			wantErr string
		}{
			{name: "as laid out", mangle: func([]byte) {}},
			{name: "non-zero padding", mangle: func(b []byte) { b[len(b)-1] = 1 }, wantErr: "not zero"},
			{name: "tree past the partition", mangle: func(b []byte) {
				binary.LittleEndian.PutUint32(b[want.TreeOffset-4:], uint32(len(b)))
			}, wantErr: "past the"},
			{name: "bad version", mangle: func(b []byte) { b[0] = 3 }, wantErr: "bad version 3"},
		} {
			t.Run(tc.label+"/"+mc.name, func(t *testing.T) {
				b := append([]byte{}, good...)
				mc.mangle(b)
				sig, err := readIdsig(p, bytes.NewReader(b), int64(len(b)))
				if mc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), mc.wantErr) {
						t.Fatalf("readIdsig error = %v, want one saying %q", err, mc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if sig.TreeOffset != want.TreeOffset || sig.TreeSize != want.TreeSize ||
					!bytes.Equal(sig.RootHash, want.RootHash) {
					t.Fatalf("tree at %d+%d root %x, want %d+%d root %x", sig.TreeOffset, sig.TreeSize,
						sig.RootHash, want.TreeOffset, want.TreeSize, want.RootHash)
				}
			})
		}
	}
}

func TestVerityTable(t *testing.T) {
	root := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name, wantParams string
		salt             []byte
	}{
		{name: "no salt", wantParams: "1 254:5 7:0 4096 4096 153 0 sha256 " + strings.Repeat("ab", 32) + " -"},
		{name: "salt", salt: []byte{1, 2}, wantParams: "1 254:5 7:0 4096 4096 153 0 sha256 " + strings.Repeat("ab", 32) + " 0102"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, params, err := verityTable("254:5", "7:0", 153*blockSize, root, tc.salt)
			if err != nil {
				t.Fatal(err)
			}
			if params != tc.wantParams {
				t.Fatalf("params %q, want %q", params, tc.wantParams)
			}
			// struct dm_target_spec: u64 sector_start, u64 length, s32 status, u32 next, char type[16].
			if len(b)%8 != 0 || binary.LittleEndian.Uint32(b[20:]) != uint32(len(b)) {
				t.Fatalf("table is %d bytes with next %d; want a multiple of 8 equal to next", len(b), binary.LittleEndian.Uint32(b[20:]))
			}
			if got := binary.LittleEndian.Uint64(b[8:]); got != 153*8 {
				t.Fatalf("length %d sectors, want %d", got, 153*8)
			}
			if got := string(bytes.TrimRight(b[24:40], "\x00")); got != "verity" {
				t.Fatalf("target type %q", got)
			}
			if got, _, _ := bytes.Cut(b[40:], []byte{0}); string(got) != tc.wantParams {
				t.Fatalf("NUL-terminated params %q", got)
			}
		})
	}
}

func TestNewCheckErrno(t *testing.T) {
	err := &os.PathError{Op: "read", Path: "/dev/mapper/microdroid-apk", Err: errors.New("x")}
	if c := newCheck("x", "", err); c.OK || c.Errno != "" {
		t.Fatalf("non-errno failure: %+v", c)
	}
	c := newCheck("apk-verity", "", &os.PathError{Op: "read", Path: "/dev/dm-0", Err: unix.EIO})
	if c.OK || c.Errno != "EIO" {
		t.Fatalf("EIO failure: %+v", c)
	}
	if c := newCheck("x", "fine", nil); !c.OK || c.Reason != "fine" {
		t.Fatalf("success: %+v", c)
	}
}

func TestReportFinish(t *testing.T) {
	for _, tc := range []struct {
		name   string
		checks []check
		wantOK bool
	}{
		{name: "all pass", checks: []check{{Name: "a", OK: true}, {Name: "b", OK: true}}, wantOK: true},
		{name: "one fails", checks: []check{{Name: "a", OK: true}, {Name: "agent", Reason: "panic: x\nstack"}}},
		{name: "no checks", checks: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &report{}
			for _, c := range tc.checks {
				r.add(c)
			}
			var out strings.Builder
			if err := r.finish(&out); err != nil {
				t.Fatal(err)
			}
			r.add(check{Name: "late"})
			if err := r.finish(&out); err != nil {
				t.Fatal(err)
			}
			// A multi-line reason (a panic's stack) must still give one verdict line.
			if n := strings.Count(out.String(), "\n"); n != 2 {
				t.Fatalf("output %q has %d newlines, want the verdict alone on one line", out.String(), n)
			}
			v, err := parseVerdict(out.String())
			if err != nil {
				t.Fatal(err)
			}
			if v.OK != tc.wantOK || len(v.Checks) != len(tc.checks) {
				t.Fatalf("verdict %+v, want ok %v with %d checks", v, tc.wantOK, len(tc.checks))
			}
		})
	}
}
