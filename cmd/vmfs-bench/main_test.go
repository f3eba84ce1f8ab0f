package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	for _, tool := range []string{"nbdkit", "nbdfuse", "fio", "sfdisk", "qemu-img", "qemu-io", "qemu-storage-daemon"} {
		testdata.RequireTool(t, tool)
	}
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	bin, out, work := buildForRun(t, dir)
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

	checkNothingLeft(t, work)
	res := readResults(t, out)
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
		{"P7 rows (one per write size)", len(res.StateWrite.Rows), 2},
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
	checkVMM(t, res.VMM)
	checkStateWrites(t, res.StateWrite)
	switch {
	case noGuest != nil && (res.Boot.NotRun == "" || res.StateBoot.NotRun == ""):
		t.Errorf("P5 ran without a guest: %+v, %+v", res.Boot, res.StateBoot)
	case noGuest == nil && (len(res.Boot.Vmfs) != 1 || len(res.Boot.Flat) != 1):
		t.Errorf("P5 with the guest at %s: want one boot each way, got %+v", guest, res.Boot)
	case noGuest == nil && (len(res.StateBoot.State) != 1 || len(res.StateBoot.NoState) != 1):
		t.Errorf("P5 with state, the guest at %s: want one boot with state and one without, got %+v", guest, res.StateBoot)
	}

	md, err := os.ReadFile(filepath.Join(out, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"## Targets", "## P1", "## P2", "## P3", "## P2-vmm", "## P4", "## P5", "### P5 with state", "## P6", "## P7", "latest.png"} {
		if !bytes.Contains(md, []byte(h)) {
			t.Errorf("latest.md has no %q", h)
		}
	}
	if bytes.Contains(md, []byte("Not measured")) {
		t.Errorf("latest.md of a full run says a figure was not measured:\n%s", md)
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

// TestOnly: -only measures the figures it names alone: no other figure has
// samples, payloads are written only for the figures that read them, latest.md
// says which were left out, and no plot is left of figures that did not run.
func TestOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under testing.Short(): mounts vmfs")
	}
	for _, tool := range []string{"qemu-img", "qemu-io", "qemu-storage-daemon", "sfdisk"} {
		testdata.RequireTool(t, tool)
	}
	testdata.RequireFUSE(t)
	bin, _, _ := buildForRun(t, t.TempDir())
	for _, c := range []struct {
		only, fig string
		apks      bool // the figure reads payload APKs
		plot      bool
		wants     []string // in latest.md
		check     func(*testing.T, *results)
	}{
		{"p7", "P7", false, false, []string{"## P7", "4 KiB writes into vm-instance", "1 MiB writes into vm-instance"},
			func(t *testing.T, r *results) { checkStateWrites(t, r.StateWrite) }},
		{"p2-VMM", "P2-vmm", true, true, []string{"## P2-vmm", "payload.vmdk"},
			func(t *testing.T, r *results) { checkVMM(t, r.VMM) }},
	} {
		t.Run(c.fig, func(t *testing.T) {
			_, out, work := buildForRun(t, t.TempDir())
			// A plot of an earlier run, which this run's latest.md may not describe.
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, "latest.png"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			err := run(context.Background(), []string{"-smoke", "-only", c.only, "-vmfs", bin, "-out", out, "-workdir", work}, &log)
			t.Logf("driver log:\n%s", log.String())
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			checkNothingLeft(t, work)
			if wrote := strings.Contains(log.String(), "wrote ") && strings.Contains(log.String(), " APK "); wrote != c.apks {
				t.Errorf("the run wrote payload APKs: %t, want %t:\n%s", wrote, c.apks, log.String())
			}
			res := readResults(t, out)
			c.check(t, &res)
			ran := map[string]int{"P1": len(res.Ready), "P2": len(res.Reads), "P3": len(res.Random), "P2-vmm": len(res.VMM.Seq),
				"P4": len(res.Stream.PeakRSSKiB), "P5": len(res.Boot.Vmfs) + len(res.StateBoot.State) + len(res.Boot.NotRun),
				"P6": len(res.Service.Add), "P7": len(res.StateWrite.Rows)}
			for fig, n := range ran {
				if fig != c.fig && n > 0 {
					t.Errorf("%s ran: %+v", fig, res)
				}
			}
			if res.Env.Only != c.fig {
				t.Errorf("env.only %q, want %s", res.Env.Only, c.fig)
			}
			md, err := os.ReadFile(filepath.Join(out, "latest.md"))
			if err != nil {
				t.Fatal(err)
			}
			if n, want := bytes.Count(md, []byte("Not measured in this run (`-only "+c.fig+"`)")), 7; n != want {
				t.Errorf("latest.md says %d sections were not measured, want %d:\n%s", n, want, md)
			}
			for _, want := range c.wants {
				if !bytes.Contains(md, []byte(want)) {
					t.Errorf("latest.md has no %q:\n%s", want, md)
				}
			}
			_, statErr := os.Stat(filepath.Join(out, "latest.png"))
			if shown := bytes.Contains(md, []byte("latest.png")); shown != c.plot || (statErr == nil) != c.plot {
				t.Errorf("latest.md shows a plot: %t, latest.png: %v; want a plot %t", shown, statErr, c.plot)
			}
		})
	}
}

func TestOnlyFlag(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string // nil: an error
	}{
		{"P5,P7", []string{"P5", "P7"}},
		{" p3 ", []string{"P3"}},
		{"p2-VMM,P4", []string{"P2-vmm", "P4"}},
		{"P8", nil},
		{"P1,,P2", nil},
	} {
		cfg, err := parseFlags([]string{"-only", c.in}, io.Discard)
		if (err == nil) != (c.want != nil) {
			t.Errorf("-only %q: %v", c.in, err)
			continue
		}
		for _, f := range figures {
			if c.want != nil && cfg.runs(f) != slices.Contains(c.want, f) {
				t.Errorf("-only %q: runs(%s) = %t", c.in, f, cfg.runs(f))
			}
		}
	}
	if cfg, err := parseFlags(nil, io.Discard); err != nil || !cfg.runs("P1") || !cfg.runs("P7") {
		t.Errorf("no -only: %v, runs P1 %t, P7 %t; want every figure", err, cfg.runs("P1"), cfg.runs("P7"))
	}
}

// buildForRun builds vmfs into dir and makes the run's work dir; it returns
// the binary, the results dir (not made) and the work dir.
func buildForRun(t *testing.T, dir string) (bin, out, work string) {
	t.Helper()
	bin = filepath.Join(dir, "vmfs")
	if out, err := exec.Command("go", "build", "-o", bin, "vmfs/cmd/vmfs").CombinedOutput(); err != nil {
		t.Fatalf("build vmfs: %v\n%s", err, out)
	}
	out, work = filepath.Join(dir, "results"), filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, out, work
}

// checkNothingLeft fails unless work is empty and nothing is mounted under it.
func checkNothingLeft(t *testing.T, work string) {
	t.Helper()
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
}

func readResults(t *testing.T, out string) results {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	return res
}

// checkStateWrites fails unless P7 has one sample per write size of one
// repetition, each a speed, and the smoke run's image size.
func checkStateWrites(t *testing.T, sw stateWriteResult) {
	t.Helper()
	if sw.Bytes != 4<<20 || len(sw.Rows) != len(stateBlocks) {
		t.Fatalf("P7: %+v; want a 4 MiB image and a row per write size", sw)
	}
	for i, row := range sw.Rows {
		if row.Block != stateBlocks[i] || len(row.Vmfs) != 1 || len(row.QemuIO) != 1 || len(row.QemuIOStart) != 1 ||
			row.Vmfs[0] <= 0 || row.QemuIO[0] <= 0 || row.QemuIOStart[0] <= 0 {
			t.Errorf("P7 row %d: %+v; want %d-byte writes, one positive sample each", i, row, stateBlocks[i])
		}
	}
}

func checkVMM(t *testing.T, v vmmResult) {
	t.Helper()
	if len(v.Seq) == 0 || len(v.Random) == 0 {
		t.Errorf("P2-vmm: no rows: %+v", v)
	}
	for _, row := range append(v.Seq, v.Random...) {
		if len(row.Vmfs) != 1 || len(row.Copy) != 1 || row.Vmfs[0] <= 0 || row.Copy[0] <= 0 {
			t.Errorf("P2-vmm %s %s: want one positive sample each, got %+v", row.Image, row.Mode, row)
		}
	}
	if v.Originals == 0 {
		t.Errorf("P2-vmm: the VMDK names no original file: %+v", v)
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

// TestTargetVerdict: a miss says by how much, and a miss under 1% does not read 0%.
func TestTargetVerdict(t *testing.T) {
	for _, c := range []struct {
		t    target
		want string
	}{
		{target{goal: 0.8, value: series{0.796}}, "**missed**: 0.5% short"},
		{target{goal: 0.8, value: series{0.6}}, "**missed**: 25% short"},
		{target{goal: 1.1, atMost: true, value: series{1.2}}, "**missed**: 9% over"},
		{target{goal: 1.1, atMost: true, value: series{1.0}}, "met"},
		{target{goal: 1.1, atMost: true}, "not measured"},
	} {
		if got := c.t.verdict(); got != c.want {
			t.Errorf("goal %v, atMost %t, %v: %q, want %q", c.t.goal, c.t.atMost, c.t.value, got, c.want)
		}
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
