package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// The agent's format checks run here on the host over the partition images vmfs lays out;
// boot_test.go runs them in the guest over the real block devices.

// fixtureDisk lays out the payload disk of the committed fixtures with apk as the APK: the
// active APEXes in config order, the sample idsig, metadata as the seed host writes it.
func fixtureDisk(t testing.TB, apk string) *layout.Disk {
	t.Helper()
	source := func(path string) layout.Source {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return layout.Source{Path: path, Size: st.Size()}
	}
	var p layout.Payload
	var names []string
	for _, a := range testdata.APEXes() {
		if a.Active {
			p.Apexes = append(p.Apexes, source(testdata.Path(a.Rel)))
			names = append(names, a.Name)
		}
	}
	var err error
	if p.Metadata, err = metadata.EncodeMetadata(metadata.NewPayloadMetadata(testdata.ConfigPath, names)); err != nil {
		t.Fatal(err)
	}
	p.APK, p.Idsig = source(apk), source(testdata.IdsigPath())
	d, err := layout.PayloadDisk(p, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
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

func fixtureMetadata(t testing.TB, d *layout.Disk) *metadata.Metadata {
	t.Helper()
	m, err := readMetadata(bytes.NewReader(partitionBytes(t, d, "metadata")))
	if err != nil {
		t.Fatal(err)
	}
	return m
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
	d := fixtureDisk(t, testdata.APKPath())
	m := fixtureMetadata(t, d)
	for i, a := range m.GetApexes() {
		t.Run(a.GetName(), func(t *testing.T) {
			b := partitionBytes(t, d, apexLabel(i, a))
			if _, err := checkApex(a.GetName(), bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatalf("checkApex on vmfs's partition: %v", err)
			}
		})
	}

	// One mangled partition per row; apex 2 is com.vmfs.edge, 4093 bytes in 8192.
	const apex = 2
	want := m.GetApexes()[apex].GetName()
	good := partitionBytes(t, d, apexLabel(apex, m.GetApexes()[apex]))
	for _, tc := range []struct {
		name    string
		mangle  func([]byte) []byte
		name2   string // the name the metadata gives, when not want
		wantErr string
	}{
		{name: "trailer too large", mangle: func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(b)))
			return b
		}, wantErr: "size trailer says 8192 bytes"},
		{name: "trailer zero", mangle: func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[len(b)-4:], 0)
			return b
		}, wantErr: "size trailer says 0 bytes"},
		{name: "extra block", mangle: func(b []byte) []byte {
			out := append(append([]byte{}, b[:len(b)-4]...), make([]byte, blockSize)...)
			return append(out, b[len(b)-4:]...)
		}, wantErr: "a 4093-byte apex needs align4K(4093+4) = 8192"},
		{name: "trailer one byte long", mangle: func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[len(b)-4:], 4094)
			return b
		}, wantErr: "end at byte 4093, not at the apex size 4094"},
		{name: "no eocd", mangle: func(b []byte) []byte {
			copy(b[bytes.LastIndex(b, []byte("PK\x05\x06")):], "XXXX")
			return b
		}, wantErr: "no zip end of central directory record"},
		{name: "other name", mangle: func(b []byte) []byte { return b }, name2: "com.android.other",
			wantErr: `apex_manifest.pb names "com.vmfs.edge", the metadata "com.android.other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mangle(append([]byte{}, good...))
			name := want
			if tc.name2 != "" {
				name = tc.name2
			}
			_, err := checkApex(name, bytes.NewReader(b), int64(len(b)))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkApex error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckAPK(t *testing.T) {
	d := fixtureDisk(t, testdata.APKPath())
	apk := partitionBytes(t, d, "microdroid-apk")
	if st, err := os.Stat(testdata.APKPath()); err != nil || st.Size()%blockSize == 0 {
		t.Fatalf("the sample APK must need padding for this test: %v, %v", st, err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(*metadata.Metadata)
		wantErr string
	}{
		{name: "as laid out", edit: func(*metadata.Metadata) {}},
		{name: "config missing", edit: func(m *metadata.Metadata) {
			m.Payload = &metadata.Metadata_ConfigPath{ConfigPath: "/mnt/apk/assets/none.json"}
		},
			wantErr: "payload config: open assets/none.json"},
		{name: "apex missing from metadata", edit: func(m *metadata.Metadata) { m.Apexes = m.Apexes[:2] },
			wantErr: "the metadata lists [com.android.adbd com.android.os.statsd]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fixtureMetadata(t, d)
			tc.edit(m)
			_, err := checkAPK(m, bytes.NewReader(apk), int64(len(apk)))
			if tc.wantErr == "" && err != nil {
				t.Fatalf("checkAPK on vmfs's padded partition: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkAPK error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadIdsig(t *testing.T) {
	d := fixtureDisk(t, testdata.APKPath())
	good := partitionBytes(t, d, "microdroid-apk-idsig")
	want, err := metadata.OpenIdsig(testdata.IdsigPath())
	if err != nil {
		t.Fatal(err)
	}
	p := partition{Label: "microdroid-apk-idsig", Dev: "/dev/vda6"}
	for _, tc := range []struct {
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
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte{}, good...)
			tc.mangle(b)
			sig, err := readIdsig(p, bytes.NewReader(b), int64(len(b)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readIdsig error = %v, want one saying %q", err, tc.wantErr)
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
