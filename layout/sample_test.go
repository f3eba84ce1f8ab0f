package layout_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
	"vmfs/testdata/sampledisk"
)

// sampleAndroid12SHA256 is the sha256 of the android12 flat image of the committed sample
// (its active APEXes in config order, sample.apk and its idsig, metadata as the seed host
// writes it, derived GUIDs). It was recorded before the later profiles were added: the
// default disk must stay byte for byte what it was.
const sampleAndroid12SHA256 = "885e8c545172e8587c499282d2765a2b232b2b9bf0986414e9e1868524953d84"

// readers opens d's sources for layout.NewReader.
func readers(t *testing.T, d *layout.Disk) []io.ReaderAt {
	t.Helper()
	var srcs []io.ReaderAt
	for _, s := range d.Sources {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		srcs = append(srcs, f)
	}
	return srcs
}

func flatBytes(t *testing.T, d *layout.Disk) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(layout.NewReader(&d.Flat, readers(t, d)), 0, d.Flat.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSampleAndroid12Unchanged(t *testing.T) {
	// As vmfs laid it out before profiles, through the entry points it called then.
	source := func(path string) layout.Source {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return layout.Source{Path: path, Size: st.Size()}
	}
	var p layout.PayloadParts
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
	p.APK, p.Idsig = source(testdata.APKPath()), source(testdata.IdsigPath())
	old, err := layout.PayloadDisk(p, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// As a profile-aware caller does, at the default profile.
	sample, err := sampledisk.New(sampledisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*layout.Disk{"old entry points": old, "android12 profile": sample.Disk} {
		sum := sha256.Sum256(flatBytes(t, d))
		if got := hex.EncodeToString(sum[:]); got != sampleAndroid12SHA256 {
			t.Errorf("%s: android12 sample image (%d bytes) has sha256 %s, want %s", name, d.Flat.Size, got, sampleAndroid12SHA256)
		}
	}
}

// sampleCase is a sample disk with the APEX files that must be on it, in order, written
// out here from the fixtures' tables and AVF's rules rather than computed.
type sampleCase struct {
	name   string
	opts   sampledisk.Options
	apexes []string // Rel of each APEX fixture, in partition order
	extras bool     // the two extra APKs follow
}

var sampleCases = []sampleCase{
	{"android12", sampledisk.Options{},
		[]string{"apex/com.android.adbd.apex", "apex/com.android.os.statsd.apex", "apex/com.vmfs.edge.apex"}, false},
	// statsd is both asked for and required; shared-libs APEXes go on in both versions.
	{"android13", sampledisk.Options{Profile: metadata.Android13},
		[]string{"later/apex/com.android.os.statsd.apex", "later/apex/com.vmfs.edge.apex",
			"later/apex/factory/com.vmfs.sharedlibs.apex", "later/apex/com.vmfs.sharedlibs.apex"}, true},
	{"android14 debug full", sampledisk.Options{Profile: metadata.Android14, Debug: metadata.DebugFull},
		[]string{"later/apex/com.android.adbd.apex", "later/apex/com.android.os.statsd.apex", "later/apex/com.vmfs.edge.apex",
			"later/apex/factory/com.vmfs.sharedlibs.apex", "later/apex/com.vmfs.sharedlibs.apex"}, true},
	// A binary name has no config: only what the release adds, and no extra APKs.
	{"android14 binary name", sampledisk.Options{Profile: metadata.Android14, BinaryName: true},
		[]string{"later/apex/com.android.os.statsd.apex",
			"later/apex/factory/com.vmfs.sharedlibs.apex", "later/apex/com.vmfs.sharedlibs.apex"}, false},
	// Android 15 debugs by default.
	{"android15", sampledisk.Options{Profile: metadata.Android15},
		[]string{"later/apex/com.android.adbd.apex", "later/apex/com.android.os.statsd.apex", "later/apex/com.vmfs.edge.apex",
			"later/apex/factory/com.vmfs.sharedlibs.apex", "later/apex/com.vmfs.sharedlibs.apex"}, true},
	{"android15 binary name", sampledisk.Options{Profile: metadata.Android15, BinaryName: true, Debug: metadata.DebugNone},
		[]string{"later/apex/factory/com.vmfs.sharedlibs.apex", "later/apex/com.vmfs.sharedlibs.apex"}, true},
}

// expected returns the labels and bytes each partition of the case's disk must hold,
// built by hand from the fixture files.
func (c sampleCase) expected(t *testing.T, d *sampledisk.Disk) (labels []string, parts [][]byte) {
	t.Helper()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pad := func(b []byte) []byte { return append(b, make([]byte, (4096-len(b)%4096)%4096)...) }
	later := c.opts.Profile != metadata.Android12
	blob, err := metadata.EncodeMetadata(d.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	labels, parts = []string{"metadata"}, [][]byte{pad(blob)}
	if later {
		labels[0] = "payload-metadata"
	}
	for i, rel := range c.apexes {
		b := read(testdata.Path(rel))
		if !later { // the size trailer
			b = pad(append(b, 0, 0, 0, 0))
			binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(read(testdata.Path(rel)))))
		}
		labels, parts = append(labels, fmt.Sprintf("microdroid-apex-%d", i)), append(parts, pad(b))
	}
	apk, idsig := testdata.APKPath(), testdata.IdsigPath()
	if later {
		apk, idsig = testdata.LaterAPKPath(), testdata.LaterIdsigPath()
	}
	labels = append(labels, "microdroid-apk", "microdroid-apk-idsig")
	parts = append(parts, pad(read(apk)), pad(read(idsig)))
	if c.extras {
		for i, e := range testdata.LaterExtraAPKs() {
			labels = append(labels, fmt.Sprintf("extra-apk-%d", i), fmt.Sprintf("extra-idsig-%d", i))
			parts = append(parts, pad(read(e.APK)), pad(read(e.Idsig)))
		}
	}
	return labels, parts
}

// sampleDisks lays out every case and writes its flat image to a temp file.
func sampleDisks(t *testing.T, fn func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string)) {
	for _, c := range sampleCases {
		t.Run(c.name, func(t *testing.T) {
			d, err := sampledisk.New(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			image := filepath.Join(t.TempDir(), "payload.img")
			if err := os.WriteFile(image, flatBytes(t, d.Disk), 0o644); err != nil {
				t.Fatal(err)
			}
			fn(t, c, d, image)
		})
	}
}

func TestSampleDisksPartitionBytes(t *testing.T) {
	sampleDisks(t, func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string) {
		labels, parts := c.expected(t, d)
		if len(d.Partitions) != len(labels) {
			t.Fatalf("%d partitions, want %d", len(d.Partitions), len(labels))
		}
		flat, err := os.ReadFile(image)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range d.Partitions {
			if p.Label != labels[i] || !bytes.Equal(flat[p.Offset:p.Offset+p.Size], parts[i]) {
				t.Errorf("partition %d: %s with %d bytes, want %s with %d bytes as built by hand", i+1, p.Label, p.Size, labels[i], len(parts[i]))
			}
		}
	})
}

func TestSampleDisksSgdisk(t *testing.T) {
	sgdisk := testdata.RequireTool(t, "sgdisk")
	sampleDisks(t, func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string) {
		out, err := exec.Command(sgdisk, "-v", image).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") ||
			strings.Contains(string(out), "ERROR") || strings.Contains(string(out), "Caution") {
			t.Fatalf("sgdisk -v: %v\n%s", err, out)
		}
	})
}

func TestSampleDisksSfdisk(t *testing.T) {
	sfdisk := testdata.RequireTool(t, "sfdisk")
	sampleDisks(t, func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string) {
		out, err := exec.Command(sfdisk, "--json", image).Output()
		if err != nil {
			t.Fatalf("sfdisk --json: %v", err)
		}
		var pt struct {
			PartitionTable struct {
				Label      string
				Partitions []struct {
					Start, Size int64
					Name        string
				}
			}
		}
		if err := json.Unmarshal(out, &pt); err != nil {
			t.Fatal(err)
		}
		labels, parts := c.expected(t, d)
		if pt.PartitionTable.Label != "gpt" || len(pt.PartitionTable.Partitions) != len(labels) {
			t.Fatalf("sfdisk sees a %s table of %d partitions, want gpt with %d", pt.PartitionTable.Label,
				len(pt.PartitionTable.Partitions), len(labels))
		}
		start := int64(layout.HeaderSize / 512)
		for i, p := range pt.PartitionTable.Partitions {
			if p.Name != labels[i] || p.Start != start || p.Size != int64(len(parts[i])/512) {
				t.Errorf("partition %d: %+v, want %s at sector %d, %d sectors", i+1, p, labels[i], start, len(parts[i])/512)
			}
			start += int64(len(parts[i]) / 512)
		}
	})
}

// TestSampleDisksLoop reads every partition of each sample disk through the kernel: a
// read-only loop device whose partitions partx adds (libblkid's GPT parser).
func TestSampleDisksLoop(t *testing.T) {
	testdata.RequireRoot(t)
	losetup, partx := testdata.RequireTool(t, "losetup"), testdata.RequireTool(t, "partx")
	sampleDisks(t, func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string) {
		out, err := exec.Command(losetup, "-r", "-f", "--show", image).Output()
		if err != nil {
			testdata.Missing(t, "losetup: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() {
			exec.Command(partx, "-d", dev).Run()
			exec.Command(losetup, "-d", dev).Run()
		})
		if out, err := exec.Command(partx, "-a", dev).CombinedOutput(); err != nil {
			t.Fatalf("partx -a %s: %v %s", dev, err, out)
		}
		labels, parts := c.expected(t, d)
		for i, want := range parts {
			got, err := os.ReadFile(fmt.Sprintf("%sp%d", dev, i+1))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%sp%d (%s): %d bytes differ from the expected %d", dev, i+1, labels[i], len(got), len(want))
			}
		}
	})
}

// TestSampleDisksMetadataProtoc decodes each sample disk's metadata partition with protoc
// and compares it with the text Android would write, from the fixtures' tables.
func TestSampleDisksMetadataProtoc(t *testing.T) {
	protoc := testdata.RequireTool(t, "protoc")
	byRel := map[string]testdata.APEX{}
	for _, a := range append(testdata.APEXes(), testdata.LaterAPEXes()...) {
		byRel[a.Rel] = a
	}
	sampleDisks(t, func(t *testing.T, c sampleCase, d *sampledisk.Disk, image string) {
		var want strings.Builder
		want.WriteString("version: 1\n")
		for i, rel := range c.apexes {
			a := byRel[rel]
			fmt.Fprintf(&want, "apexes {\n  name: %q\n", a.Name)
			if c.opts.Profile != metadata.Android12 {
				fmt.Fprintf(&want, "  partition_name: \"microdroid-apex-%d\"\n  last_update_seconds: %d\n", i, a.LastUpdate)
				if a.Factory {
					want.WriteString("  is_factory: true\n")
				}
			}
			want.WriteString("}\n")
		}
		want.WriteString("apk {\n  name: \"apk\"\n  payload_partition_name: \"microdroid-apk\"\n  idsig_partition_name: \"microdroid-apk-idsig\"\n}\n")
		switch {
		case !c.opts.BinaryName:
			fmt.Fprintf(&want, "config_path: \"/mnt/apk/%s\"\n", testdata.ConfigPath)
		case c.extras:
			fmt.Fprintf(&want, "config {\n  payload_binary_name: %q\n  extra_apk_count: 2\n}\n", testdata.PayloadBinaryName)
		default:
			fmt.Fprintf(&want, "config {\n  payload_binary_name: %q\n}\n", testdata.PayloadBinaryName)
		}

		flat, err := os.ReadFile(image)
		if err != nil {
			t.Fatal(err)
		}
		part := flat[d.Partitions[0].Offset:]
		n := binary.BigEndian.Uint32(part)
		cmd := exec.Command(protoc, "--proto_path=../metadata", "--decode=android.microdroid.Metadata", "microdroid_metadata.proto")
		cmd.Stdin = bytes.NewReader(part[4 : 4+n])
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("protoc --decode: %v", err)
		}
		if string(out) != want.String() {
			t.Errorf("protoc --decode:\n%s\nwant:\n%s", out, want.String())
		}
	})
}
