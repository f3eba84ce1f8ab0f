package main

import (
	"fmt"
	"math"
	"strings"

	"vmfs"
)

// target is one goal of the issue checked against a measured ratio.
type target struct {
	figure, what string
	goal         float64
	atMost       bool   // the ratio must be <= goal (else >=)
	value        series // per-repetition ratios
	why          string // said when the goal is missed
}

func (t target) met() bool {
	if t.atMost {
		return t.value.median() <= t.goal
	}
	return t.value.median() >= t.goal
}

func (t target) goalText() string {
	if t.atMost {
		return "≤ " + sig(t.goal) + "×"
	}
	return "≥ " + sig(t.goal) + "×"
}

// verdict says met, or missed and by how much.
func (t target) verdict() string {
	if len(t.value) == 0 {
		return "not measured"
	}
	if t.met() {
		return "met"
	}
	m := t.value.median()
	if t.atMost {
		return "**missed**: " + percent(m/t.goal-1) + " over"
	}
	return "**missed**: " + percent(1-m/t.goal) + " short"
}

// percent prints a miss of f (0.05 for 5%), with a decimal under 1% so that a
// miss never reads 0%.
func percent(f float64) string {
	if f < 0.01 {
		return fmt.Sprintf("%.1f%%", f*100)
	}
	return fmt.Sprintf("%.0f%%", f*100)
}

// targets derives the targets from the results.
func targets(r *results) []target {
	var ts []target
	if n := len(r.Ready); n > 0 {
		small, large := r.Ready[0], r.Ready[n-1]
		for _, row := range r.Ready {
			if row.APKSize < small.APKSize {
				small = row
			}
			if row.APKSize > large.APKSize {
				large = row
			}
		}
		ts = append(ts, target{
			figure: "P1", what: fmt.Sprintf("vmfs mount time, %s ÷ %s payload", size(large.APKSize), size(small.APKSize)),
			goal: 1.5, atMost: true, value: ratio(large.Vmfs, small.Vmfs),
			why: "mount time should not depend on the payload size; see the P1 table for which step grows",
		})
		var sizes []int64
		for _, row := range r.Ready {
			sizes = append(sizes, row.APKSize)
		}
		gib := r.Ready[0]
		for _, row := range r.Ready {
			if row.APKSize == nearestGiB(sizes) {
				gib = row
			}
		}
		ts = append(ts, target{
			figure: "P1", what: fmt.Sprintf("copying the flat image ÷ vmfs mount, %s payload", size(gib.APKSize)),
			goal: 100, value: ratio(gib.Copy, gib.Vmfs),
			why: fmt.Sprintf("the copy runs at %s MB/s here, page cache to page cache without fsync; "+
				"`vmfs mount` takes %s ms, of which starting the vmfs binary costs %s ms and happens twice "+
				"(the client, then the detached server), while laying out the disk takes about the %s ms of the in-process seed column; "+
				"the target needs a mount of %s ms or a copy slower than %s MB/s",
				sig(float64(gib.DiskSize)/1e6/(gib.Copy.median()/1000)), sig(gib.Vmfs.median()), sig(gib.Exec.median()), sig(gib.Seed.median()),
				sig(gib.Copy.median()/100), sig(float64(gib.DiskSize)/1e6/(gib.Vmfs.median()*100/1000))),
		})
	}
	var pass []readRow
	for _, row := range r.Reads {
		if strings.Contains(row.File, "passthrough") {
			pass = append(pass, row)
		}
	}
	for _, row := range r.Reads {
		t := target{figure: "P2", what: fmt.Sprintf("%s %s ÷ direct read", row.File, row.Mode), goal: 0.6, value: ratio(row.Vmfs, row.Direct)}
		t.why = fmt.Sprintf("every readahead window (1 MiB) is a FUSE round trip: the reader waits while the vmfs server "+
			"wakes and splices the bytes from the originals' page cache to /dev/fuse (%s ms of server CPU per read of %s), and the "+
			"kernel fills the mount's own page cache with them, a copy the direct read does not make", row.ServerCPU.cell("%.0f"), size(row.Bytes))
		if row.Mode == "hot" {
			t.goal = 0.9
			t.why = fmt.Sprintf("vmfs is not involved here (its server used %s ms of CPU during the read): the pages are in the "+
				"mount's page cache, so this is the kernel's FUSE read path against ext4's; nbdfuse's hot reads of the same bytes "+
				"are at %s× of direct too", row.ServerCPU.cell("%.0f"), ratio(row.NBD, row.Direct).sigCell())
		}
		if len(pass) > 0 && strings.HasPrefix(row.File, "partitions/") && !strings.Contains(row.File, "passthrough") {
			t.why += fmt.Sprintf("; with passthrough (the default; this row is --no-passthrough) the kernel reads the APK file itself and gets %s× (cold) and %s× (hot)",
				sig(ratio(pass[0].Vmfs, pass[0].Direct).median()), sig(ratio(pass[len(pass)-1].Vmfs, pass[len(pass)-1].Direct).median()))
		}
		ts = append(ts, t)
	}
	for _, row := range r.Reads {
		t := target{figure: "P3", what: fmt.Sprintf("%s %s ÷ nbdfuse", row.File, row.Mode), goal: 2, value: ratio(row.Vmfs, row.NBD)}
		t.why = "both are FUSE file systems fed from the same page cache; vmfs's edge is the NBD round trip it does not make"
		if row.Mode == "hot" {
			t.why = fmt.Sprintf("neither server is involved: both mounts serve from their page cache (nbdfuse tuned with %s), "+
				"at %s and %s MB/s against %s MB/s direct; with nbdfuse's defaults every open drops its cache and vmfs is %s× faster",
				nbdTuning, sig(row.Vmfs.median()), sig(row.NBD.median()), sig(row.Direct.median()), sig(ratio(row.Vmfs, row.NBDDefault).median()))
		}
		ts = append(ts, t)
	}
	for _, row := range r.Random {
		t := target{figure: "P3", what: "4 KiB random reads, " + row.Mode + " ÷ nbdfuse", goal: 2, value: ratio(row.Vmfs, row.NBD)}
		t.why = "each 4 KiB read is one FUSE round trip on both mounts, and the round trip, not the server behind it, is most of the cost"
		if row.Mode == "hot" {
			t.why = fmt.Sprintf("neither server is involved: both serve from the page cache, like the original file (%s IOPS)", sig(row.PageCache.median()))
		}
		ts = append(ts, t)
	}
	ts = append(ts, vmmTargets(r.VMM)...)
	if s := r.Stream; len(s.PeakRSSKiB) > 0 {
		ts = append(ts, target{figure: "P4", what: fmt.Sprintf("vmfs peak RSS streaming %s, MiB ÷ 64 MiB", size(s.Bytes)), goal: 1, atMost: true,
			value: scale(s.PeakRSSKiB, 1.0/(64<<10)), why: "see P4"})
		ts = append(ts, target{figure: "P4", what: "bytes written by vmfs while streaming ÷ 64 KiB", goal: 1, atMost: true,
			value: scale(s.Written, 1.0/(64<<10)), why: "see P4"})
	}
	if sv := r.Service; len(sv.Add) > 0 {
		ts = append(ts, target{figure: "P6", what: fmt.Sprintf("copying the flat image ÷ adding the payload through the service (service.Client), %s payload", size(sv.APKSize)),
			goal: 100, value: ratio(sv.Copy, sv.Add),
			why: fmt.Sprintf("the copy takes %s ms here; `vmfs mount` through the service takes %s ms, most of it starting the vmfs binary once", sig(sv.Copy.median()), sig(sv.AddCLI.median()))})
		limit := float64(64<<10 + sv.Payloads*512) // KiB: 64 MiB plus 0.5 MiB per payload
		ts = append(ts, target{figure: "P6", what: fmt.Sprintf("service RSS with %d payloads ÷ (64 MiB + 0.5 MiB per payload)", sv.Payloads), goal: 1, atMost: true,
			value: scale(sv.ServiceRSSKiB, 1/limit), why: "see P6"})
	}
	if b := r.Boot; b.NotRun == "" && len(b.Vmfs) > 0 {
		ts = append(ts, target{figure: "P5", what: "run-app to verdict through vmfs ÷ on a pre-copied flat image, copy not counted", goal: 1.1, atMost: true, value: ratio(b.Vmfs, b.Flat),
			why: "see P5: the difference is vmfs's own start (pre-flight, mount) and the synthesized pieces QEMU reads through FUSE (run-app uses --via extents)"})
	}
	if sb := r.StateBoot; len(sb.State) > 0 {
		ts = append(ts, target{figure: "P5", what: stateProfile.String() + " sample to verdict with an instance image and storage ÷ without state", goal: 1.1, atMost: true,
			value: ratio(sb.State, sb.NoState),
			why:   "see P5 with state: the state disk adds a QCOW2 write engine to the mount, and the guest's state checks (the boot record written and fsync'd, storage formatted) go through it"})
	}
	for _, row := range r.StateWrite.Rows {
		ts = append(ts, target{figure: "P7", what: fmt.Sprintf("sequential %s writes into vm-instance through disk.img ÷ qemu-io into the QCOW2", size(row.Block)),
			goal: stateWriteGoals[row.Block], value: ratio(row.Vmfs, row.QemuIO),
			why: "each write is one FUSE request and one NBD exchange with vmfs's write engine, one at a time, and the engine replies once " +
				"the write's QCOW2 metadata is in the file (writethrough); qemu-io's writes go to the QCOW2 driver in its own process, " +
				"in its default cache mode, flushed once at the end"})
	}
	return ts
}

func scale(s series, f float64) series {
	out := make(series, len(s))
	for i, v := range s {
		out[i] = v * f
	}
	return out
}

// report renders the results as Markdown.
func report(r *results, cfg config) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	e := r.Env
	p("# vmfs benchmark results\n\n")
	if cfg.smoke {
		p("**Smoke run**: tiny sizes and one repetition; it checks the harness, and its numbers mean nothing.\n\n")
	}
	p("`make bench` on %s: vmfs %s; Linux %s; %s, %d CPUs, %d GiB RAM; %s; %s; temp files on %s; "+
		"1-minute load average %s (start → end; the machine may be shared).\n\n",
		e.Date, e.Commit, e.Kernel, e.CPU, e.CPUs, e.MemGiB, e.Go, e.Tools, e.WorkFS, e.Load)
	if cfg.runs("P1", "P2", "P3", "P4", "P6") {
		p("Payloads: APKs of %s, each a zip with the payload config and one stored entry of random bytes "+
			"(no holes, no compression), with the sample's three APEXes. ", e.Sizes)
	}
	p("%d repetitions; a cell is the median "+
		"[min–max]. A ratio is taken within each repetition, where the figure and its baseline run back to back, "+
		"and then summarised the same way. The original files are in the page cache for every figure "+
		"(that favours the copy and the direct reads); the page cache is never dropped.\n\n", e.Reps)

	if e.Only != "" {
		p("Only %s measured (`-only %s`); the other figures are not in this run.\n\n", e.Only, e.Only)
	}
	p("## Targets\n\n| figure | ratio | target | measured | verdict |\n|---|---|---|---|---|\n")
	ts := targets(r)
	for _, t := range ts {
		p("| %s | %s | %s | %s× | %s |\n", t.figure, t.what, t.goalText(), t.value.sigCell(), t.verdict())
	}
	var missed []target
	for _, t := range ts {
		if len(t.value) > 0 && !t.met() {
			missed = append(missed, t)
		}
	}
	if len(missed) > 0 {
		p("\nWhy the misses:\n\n")
		for _, t := range missed {
			p("- %s %s (%s× against %s): %s.\n", t.figure, t.what, sig(t.value.median()), t.goalText(), t.why)
		}
	}

	for _, sec := range []struct {
		heading string
		figs    []string
		write   func()
	}{
		{"P1: time until the disk is readable (ms)", []string{"P1"}, func() { p1Section(p, r.Ready) }},
		{"P2: sequential 1 MiB reads through vmfs vs direct reads of the originals (MB/s)", []string{"P2", "P3"}, func() { p2Section(p, r.Reads) }},
		{"P3: vmfs vs nbdkit-partitioning + nbdfuse serving the same files", []string{"P2", "P3"}, func() { p3Section(p, r, e) }},
		{"P2-vmm: the disk read through QEMU's block layer, as a VMM reads it", []string{"P2-vmm"}, func() { vmmSection(p, r.VMM) }},
		{"P4: cost of streaming the largest payload", []string{"P4"}, func() { p4Section(p, r.Stream) }},
		{"P5: `vmfs run-app` until the guest's verdict", []string{"P5"}, func() { p5Section(p, r) }},
		{"P6: one `vmfs serve` for many payloads", []string{"P6"}, func() { p6Section(p, r.Service) }},
		{"P7: a VM's state written through the mount", []string{"P7"}, func() { p7Section(p, r.StateWrite) }},
	} {
		p("\n## %s\n\n", sec.heading)
		if cfg.runs(sec.figs...) {
			sec.write()
		} else {
			p("Not measured in this run (`-only %s`).\n", e.Only)
		}
	}
	if hasPlot(r) {
		p("\n![throughput by method and time until readable by payload size](latest.png)\n")
	}
	return w.String()
}

// printer is report's fmt.Fprintf to the report.
type printer func(format string, args ...any)

func p1Section(p printer, rows []readyRow) {
	p("From start until the first 4 KiB of the disk has been read. **vmfs**: `vmfs mount` (which returns once its " +
		"background server serves) then a read of payload.img. **copy**: what vmfs would do without FUSE, in-process: read the " +
		"payload config from the APK, parse the idsig, resolve APEXes and the OS config, lay out the disk, then " +
		"write the flat image (originals with copy_file_range, GPT and trailers written, padding left as holes, no fsync). " +
		"**seed files**: the same resolution, then the files the seed's virtualizationservice wrote " +
		"(GPT header and footer, a 4 KiB zero filler, metadata and APEX trailers, a composite descriptor); such a disk " +
		"is readable by crosvm only, and its first 4 KiB is the header file. **nbdkit + nbdfuse**: the same resolution, " +
		"the metadata file, `nbdkit -r -U sock partitioning partition-type=gpt alignment=4096 <partition files named by label>`, " +
		"`nbdfuse -r mnt/disk.img --unix sock` until its pid file appears, then a read of disk.img. " +
		"**exec vmfs once** is `vmfs list`, for scale: `vmfs mount` starts the binary twice.\n\n")
	p("| APK | disk | vmfs mount | (exec vmfs once) | copy | seed files | nbdkit + nbdfuse | copy ÷ vmfs | seed ÷ vmfs | nbd ÷ vmfs |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range rows {
		p("| %s | %s | %s | %s | %s | %s | %s | %s× | %s× | %s× |\n", size(row.APKSize), size(row.DiskSize),
			row.Vmfs.sigCell(), row.Exec.sigCell(), row.Copy.sigCell(), row.Seed.sigCell(), row.NBD.sigCell(),
			ratio(row.Copy, row.Vmfs).sigCell(), ratio(row.Seed, row.Vmfs).sigCell(), ratio(row.NBD, row.Vmfs).sigCell())
	}
}

func p2Section(p printer, reads []readRow) {
	p("**cold**: the first read of the file after a fresh mount, its originals in the page cache; **hot**: the second read. " +
		"**direct**: 1 MiB reads of the original files that hold the same bytes (all sources for payload.img, the APK " +
		"for its partition), from the page cache, measured in the same repetition. vmfs mounts with `--no-passthrough` but for " +
		"the passthrough row, where the kernel reads the APK partition (a 4 KiB-aligned whole file) directly. **vmfs server CPU** is the user + system time the server " +
		"process used during the read (10 ms resolution).\n\n")
	p("| file | read | bytes | direct | vmfs | vmfs ÷ direct | vmfs server CPU (ms) |\n|---|---|---|---|---|---|---|\n")
	for _, row := range reads {
		p("| %s | %s | %s | %s | %s | %s× | %s |\n", row.File, row.Mode, size(row.Bytes), row.Direct.sigCell(), row.Vmfs.sigCell(),
			ratio(row.Vmfs, row.Direct).sigCell(), row.ServerCPU.cell("%.0f"))
	}
}

func p3Section(p printer, r *results, e env) {
	p("**nbdfuse** is given what vmfs gives itself: `-o kernel_cache` (vmfs keeps its page cache across opens) and the mount's "+
		"read_ahead_kb raised to %d; the targets compare with it. **nbdfuse defaults** is `nbdfuse -r mnt/disk.img --unix sock` as is. "+
		"All are read-only. nbdkit's disk is not byte-identical: it pads each partition to "+
		"512 bytes (vmfs: 4 KiB) and serves the APEXes without their size trailer, so its disk is a little smaller; "+
		"payload.img is compared with the whole disk.img, the APK partition with its byte range in disk.img. "+
		"Each nbdfuse row starts from a fresh nbdkit + nbdfuse, as each vmfs row starts from a fresh mount.\n\n", nbdReadaheadKiB)
	p("| file | read | vmfs MB/s | nbdfuse MB/s | nbdfuse defaults MB/s | vmfs ÷ nbdfuse | vmfs ÷ nbdfuse defaults |\n|---|---|---|---|---|---|---|\n")
	for _, row := range r.Reads {
		p("| %s | %s | %s | %s | %s | %s× | %s× |\n", row.File, row.Mode, row.Vmfs.sigCell(), row.NBD.sigCell(), row.NBDDefault.sigCell(),
			ratio(row.Vmfs, row.NBD).sigCell(), ratio(row.Vmfs, row.NBDDefault).sigCell())
	}
	p("\n4 KiB random reads of the APK partition with fio (%d jobs, psync, %s each). **O_DIRECT**: every read goes to "+
		"the server. **hot**: buffered, after one sequential read of the range, so from the page cache; **original**: "+
		"the same job on the APK file itself. nbdfuse is the tuned one.\n\n", e.Jobs, e.Runtime)
	p("| read | vmfs IOPS | nbdfuse IOPS | original IOPS | vmfs ÷ nbdfuse |\n|---|---|---|---|---|\n")
	for _, row := range r.Random {
		p("| %s | %s | %s | %s | %s× |\n", row.Mode, row.Vmfs.sigCell(), row.NBD.sigCell(), row.PageCache.sigCell(), ratio(row.Vmfs, row.NBD).sigCell())
	}
}

func p4Section(p printer, s streamResult) {
	p("A fresh `vmfs mount`, then payload.img read to the end in 1 MiB reads. Peak RSS is the server's VmHWM; bytes " +
		"written is the change of write_bytes in the server's /proc/<pid>/io.\n\n")
	p("| streamed | vmfs peak RSS | written by vmfs | throughput | written by the copy baseline |\n|---|---|---|---|---|\n")
	p("| %s | %s MiB | %s B | %s MB/s | %s |\n", size(s.Bytes), scale(s.PeakRSSKiB, 1.0/1024).sigCell(), s.Written.cell("%.0f"), s.MBps.sigCell(), size(s.CopyWritten))
}

func p5Section(p printer, r *results) {
	b := r.Boot
	if b.NotRun != "" {
		p("NotRun: %s.\n", b.NotRun)
	} else {
		if b.Note != "" {
			p("Note: %s.\n\n", b.Note)
		}
		p("The signed sample APK grown with random bytes and signed again (APK %s; the guest reads the whole APK through dm-verity against the idsig) and the test guest "+
			"(`make guest`), QEMU with `-accel %s`. **through vmfs**: from the start of `vmfs run-app --require-verdict` (pre-flight "+
			"verification, private mount, QEMU on the mount's payload.vmdk: `--via extents`, run-app's default, so QEMU reads the APK, "+
			"idsig and APEXes themselves and only the synthesized pieces through the mount; see P2-vmm) until the guest's VMFS-VERDICT line. **flat**: the flat "+
			"image copied first (as in P1), then QEMU with the argv vmfs's launcher builds for it, until the same line.\n\n", size(b.APKBytes), b.Accel)
		p("| through vmfs (s) | on a pre-copied flat image (s) | copy (s) | vmfs ÷ flat | vmfs ÷ (copy + flat) |\n|---|---|---|---|---|\n")
		withCopy := make(series, len(b.Flat))
		for i := range b.Flat {
			withCopy[i] = b.Flat[i] + b.Copy[i]
		}
		p("| %s | %s | %s | %s× | %s× |\n", b.Vmfs.sigCell(), b.Flat.sigCell(), b.Copy.sigCell(), ratio(b.Vmfs, b.Flat).sigCell(), ratio(b.Vmfs, withCopy).sigCell())
	}
	sb := r.StateBoot
	p("\n### P5 with state\n\n")
	if sb.NotRun != "" {
		p("NotRun: %s.\n", sb.NotRun)
		return
	}
	p("The %s sample (two extra APKs) on the test guest, QEMU with `-accel %s`, from the start of `vmfs.RunApp` (what `vmfs run-app "+
		"--require-verdict` calls: pre-flight verification, private mount, QEMU) until the guest's VMFS-VERDICT line. **with state**: "+
		"a fresh %s instance image and %s storage (`vmfs create-partition`, before the clock) on a disk of their own, written through the "+
		"mount's QCOW2 write engine; the guest checks the instance header, writes and fsyncs its boot record and formats storage. "+
		"**without**: the same payload with no state, which only the library takes (the command line requires the instance image at %s).\n\n",
		stateProfile, sb.Accel, size(vmfs.DefaultStateSize), size(vmfs.DefaultStateSize), stateProfile)
	p("| with state (s) | without state (s) | with ÷ without |\n|---|---|---|\n")
	p("| %s | %s | %s× |\n", sb.State.sigCell(), sb.NoState.sigCell(), ratio(sb.State, sb.NoState).sigCell())
}

func p6Section(p printer, sv serviceResult) {
	p("Time until the first 4 KiB of payload.img has been read, in ms. **service add**: `service.Client.Add` from this process " +
		"(the client opens the APK and idsig and hands them over; the service lays the payload out and grafts it into its mount). " +
		"**vmfs mount through the service**: the command as a client (`vmfs mount --socket`), which starts the vmfs binary once. " +
		"**standalone vmfs mount**: as in P1, a server of its own. **copy**: as in P1.\n\n")
	p("| APK | disk | service add | vmfs mount through the service | standalone vmfs mount | copy | copy ÷ service add | copy ÷ mount through the service | standalone ÷ service add |\n|---|---|---|---|---|---|---|---|---|\n")
	p("| %s | %s | %s | %s | %s | %s | %s× | %s× | %s× |\n", size(sv.APKSize), size(sv.DiskSize), sv.Add.sigCell(), sv.AddCLI.sigCell(), sv.Mount.sigCell(),
		sv.Copy.sigCell(), ratio(sv.Copy, sv.Add).sigCell(), ratio(sv.Copy, sv.AddCLI).sigCell(), ratio(sv.Mount, sv.Add).sigCell())
	p("\n%d payloads of %s APKs each (their own files; the idsig and APEXes the same files), added one after the other with `vmfs mount`: "+
		"through one fresh service, or each with a server of its own. RSS is VmRSS once all are added (the standalone servers' summed); "+
		"fds are the open descriptors (summed). The empty service's RSS is %s MiB.\n\n", sv.Payloads, size(sv.PayloadAPK), scale(sv.ServiceBaseKiB, 1.0/1024).sigCell())
	p("| | RSS (MiB) | open fds | time to add all (ms) |\n|---|---|---|---|\n")
	p("| one service | %s | %s | %s |\n", scale(sv.ServiceRSSKiB, 1.0/1024).sigCell(), sv.ServiceFDs.cell("%.0f"), sv.ServiceAllMs.sigCell())
	p("| standalone mounts | %s | %s | %s |\n", scale(sv.MountsRSSKiB, 1.0/1024).sigCell(), sv.MountsFDs.cell("%.0f"), sv.MountsAllMs.sigCell())
	p("| standalone ÷ service | %s× | %s× | %s× |\n", ratio(sv.MountsRSSKiB, sv.ServiceRSSKiB).sigCell(), ratio(sv.MountsFDs, sv.ServiceFDs).sigCell(), ratio(sv.MountsAllMs, sv.ServiceAllMs).sigCell())
}

func p7Section(p printer, sw stateWriteResult) {
	p("A fresh %s %s instance image (`vmfs create-partition --type instance`) written whole in sequential writes: **vmfs**: through "+
		"`disks/<i>/disk.img` of a `vmfs mount --profile %s` of the sample with that image, at vm-instance's offset in the disk's GPT, "+
		"then an fsync; the mount's write engine starts at the open, before the clock. **qemu-io**: the same writes into a twin image "+
		"by one `qemu-io -f qcow2` process (a `-c write` per block, then a flush), in its default cache mode; the time of the same "+
		"process with only the flush (its start) is taken off, and shown.\n\n", size(sw.Bytes), stateProfile.PartitionImage(), stateProfile)
	p("| write | vmfs MB/s | qemu-io MB/s | qemu-io start (ms) | vmfs ÷ qemu-io |\n|---|---|---|---|---|\n")
	for _, row := range sw.Rows {
		p("| %s | %s | %s | %s | %s× |\n", size(row.Block), row.Vmfs.sigCell(), row.QemuIO.sigCell(), row.QemuIOStart.sigCell(), ratio(row.Vmfs, row.QemuIO).sigCell())
	}
}

// nearestGiB is the size among sizes nearest to 1 GiB, by ratio.
func nearestGiB(sizes []int64) int64 {
	dist := func(n int64) float64 { return math.Abs(math.Log(float64(n) / (1 << 30))) }
	best := sizes[0]
	for _, n := range sizes {
		if dist(n) < dist(best) {
			best = n
		}
	}
	return best
}
