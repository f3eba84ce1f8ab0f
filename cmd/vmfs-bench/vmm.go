package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"

	"vmfs"
)

// vmmRandomReads is the number of 4 KiB reads of one random-read figure, made by
// vmmRandomRuns qemu-io runs of the copy and of the mount's image in turn, so that
// both see the same load on a shared machine; starting qemu-io and opening the
// image are a few per cent of a run.
const (
	vmmRandomReads = 50000
	vmmRandomRuns  = 5
)

// vmmResult is P2-vmm: the payload disk read through QEMU's own block layer, as
// a VMM reads it, from the mount's VMDK, from its flat image and from a copy.
type vmmResult struct {
	DiskBytes   int64    `json:"disk_bytes"`
	Originals   int      `json:"vmdk_original_extents"`   // the VMDK's extents that name original files
	Pieces      int      `json:"vmdk_mount_extents"`      // and those in the mount: the synthesized pieces
	PieceBytes  int64    `json:"vmdk_mount_extent_bytes"` // what QEMU reads through FUSE from the VMDK
	RandomReads int      `json:"random_reads"`
	RandomRuns  int      `json:"random_runs"` // qemu-io runs the reads are split into
	Seq         []vmmRow `json:"sequential_mbps"`
	Random      []vmmRow `json:"random_4k_iops"`
}

// vmmRow is one image of the mount read cold or hot, and the pre-copied image read
// the same way in turn with it.
type vmmRow struct {
	Image    string `json:"image"`              // payload.vmdk or payload.img
	InFlight int    `json:"requests_in_flight"` // QEMU's requests at a time
	Mode     string `json:"mode"`               // cold: the first read after a fresh mount; hot: the second
	Vmfs     series `json:"vmfs"`
	Copy     series `json:"pre_copied"`
	img      vmmImage
}

// vmmInFlight are the sequential reads' requests at a time: qemu-img convert's
// default, then one, which shows what QEMU's vmdk driver costs by itself: it
// holds a lock across each read (vmdk_co_preadv), so a VMDK is read one
// request at a time however many are in flight.
var vmmInFlight = []int{8, 1}

// vmmImage is how QEMU is given one of the mount's images: the VMDK is what
// `vmfs run-app` hands it by default (--via extents), the flat image what it
// hands it with --via flat.
type vmmImage struct {
	name, format string
	path         func(vmfs.DiskFiles) string
}

var vmmImages = []vmmImage{
	{"payload.vmdk", "vmdk", func(d vmfs.DiskFiles) string { return d.VMDK }},
	{"payload.img", "raw", func(d vmfs.DiskFiles) string { return d.Flat }},
}

// p2vmm reads the whole payload disk with `qemu-img convert` to a null target, and
// reads it at random 4 KiB offsets with qemu-io, from each of vmmImages, cold and
// hot, each read paired with the same read of a pre-copied flat image. The
// originals are in the page cache, as in every figure. It fails before measuring
// when the VMDK and the copy differ.
func (b *bench) p2vmm(ctx context.Context, pf payloadFile) (vmmResult, error) {
	buf := make([]byte, readBlock)
	size := pf.plan.disk.Flat.Size
	res := vmmResult{DiskBytes: size, RandomReads: vmmRandomReads, RandomRuns: vmmRandomRuns}
	copyPath := filepath.Join(b.tmp, "vmm-copy.img")
	if err := copyFlat(pf.plan, copyPath); err != nil {
		return res, err
	}
	defer os.Remove(copyPath)
	syncDisk()
	if err := b.checkVMDK(ctx, pf, copyPath, &res); err != nil {
		return res, err
	}
	scripts := randomReadScripts(size, vmmRandomReads, vmmRandomRuns)
	seq := func(r vmmRow, format, path string) (c, v float64, err error) {
		dc, err := b.qemuConvert(ctx, "raw", copyPath, size, r.InFlight)
		if err != nil {
			return 0, 0, err
		}
		dv, err := b.qemuConvert(ctx, format, path, size, r.InFlight)
		return mbps(size, dc), mbps(size, dv), err
	}
	random := func(_ vmmRow, format, path string) (c, v float64, err error) {
		var dc, dv time.Duration
		for _, s := range scripts {
			t, err := b.timeQemuIO(ctx, s, qemuIORead("raw", copyPath)...)
			if err != nil {
				return 0, 0, err
			}
			dc += t
			if t, err = b.timeQemuIO(ctx, s, qemuIORead(format, path)...); err != nil {
				return 0, 0, err
			}
			dv += t
		}
		return vmmRandomReads / dc.Seconds(), vmmRandomReads / dv.Seconds(), nil
	}
	pair := func(img vmmImage, inFlight int) []vmmRow {
		return []vmmRow{{Image: img.name, InFlight: inFlight, Mode: "cold", img: img}, {Image: img.name, InFlight: inFlight, Mode: "hot", img: img}}
	}
	for _, n := range vmmInFlight {
		for _, img := range vmmImages {
			res.Seq = append(res.Seq, pair(img, n)...)
		}
	}
	for _, img := range vmmImages {
		res.Random = append(res.Random, pair(img, 1)...)
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, _, err := readAll(sourcePaths(pf.plan), buf); err != nil {
			return res, err
		}
		if err := b.vmmReads(pf.in.apk, res.Seq, seq); err != nil {
			return res, err
		}
		if err := b.vmmReads(pf.in.apk, res.Random, random); err != nil {
			return res, err
		}
		b.logf("P2-vmm rep %d/%d: %s", rep+1, b.cfg.reps, vmmSummary(res, rep))
	}
	return res, nil
}

// vmmReads appends one repetition to rows, pairs of a cold and a hot row: for
// each pair a fresh mount, then twice the copy and the mount's image read in
// turn by read.
func (b *bench) vmmReads(apk string, rows []vmmRow, read func(r vmmRow, format, path string) (copy, vmfs float64, err error)) error {
	for i := 0; i < len(rows); i += 2 {
		m, err := b.mountVmfs(apk, false)
		if err != nil {
			return err
		}
		d, err := payloadFiles(m)
		if err != nil {
			return err
		}
		for k := i; k < i+2; k++ {
			c, v, err := read(rows[k], rows[k].img.format, rows[k].img.path(d))
			if err != nil {
				return err
			}
			rows[k].Copy = append(rows[k].Copy, c)
			rows[k].Vmfs = append(rows[k].Vmfs, v)
		}
		if err := m.close.Close(); err != nil {
			return err
		}
	}
	return nil
}

// payloadFiles reads where m serves the payload disk; a mount whose VMDK would not
// be exact serves none, and the figure would measure the wrong thing.
func payloadFiles(m *vmfsMount) (vmfs.DiskFiles, error) {
	man, err := vmfs.ReadManifest(m.dir)
	if err != nil {
		return vmfs.DiskFiles{}, err
	}
	d := man.Payload()
	if d.VMDK == "" {
		return d, fmt.Errorf("mount %s serves no VMDK for its payload disk (vmfs.json has no vmdk)", m.dir)
	}
	return d, nil
}

// checkVMDK checks, on a mount of its own, that QEMU reads the same disk from the
// VMDK as from the copy (same size, `qemu-img compare`), and counts the VMDK's
// extents in the mount and outside it.
func (b *bench) checkVMDK(ctx context.Context, pf payloadFile, copyPath string, res *vmmResult) error {
	m, err := b.mountVmfs(pf.in.apk, false)
	if err != nil {
		return err
	}
	defer m.close.Close()
	d, err := payloadFiles(m)
	if err != nil {
		return err
	}
	out, err := b.qemu(ctx, b.cfg.qemuImg, "info", "--output=json", "-f", "vmdk", d.VMDK)
	if err != nil {
		return err
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("qemu-img info %s: %w", d.VMDK, err)
	}
	if info.VirtualSize != res.DiskBytes {
		return fmt.Errorf("QEMU reads %s as %d bytes, the flat image has %d", d.VMDK, info.VirtualSize, res.DiskBytes)
	}
	if out, err := b.qemu(ctx, b.cfg.qemuImg, "compare", "-f", "vmdk", "-F", "raw", d.VMDK, copyPath); err != nil {
		return fmt.Errorf("the VMDK and the copied flat image differ: %w: %s", err, bytes.TrimSpace(out))
	}
	if res.Originals, res.Pieces, res.PieceBytes, err = vmdkExtents(d.VMDK, m.dir); err != nil {
		return err
	}
	return m.close.Close()
}

// vmdkExtents counts the FLAT extents of the VMDK at path inside the mount at dir
// and outside it, and the bytes of those inside.
func vmdkExtents(path, dir string) (originals, pieces int, pieceBytes int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// RW <sectors> FLAT "<file>" <sector offset>
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[2] != "FLAT" {
			continue
		}
		sectors, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: extent %q: %w", path, sc.Text(), err)
		}
		file := strings.Trim(fields[3], `"`)
		if strings.HasPrefix(file, dir+"/") {
			pieces++
			pieceBytes += sectors * 512
		} else {
			originals++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if originals == 0 {
		return 0, 0, 0, fmt.Errorf("%s names no original file: QEMU would read all of it through the mount", path)
	}
	return originals, pieces, pieceBytes, nil
}

// qemuConvert reads the whole image through QEMU's block layer into a null target,
// inFlight requests at a time, with the host page cache (QEMU's default
// cache=writeback) and returns the time from exec to exit.
func (b *bench) qemuConvert(ctx context.Context, format, path string, size int64, inFlight int) (time.Duration, error) {
	start := time.Now()
	_, err := b.qemu(ctx, b.cfg.qemuImg, "convert", "-n", "-m", strconv.Itoa(inFlight), "-T", "writeback", "-f", format, path,
		"--target-image-opts", "driver=null-co,size="+strconv.FormatInt(size, 10))
	return time.Since(start), err
}

// timeQemuIO runs qemu-io with args, the image last, the commands of script (one
// a line) on its stdin, and returns the time from exec to exit. qemu-io reports a failed
// command on its output, not in its exit status: any output but its prompts
// is a failure.
func (b *bench) timeQemuIO(ctx context.Context, script []byte, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, b.cfg.qemuIO, args...)
	cmd.Stdin = bytes.NewReader(script)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	rest := strings.TrimSpace(strings.ReplaceAll(string(out), "qemu-io> ", ""))
	if err == nil && rest != "" {
		err = errors.New("a command failed")
	}
	if err != nil {
		return 0, fmt.Errorf("qemu-io on %s: %w: %s", args[len(args)-1], err, firstLine(rest))
	}
	return took, nil
}

// qemuIORead are qemu-io's arguments to read the image, read-only with the host
// page cache.
func qemuIORead(format, path string) []string {
	return []string{"-r", "-t", "writeback", "-f", format, path}
}

// qemu runs a QEMU tool and returns its stdout; a failure carries its stderr.
func (b *bench) qemu(ctx context.Context, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", filepath.Base(tool), strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// randomReadScripts are n qemu-io reads of 4 KiB at seeded random 4 KiB-aligned
// offsets of a disk of size bytes, split into runs scripts: the same offsets for
// every image and repetition.
func randomReadScripts(size int64, n, runs int) [][]byte {
	rng := rand.New(rand.NewPCG(17, 4096))
	scripts := make([][]byte, runs)
	for i := range scripts {
		var s bytes.Buffer
		for range n / runs {
			fmt.Fprintf(&s, "read -q %d 4k\n", rng.Int64N(size/4096)*4096)
		}
		scripts[i] = s.Bytes()
	}
	return scripts
}

func vmmSummary(v vmmResult, rep int) string {
	s := ""
	for _, r := range v.Seq {
		s += fmt.Sprintf("%s %s (%d at a time) %.0f vs copy %.0f MB/s; ", r.Image, r.Mode, r.InFlight, r.Vmfs[rep], r.Copy[rep])
	}
	for _, r := range v.Random {
		s += fmt.Sprintf("random %s %s %.0f vs copy %.0f IOPS; ", r.Image, r.Mode, r.Vmfs[rep], r.Copy[rep])
	}
	return s
}

// vmmTargets are the targets for P2-vmm: the VMDK, read through QEMU's
// block layer, against the pre-copied image.
func vmmTargets(v vmmResult) []target {
	var ts []target
	through := fmt.Sprintf("QEMU reads the VMDK's %d original files from their page cache, as it reads the copy, and only %s "+
		"(%d synthesized pieces) through the mount", v.Originals, size(v.PieceBytes), v.Pieces)
	for _, row := range v.Seq {
		if row.Image != "payload.vmdk" || row.InFlight != vmmInFlight[0] {
			continue
		}
		t := target{figure: "P2-vmm", what: fmt.Sprintf("whole disk through QEMU (`qemu-img convert`, %d requests in flight), %s %s ÷ pre-copied image", row.InFlight, row.Image, row.Mode),
			goal: 0.6, value: ratio(row.Vmfs, row.Copy)}
		if row.Mode == "hot" {
			t.goal = 0.9
		}
		t.why = through + "; but QEMU's vmdk driver holds a lock across each read (vmdk_co_preadv, QEMU 7.2), so the VMDK's requests " +
			"run one at a time while the raw copy's run side by side on both cores"
		for _, one := range v.Seq {
			if one.Image == row.Image && one.Mode == row.Mode && one.InFlight == 1 {
				t.why += fmt.Sprintf(": with one request at a time for both, the VMDK reads at %s× of the copy", sig(ratio(one.Vmfs, one.Copy).median()))
			}
		}
		ts = append(ts, t)
	}
	for _, row := range v.Random {
		if row.Image == "payload.vmdk" && row.Mode == "hot" {
			ts = append(ts, target{figure: "P2-vmm", what: fmt.Sprintf("4 KiB random reads through QEMU (qemu-io), %s %s ÷ pre-copied image", row.Image, row.Mode),
				goal: 0.9, value: ratio(row.Vmfs, row.Copy), why: through})
		}
	}
	return ts
}

// vmmSection is the P2-vmm section of latest.md.
func vmmSection(p printer, v vmmResult) {
	p("The %s payload disk of P2. **payload.vmdk** (`-f vmdk`): the mount's VMDK, which `vmfs run-app` gives QEMU by default "+
		"(`--via extents`); its FLAT extents name %d original files and %d synthesized pieces in the mount (%s of the disk). "+
		"**payload.img** (`-f raw`): the mount's flat image, every byte through FUSE (`--via flat`). **pre-copied**: the flat image "+
		"copied beforehand (as in P1), read the same way right before each read of the mount. **cold**: the first read after a fresh "+
		"mount, the originals in the page cache; **hot**: the second read. QEMU uses the host page cache (cache=writeback, its default "+
		"for a VMM too). Each run is timed from exec to exit, so opening the image (for the VMDK: every extent file) counts. "+
		"Before measuring, `qemu-img compare` found the VMDK and the copy identical.\n\n",
		size(v.DiskBytes), v.Originals, v.Pieces, size(v.PieceBytes))
	p("Whole disk: `qemu-img convert -n -m <requests in flight> -T writeback -f <format> <image> --target-image-opts driver=null-co,size=%d` "+
		"(the null target discards the bytes). 8 requests in flight is qemu-img's default, and a guest's readahead keeps several in flight too; "+
		"QEMU's vmdk driver takes a lock around each read, so the VMDK's run one at a time. With 1 for both, the lock costs nothing.\n\n", v.DiskBytes)
	p("| image | requests in flight | read | pre-copied MB/s | vmfs MB/s | vmfs ÷ pre-copied |\n|---|---|---|---|---|---|\n")
	for _, r := range v.Seq {
		p("| %s | %d | %s | %s | %s | %s× |\n", r.Image, r.InFlight, r.Mode, r.Copy.sigCell(), r.Vmfs.sigCell(), ratio(r.Vmfs, r.Copy).sigCell())
	}
	p("\n4 KiB random reads: %d commands `read -q <offset> 4k` given on stdin to `qemu-io -r -t writeback -f <format> <image>`, "+
		"one at a time, at the same seeded random 4 KiB-aligned offsets over the whole disk for every image, in %d runs of "+
		"qemu-io on the copy and the mount's image in turn; IOPS = reads ÷ the runs' time from exec to exit, qemu-io's own cost "+
		"per command (tens of µs, most of each read's time) included for both.\n\n", v.RandomReads, v.RandomRuns)
	p("| image | read | pre-copied IOPS | vmfs IOPS | vmfs ÷ pre-copied |\n|---|---|---|---|---|\n")
	for _, r := range v.Random {
		p("| %s | %s | %s | %s | %s× |\n", r.Image, r.Mode, r.Copy.sigCell(), r.Vmfs.sigCell(), ratio(r.Vmfs, r.Copy).sigCell())
	}
}

// vmmPanel draws P2-vmm's whole-disk reads.
func vmmPanel(v vmmResult) (*plot.Plot, error) {
	var groups []string
	for _, r := range v.Seq {
		groups = append(groups, fmt.Sprintf("%s %s ×%d", strings.TrimPrefix(r.Image, "payload."), r.Mode, r.InFlight))
	}
	return barPanel("Whole disk through QEMU's block layer", "MB/s", groups, []string{"pre-copied image", "vmfs"},
		func(g, m int) float64 { return []series{v.Seq[g].Copy, v.Seq[g].Vmfs}[m].median() })
}
