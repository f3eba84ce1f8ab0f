// Command vmfs-bench measures vmfs against what a user would do instead of mounting
// it (copy a flat image, write the seed's filler files, serve the files with
// nbdkit + nbdfuse, write a VM's state with qemu-io) and against direct reads of the
// original bytes, and writes the results as a table (latest.md), a plot
// (latest.png) and raw samples (latest.json). It makes its payloads in a temp dir
// and drives the vmfs binary, nbdkit, nbdfuse, fio, qemu-img and qemu-io as a user would; it
// imports vmfs's packages to lay out the baselines' disks the way vmfs does, as a
// service's client (P6), to read a mount's manifest (P2-vmm) and to boot a payload with and without state through the
// same path (P5), which the command line cannot. It leaves no mount, process or
// file behind, even on error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"vmfs/testdata"
)

// config is the command line.
type config struct {
	vmfs       string
	out        string
	workDir    string
	guest      string
	sizes      []int64 // P1 payloads; the largest is streamed in P4
	readSize   int64   // the payload of P2 and P3
	reps       int
	jobs       int
	fioRuntime time.Duration
	accel      string // QEMU accelerator of P5
	bootSize   int64  // random bytes added to the signed sample APK in P5
	stateSize  int64  // the instance images P7 writes whole
	smoke      bool
	only       map[string]bool // the figures to measure; nil: all

	nbdkit, nbdfuse, fio, qemuImg, qemuIO string // resolved tool paths
}

// figures are the figures a run can measure (-only); P2 and P3 are measured together.
var figures = []string{"P1", "P2", "P3", "P2-vmm", "P4", "P5", "P6", "P7"}

// runs says whether the run measures any of figs.
func (c config) runs(figs ...string) bool {
	if c.only == nil {
		return true
	}
	for _, f := range figs {
		if c.only[f] {
			return true
		}
	}
	return false
}

// bench is one run: its config, inputs, temp dir and what to undo at the end.
type bench struct {
	cfg     config
	in      inputs // the fixed inputs; apk is set per payload
	tmp     string
	log     io.Writer
	closers []*closer
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "vmfs-bench: "+format+"\n", args...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmfs-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("vmfs-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.vmfs, "vmfs", "build/vmfs", "the vmfs binary")
	fs.StringVar(&c.out, "out", "cmd/vmfs-bench/results", "directory for latest.md, latest.png and latest.json")
	fs.StringVar(&c.workDir, "workdir", os.TempDir(), "where the run's temp dir (payloads, copies) goes; needs twice the largest size free")
	fs.StringVar(&c.guest, "guest", "build/guest", "the test guest (make guest), as --os-dir for P5")
	sizes := fs.String("sizes", "16M,1G,3890M", "P1 APK sizes, comma-separated (K, M, G = KiB, MiB, GiB); the largest is streamed in P4")
	readSize := fs.String("read-size", "1G", "APK size of the P2/P3 read figures")
	bootSize := fs.String("boot-size", "64M", "random bytes added to the signed sample APK that P5 boots (0: the sample as is)")
	fs.IntVar(&c.reps, "reps", 7, "repetitions of every figure")
	fs.IntVar(&c.jobs, "jobs", 4, "fio jobs for the random reads")
	fs.DurationVar(&c.fioRuntime, "fio-runtime", 3*time.Second, "length of each fio run (whole seconds)")
	fs.StringVar(&c.accel, "accel", "tcg", "QEMU accelerator for P5: tcg, or kvm where it works (here it hangs)")
	stateSize := fs.String("state-size", "64M", "size of the instance images P7 writes whole")
	only := fs.String("only", "", "measure only these figures, comma-separated (P1 to P7 and P2-vmm; P2 and P3 run together), into an -out of their own; default: all")
	fs.BoolVar(&c.smoke, "smoke", false, "tiny sizes, one repetition: checks the harness, not the speed")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.smoke {
		*sizes, *readSize, *bootSize, *stateSize, c.reps, c.fioRuntime = "1M,3M", "2M", "1M", "4M", 1, time.Second
	}
	if *only != "" {
		c.only = map[string]bool{}
		for _, f := range strings.Split(*only, ",") {
			i := slices.IndexFunc(figures, func(fig string) bool { return strings.EqualFold(fig, strings.TrimSpace(f)) })
			if i < 0 {
				return c, fmt.Errorf("-only: no figure %q (%s)", f, strings.Join(figures, ", "))
			}
			c.only[figures[i]] = true
		}
	}
	var err error
	for _, s := range strings.Split(*sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return c, fmt.Errorf("-sizes: %w", err)
		}
		c.sizes = append(c.sizes, n)
	}
	if c.readSize, err = parseSize(*readSize); err != nil {
		return c, fmt.Errorf("-read-size: %w", err)
	}
	if c.stateSize, err = parseSize(*stateSize); err != nil {
		return c, fmt.Errorf("-state-size: %w", err)
	}
	if *bootSize != "0" {
		if c.bootSize, err = parseSize(*bootSize); err != nil {
			return c, fmt.Errorf("-boot-size: %w", err)
		}
	}
	if c.stateSize%stateBlocks[len(stateBlocks)-1] != 0 {
		return c, fmt.Errorf("-state-size: %s is no multiple of the largest write, %s", size(c.stateSize), size(stateBlocks[len(stateBlocks)-1]))
	}
	if c.reps < 1 || c.jobs < 1 || c.fioRuntime < time.Second {
		return c, errors.New("-reps and -jobs must be at least 1, -fio-runtime at least 1s")
	}
	return c, nil
}

// parseSize reads "16M", "1G", "4096".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

// run measures everything and writes the results; every mount, server and temp file
// it made is gone when it returns.
func run(ctx context.Context, args []string, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, log: stderr, in: inputs{
		idsig:        testdata.IdsigPath(),
		apexInfoList: testdata.APEXInfoListPath(),
		osDir:        testdata.OSDir(),
	}}
	if err := b.findTools(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp(cfg.workDir, "vmfs-bench-"); err != nil {
		return err
	}
	defer func() {
		cerr := b.closeAll()
		if cerr != nil {
			// Something may still be mounted inside: leave the files to the user.
			err = errors.Join(err, cerr, fmt.Errorf("left %s in place", b.tmp))
			return
		}
		err = errors.Join(err, os.RemoveAll(b.tmp))
	}()
	res, err := b.measure(ctx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted (%w); everything it started is stopped", err)
	}
	if err != nil {
		return err
	}
	return b.write(res)
}

// findTools checks for everything the run execs, before any work is done.
func (b *bench) findTools() error {
	st, err := os.Stat(b.cfg.vmfs)
	if err != nil || st.IsDir() {
		return fmt.Errorf("vmfs binary %s: not found (go build -o %s ./cmd/vmfs)", b.cfg.vmfs, b.cfg.vmfs)
	}
	if b.cfg.vmfs, err = filepath.Abs(b.cfg.vmfs); err != nil {
		return err
	}
	for _, t := range []struct {
		path *string
		name string
		pkg  string
		figs []string // the figures that run it
	}{
		{&b.cfg.nbdkit, "nbdkit", "nbdkit", []string{"P1", "P2", "P3"}},
		{&b.cfg.nbdfuse, "nbdfuse", "libnbd-bin", []string{"P1", "P2", "P3"}},
		{&b.cfg.fio, "fio", "fio", []string{"P2", "P3"}},
		{&b.cfg.qemuImg, "qemu-img", "qemu-utils", []string{"P2-vmm"}},
		{&b.cfg.qemuIO, "qemu-io", "qemu-utils", []string{"P2-vmm", "P7"}},
	} {
		if !b.cfg.runs(t.figs...) {
			continue
		}
		if *t.path, err = exec.LookPath(t.name); err != nil {
			return fmt.Errorf("%s not found (apt-get install %s)", t.name, t.pkg)
		}
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		return errors.New("fusermount3 not found (apt-get install fuse3)")
	}
	return nil
}

// measure makes the payloads the chosen figures read and runs the figures in order.
func (b *bench) measure(ctx context.Context) (*results, error) {
	res := &results{Env: b.environment()}
	defer func() { res.Env.Load += " → " + loadavg() }()
	largest := slices.Max(b.cfg.sizes)
	var need []int64
	if b.cfg.runs("P2", "P3", "P2-vmm") {
		need = append(need, b.cfg.readSize)
	}
	if b.cfg.runs("P1") {
		need = append(need, b.cfg.sizes...)
	}
	if b.cfg.runs("P4") {
		need = append(need, largest)
	}
	if b.cfg.runs("P6") {
		need = append(need, nearestGiB(b.cfg.sizes))
	}
	payloads := map[int64]payloadFile{}
	for i, n := range need {
		if _, ok := payloads[n]; ok {
			continue
		}
		in := b.in
		in.apk = filepath.Join(b.tmp, fmt.Sprintf("payload-%d.apk", n))
		start := time.Now()
		if err := writeRandomAPK(in.apk, n, uint64(i)); err != nil {
			return nil, err
		}
		p, err := resolve(in)
		if err != nil {
			return nil, err
		}
		payloads[n] = payloadFile{in: in, plan: p}
		b.logf("wrote %s APK %s in %v", size(n), in.apk, time.Since(start).Round(time.Millisecond))
	}
	syncDisk()
	var err error
	if b.cfg.runs("P1") {
		var p1 []payloadFile
		for _, n := range b.cfg.sizes {
			p1 = append(p1, payloads[n])
		}
		if res.Ready, err = b.p1(ctx, p1); err != nil {
			return nil, fmt.Errorf("P1: %w", err)
		}
	}
	if b.cfg.runs("P2", "P3") {
		if res.Reads, res.Random, err = b.p2p3(ctx, payloads[b.cfg.readSize]); err != nil {
			return nil, fmt.Errorf("P2/P3: %w", err)
		}
	}
	if b.cfg.runs("P2-vmm") {
		if res.VMM, err = b.p2vmm(ctx, payloads[b.cfg.readSize]); err != nil {
			return nil, fmt.Errorf("P2-vmm: %w", err)
		}
	}
	if b.cfg.runs("P4") {
		if res.Stream, err = b.p4(ctx, payloads[largest]); err != nil {
			return nil, fmt.Errorf("P4: %w", err)
		}
	}
	if b.cfg.runs("P5") {
		if res.Boot, err = b.p5(ctx); err != nil {
			return nil, fmt.Errorf("P5: %w", err)
		}
		if res.StateBoot, err = b.p5State(ctx); err != nil {
			return nil, fmt.Errorf("P5 with state: %w", err)
		}
	}
	if b.cfg.runs("P6") {
		if res.Service, err = b.p6(ctx, payloads[nearestGiB(b.cfg.sizes)]); err != nil {
			return nil, fmt.Errorf("P6: %w", err)
		}
	}
	if b.cfg.runs("P7") {
		if res.StateWrite, err = b.p7(ctx); err != nil {
			return nil, fmt.Errorf("P7: %w", err)
		}
	}
	return res, nil
}

// write puts latest.md, latest.png and latest.json into the output directory.
func (b *bench) write(res *results) error {
	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "latest.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "latest.md"), []byte(report(res, b.cfg)), 0o644); err != nil {
		return err
	}
	png := filepath.Join(b.cfg.out, "latest.png")
	if !hasPlot(res) {
		// Not this run's: latest.md does not show it.
		if err := os.Remove(png); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if err := plotPNG(res, png); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	b.logf("wrote %s", filepath.Join(b.cfg.out, "latest.md"))
	return nil
}

// env says where the numbers come from.
type env struct {
	Date    string `json:"date"`
	Commit  string `json:"vmfs_commit"`
	Kernel  string `json:"kernel"`
	CPU     string `json:"cpu"`
	CPUs    int    `json:"cpus"`
	MemGiB  int64  `json:"mem_gib"`
	Go      string `json:"go"`
	Tools   string `json:"tools"`
	WorkFS  string `json:"work_fs"`
	Sizes   string `json:"sizes"`
	Reps    int    `json:"reps"`
	Jobs    int    `json:"fio_jobs"`
	Runtime string `json:"fio_runtime"`
	Load    string `json:"loadavg"`        // at the start and the end of the run
	Only    string `json:"only,omitempty"` // the figures measured (-only); "": all
}

func (b *bench) environment() env {
	e := env{
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Reps: b.cfg.reps, Jobs: b.cfg.jobs, Runtime: b.cfg.fioRuntime.String(),
	}
	for _, f := range figures {
		if b.cfg.only[f] {
			e.Only = strings.TrimPrefix(e.Only+","+f, ",")
		}
	}
	var parts []string
	for _, n := range b.cfg.sizes {
		parts = append(parts, size(n))
	}
	e.Sizes = strings.Join(parts, ", ") + "; reads: " + size(b.cfg.readSize)
	first := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).Output()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	e.Load = loadavg()
	e.Commit = first("git", "-C", testdata.Dir(), "describe", "--always", "--dirty")
	e.Kernel = first("uname", "-r")
	var tools []string
	for _, t := range []string{b.cfg.nbdkit, b.cfg.nbdfuse, b.cfg.fio, b.cfg.qemuImg, b.cfg.qemuIO} {
		if t != "" { // found: the run uses it
			tools = append(tools, first(t, "--version"))
		}
	}
	e.Tools = strings.Join(tools, ", ")
	e.WorkFS = first("findmnt", "-n", "-o", "FSTYPE", "-T", b.cfg.workDir)
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				e.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if kib, err := fileField("/proc/meminfo", "MemTotal"); err == nil {
		e.MemGiB = (kib + 1<<19) >> 20
	}
	return e
}

// loadavg is the 1-minute load average: the machine may be shared.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
