package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/testdata"
)

// TestSmoke runs the whole driver on tiny payloads, once, so that the harness
// cannot rot: every figure must produce its rows and the files must be written.
// It asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under testing.Short(): mounts vmfs and nbdfuse")
	}
	for _, tool := range []string{"nbdkit", "nbdfuse", "fio", "sfdisk", "qemu-img", "qemu-io"} {
		testdata.RequireTool(t, tool)
	}
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "vmfs")
	if out, err := exec.Command("go", "build", "-o", bin, "vmfs/cmd/vmfs").CombinedOutput(); err != nil {
		t.Fatalf("build vmfs: %v\n%s", err, out)
	}
	out, work := filepath.Join(dir, "results"), filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	// make test builds the guest first (make guest); without it P5 says it skipped.
	guest := filepath.Join(testdata.Dir(), "..", "build", "guest")
	_, noGuest := os.Stat(filepath.Join(guest, "microdroid.json"))
	if noGuest != nil && testdata.InCI() {
		t.Fatalf("CI=true and no test guest (make guest): %v", noGuest)
	}
	var log bytes.Buffer
	err := run(context.Background(), []string{"-smoke", "-vmfs", bin, "-out", out, "-workdir", work, "-guest", guest}, &log)
	t.Logf("driver log:\n%s", log.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	left, err := os.ReadDir(work)
	if err != nil || len(left) > 0 {
		t.Errorf("the run left %v in its work dir (err %v)", left, err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), work) {
		t.Errorf("a mount under %s is left:\n%s", work, mi)
	}

	js, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"P1 rows (one per size)", len(res.Ready), 2},
		{"P2/P3 sequential rows", len(res.Reads), 6},
		{"P3 random rows", len(res.Random), 2},
		{"P2-vmm sequential rows", len(res.VMM.Seq), 8},
		{"P2-vmm random rows", len(res.VMM.Random), 4},
		{"P4 samples", len(res.Stream.PeakRSSKiB), 1},
		{"P6 add samples", len(res.Service.Add) + len(res.Service.AddCLI) + len(res.Service.Mount) + len(res.Service.Copy), 4},
		{"P6 many-payload samples", len(res.Service.ServiceRSSKiB) + len(res.Service.MountsRSSKiB) + len(res.Service.ServiceFDs) + len(res.Service.MountsAllMs), 4},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	for _, row := range res.Ready {
		if len(row.Vmfs) != 1 || len(row.Copy) != 1 || len(row.Seed) != 1 || len(row.NBD) != 1 {
			t.Errorf("P1 %d bytes: want one sample per method, got %+v", row.APKSize, row)
		}
	}
	for _, row := range res.Reads {
		if len(row.Direct) != 1 || len(row.Vmfs) != 1 || len(row.NBD) != 1 || row.Bytes == 0 {
			t.Errorf("read %s %s: want one sample per method, got %+v", row.File, row.Mode, row)
		}
	}
	for _, row := range append(res.VMM.Seq, res.VMM.Random...) {
		if len(row.Vmfs) != 1 || len(row.Copy) != 1 || row.Vmfs[0] <= 0 || row.Copy[0] <= 0 {
			t.Errorf("P2-vmm %s %s: want one positive sample each, got %+v", row.Image, row.Mode, row)
		}
	}
	if res.VMM.Originals == 0 {
		t.Errorf("P2-vmm: the VMDK names no original file: %+v", res.VMM)
	}
	switch {
	case noGuest != nil && res.Boot.NotRun == "":
		t.Errorf("P5 ran without a guest: %+v", res.Boot)
	case noGuest == nil && (len(res.Boot.Vmfs) != 1 || len(res.Boot.Flat) != 1):
		t.Errorf("P5 with the guest at %s: want one boot each way, got %+v", guest, res.Boot)
	}

	md, err := os.ReadFile(filepath.Join(out, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"## Targets", "## P1", "## P2", "## P3", "## P2-vmm", "## P4", "## P5", "## P6", "latest.png"} {
		if !bytes.Contains(md, []byte(h)) {
			t.Errorf("latest.md has no %q", h)
		}
	}
	f, err := os.Open(filepath.Join(out, "latest.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width < 100 || cfg.Height < 100 {
		t.Errorf("latest.png: %dx%d, %v", cfg.Width, cfg.Height, err)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true},
		{"16M", 16 << 20, true},
		{"1G", 1 << 30, true},
		{" 3890m", 3890 << 20, true},
		{"2k", 2048, true},
		{"", 0, false},
		{"M", 0, false},
		{"-1M", 0, false},
		{"1T", 0, false},
	} {
		t.Run(c.in, func(t *testing.T) {
			got, err := parseSize(c.in)
			if (err == nil) != c.ok || got != c.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d, ok %t", c.in, got, err, c.want, c.ok)
			}
		})
	}
}

func TestSeries(t *testing.T) {
	for _, c := range []struct {
		name          string
		s             series
		med, min, max float64
	}{
		{"one", series{3}, 3, 3, 3},
		{"odd", series{5, 1, 3}, 3, 1, 5},
		{"even", series{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.s.median() != c.med || c.s.min() != c.min || c.s.max() != c.max {
				t.Errorf("%v: median %v min %v max %v; want %v %v %v", c.s, c.s.median(), c.s.min(), c.s.max(), c.med, c.min, c.max)
			}
		})
	}
}

// TestRandomAPKSize checks that a generated APK has exactly the size asked for, so
// the passthrough row always has its 4 KiB-aligned APK, and holds the config.
func TestRandomAPKSize(t *testing.T) {
	for _, n := range []int64{64 << 10, 1<<20 + 4096, 1<<20 + 7} {
		path := filepath.Join(t.TempDir(), "a.apk")
		if err := writeRandomAPK(path, n, 1); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != n {
			t.Errorf("size %d, want %d", st.Size(), n)
		}
		in := inputs{apk: path, idsig: testdata.IdsigPath(), apexInfoList: testdata.APEXInfoListPath(), osDir: testdata.OSDir()}
		if _, err := resolve(in); err != nil {
			t.Errorf("resolve %d-byte APK: %v", n, err)
		}
	}
}
