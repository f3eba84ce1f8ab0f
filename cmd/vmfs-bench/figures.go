package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/layout"
	"vmfs/metadata"
)

// results is everything one run measured; latest.json holds it as is.
type results struct {
	Env        env              `json:"env"`
	Ready      []readyRow       `json:"p1_ready"`
	Reads      []readRow        `json:"p2_p3_sequential"`
	Random     []randomRow      `json:"p3_random"`
	VMM        vmmResult        `json:"p2_vmm"`
	Stream     streamResult     `json:"p4_stream"`
	Boot       bootResult       `json:"p5_boot"`
	StateBoot  stateBootResult  `json:"p5_state_boot"`
	Service    serviceResult    `json:"p6_service"`
	StateWrite stateWriteResult `json:"p7_state_write"`
}

// readyRow is P1 for one payload size: milliseconds until the disk is readable.
type readyRow struct {
	APKSize  int64  `json:"apk_bytes"`
	DiskSize int64  `json:"disk_bytes"`
	Vmfs     series `json:"vmfs_mount_ms"`
	Exec     series `json:"vmfs_exec_ms"` // `vmfs list`: what starting the binary once costs
	Copy     series `json:"copy_ms"`
	Seed     series `json:"seed_files_ms"`
	NBD      series `json:"nbdkit_nbdfuse_ms"`
}

// readRow is one sequential read of P2 and P3, in MB/s.
type readRow struct {
	File       string `json:"file"`
	Mode       string `json:"mode"` // cold or hot
	Bytes      int64  `json:"bytes"`
	Direct     series `json:"direct_mbps"`
	Vmfs       series `json:"vmfs_mbps"`
	NBD        series `json:"nbdfuse_mbps"`         // tuned like vmfs (nbdTuning)
	NBDDefault series `json:"nbdfuse_default_mbps"` // nbdfuse's defaults
	ServerCPU  series `json:"vmfs_server_cpu_ms"`   // CPU the vmfs server used during the read
}

// randomRow is one fio run of P3, in IOPS.
type randomRow struct {
	Mode      string `json:"mode"`
	Vmfs      series `json:"vmfs_iops"`
	NBD       series `json:"nbdfuse_iops"`
	PageCache series `json:"original_iops,omitempty"` // the original file, from the page cache
}

// streamResult is P4.
type streamResult struct {
	Bytes       int64  `json:"bytes"`
	PeakRSSKiB  series `json:"peak_rss_kib"`
	Written     series `json:"written_bytes"`
	MBps        series `json:"mbps"`
	CopyWritten int64  `json:"copy_written_bytes"` // what the copy baseline writes for the same payload
}

// bootResult is P5 in seconds, or why it was skipped.
type bootResult struct {
	NotRun   string `json:"skipped,omitempty"`
	Note     string `json:"note,omitempty"`
	Accel    string `json:"accel,omitempty"`
	APKBytes int64  `json:"apk_bytes,omitempty"`
	Vmfs     series `json:"vmfs_run_app_s,omitempty"`
	Flat     series `json:"flat_boot_s,omitempty"`
	Copy     series `json:"copy_s,omitempty"`
}

// payloadFile is a generated APK with its layout.
type payloadFile struct {
	in   inputs
	plan *plan
}

// syncDisk flushes dirty pages outside any timed region, so that writeback from one
// measurement does not run during the next.
func syncDisk() { unix.Sync() }

// p1 measures, for each payload, the time from start until the first 4 KiB of the
// disk can be read, for vmfs and the three alternatives, back to back in each
// repetition. The originals are in the page cache for all four.
func (b *bench) p1(ctx context.Context, payloads []payloadFile) ([]readyRow, error) {
	buf := make([]byte, readBlock)
	var rows []readyRow
	for _, pf := range payloads {
		row := readyRow{APKSize: pf.plan.apk().Size, DiskSize: pf.plan.disk.Flat.Size}
		if _, _, err := readAll(sourcePaths(pf.plan), buf); err != nil {
			return nil, err
		}
		for rep := 0; rep < b.cfg.reps; rep++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ms := func(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

			start := time.Now()
			m, err := b.mountVmfs(pf.in.apk, false)
			if err != nil {
				return nil, err
			}
			if err := readyRead(m.path("payload.img")); err != nil {
				return nil, err
			}
			row.Vmfs = append(row.Vmfs, ms(start))
			if err := m.close.Close(); err != nil {
				return nil, err
			}
			start = time.Now()
			if out, err := exec.Command(b.cfg.vmfs, "list").CombinedOutput(); err != nil {
				return nil, fmt.Errorf("vmfs list: %w: %s", err, out)
			}
			row.Exec = append(row.Exec, ms(start))

			dir, err := b.freshDir("seed")
			if err != nil {
				return nil, err
			}
			start = time.Now()
			p, err := resolve(pf.in)
			if err != nil {
				return nil, err
			}
			header, err := writeSeedFiles(p, dir)
			if err != nil {
				return nil, err
			}
			if err := readyRead(header); err != nil {
				return nil, err
			}
			row.Seed = append(row.Seed, ms(start))
			if err := os.RemoveAll(dir); err != nil {
				return nil, err
			}

			start = time.Now()
			if p, err = resolve(pf.in); err != nil {
				return nil, err
			}
			d, err := b.startNBD(p, false)
			if err != nil {
				return nil, err
			}
			if err := readyRead(d.disk); err != nil {
				return nil, err
			}
			row.NBD = append(row.NBD, ms(start))
			if err := d.close.Close(); err != nil {
				return nil, err
			}

			syncDisk()
			flat := filepath.Join(b.tmp, "flat.img")
			start = time.Now()
			if p, err = resolve(pf.in); err != nil {
				return nil, err
			}
			if err := copyFlat(p, flat); err != nil {
				return nil, err
			}
			if err := readyRead(flat); err != nil {
				return nil, err
			}
			row.Copy = append(row.Copy, ms(start))
			if err := os.Remove(flat); err != nil {
				return nil, err
			}
			syncDisk()
			b.logf("P1 %s rep %d/%d: vmfs %.1f ms, copy %.1f ms, seed files %.1f ms, nbdkit+nbdfuse %.1f ms",
				size(row.APKSize), rep+1, b.cfg.reps, row.Vmfs[rep], row.Copy[rep], row.Seed[rep], row.NBD[rep])
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func sourcePaths(p *plan) []string {
	var ps []string
	for _, s := range p.disk.Sources {
		ps = append(ps, s.Path)
	}
	return ps
}

// readTarget is one sequential-read row: the file through vmfs, the same bytes in
// nbdfuse's disk, and the originals they come from.
type readTarget struct {
	file        string // in the vmfs mount
	passthrough bool
	nbdOff      int64 // range of disk.img; nbdLen < 0 means the whole disk
	nbdLen      int64
	direct      []string
}

// p2p3 measures sequential 1 MiB reads (P2 against direct reads of the originals,
// P3 against nbdfuse) and 4 KiB random reads (P3), every figure and its baselines in
// the same repetition.
func (b *bench) p2p3(ctx context.Context, pf payloadFile) ([]readRow, []randomRow, error) {
	buf := make([]byte, readBlock)
	p := pf.plan
	apkPart, err := p.partition(metadata.APKLabel)
	if err != nil {
		return nil, nil, err
	}
	apk, apkSize := pf.in.apk, p.apk().Size
	// Where nbdkit puts the APK partition: found from its GPT, once.
	d, err := b.startNBD(p, false)
	if err != nil {
		return nil, nil, err
	}
	apkOff, apkLen, err := gptPartition(d.disk, metadata.APKLabel)
	if err != nil {
		return nil, nil, err
	}
	if err := d.close.Close(); err != nil {
		return nil, nil, err
	}
	apkLen = min(apkLen, apkPart.Size)

	targets := []readTarget{
		{file: "payload.img", nbdLen: -1, direct: sourcePaths(p)},
		{file: "partitions/" + metadata.APKLabel, nbdOff: apkOff, nbdLen: apkLen, direct: []string{apk}},
	}
	// Passthrough serves a 4 KiB-aligned whole file from the kernel; the APKs made
	// here are aligned when their size is.
	if apkSize%layout.PartitionAlign == 0 {
		targets = append(targets, readTarget{file: "partitions/" + metadata.APKLabel, passthrough: true, nbdOff: apkOff, nbdLen: apkLen, direct: []string{apk}})
	}
	rows := make([]readRow, 2*len(targets))
	for i, t := range targets {
		name := t.file
		if t.passthrough {
			name += " (passthrough)"
		}
		rows[2*i] = readRow{File: name, Mode: "cold"}
		rows[2*i+1] = readRow{File: name, Mode: "hot"}
	}
	random := []randomRow{{Mode: "O_DIRECT"}, {Mode: "hot"}}

	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		for i, t := range targets {
			pair := rows[2*i : 2*i+2]
			if t.passthrough {
				// nbdfuse has no passthrough: the same bytes as the row before.
				for k := range pair {
					pair[k].NBD = append(pair[k].NBD, rows[2*i-2+k].NBD[rep])
					pair[k].NBDDefault = append(pair[k].NBDDefault, rows[2*i-2+k].NBDDefault[rep])
				}
			} else {
				for _, tuned := range []bool{true, false} {
					r, err := b.nbdReads(p, tuned, t, buf)
					if err != nil {
						return nil, nil, err
					}
					for k := range pair {
						if tuned {
							pair[k].NBD = append(pair[k].NBD, r[k])
						} else {
							pair[k].NBDDefault = append(pair[k].NBDDefault, r[k])
						}
					}
				}
			}
			// The originals are read once to be sure they are in the page cache, then
			// each vmfs read follows a direct read of the same bytes.
			if _, _, err := readAll(t.direct, buf); err != nil {
				return nil, nil, err
			}
			m, err := b.mountVmfs(apk, t.passthrough)
			if err != nil {
				return nil, nil, err
			}
			pid, err := m.serverPid()
			if err != nil {
				return nil, nil, err
			}
			for k := range pair {
				n, dt, err := readAll(t.direct, buf)
				if err != nil {
					return nil, nil, err
				}
				cpu0, err := procCPU(pid)
				if err != nil {
					return nil, nil, err
				}
				vn, vdt, err := readSeq(m.path(t.file), 0, -1, buf)
				if err != nil {
					return nil, nil, err
				}
				cpu1, err := procCPU(pid)
				if err != nil {
					return nil, nil, err
				}
				pair[k].Bytes = vn
				pair[k].Direct = append(pair[k].Direct, mbps(n, dt))
				pair[k].Vmfs = append(pair[k].Vmfs, mbps(vn, vdt))
				pair[k].ServerCPU = append(pair[k].ServerCPU, float64((cpu1 - cpu0).Milliseconds()))
			}
			if err := m.close.Close(); err != nil {
				return nil, nil, err
			}
		}
		b.logf("P2/P3 rep %d/%d: %s", rep+1, b.cfg.reps, readSummary(rows, rep))

		// Random reads over the APK partition: through the server (O_DIRECT), then
		// from the page cache after one sequential read (hot).
		m, err := b.mountVmfs(apk, false)
		if err != nil {
			return nil, nil, err
		}
		part := m.path("partitions/" + metadata.APKLabel)
		if err := b.randomPair(ctx, random, fioJob{path: part, size: apkPart.Size}, buf, func(r *randomRow, v float64) { r.Vmfs = append(r.Vmfs, v) }); err != nil {
			return nil, nil, err
		}
		if err := m.close.Close(); err != nil {
			return nil, nil, err
		}
		d, err := b.startNBD(p, true)
		if err != nil {
			return nil, nil, err
		}
		if err := b.randomPair(ctx, random, fioJob{path: d.disk, off: apkOff, size: apkLen}, buf, func(r *randomRow, v float64) { r.NBD = append(r.NBD, v) }); err != nil {
			return nil, nil, err
		}
		if err := d.close.Close(); err != nil {
			return nil, nil, err
		}
		// The same hot reads of the original file: the page cache's own speed.
		iops, err := b.randomRead(ctx, fioJob{path: apk, size: apkSize})
		if err != nil {
			return nil, nil, err
		}
		random[1].PageCache = append(random[1].PageCache, iops)
		b.logf("P3 random rep %d/%d: O_DIRECT vmfs %.0f nbdfuse %.0f IOPS; hot vmfs %.0f nbdfuse %.0f original %.0f IOPS", rep+1, b.cfg.reps,
			random[0].Vmfs[rep], random[0].NBD[rep], random[1].Vmfs[rep], random[1].NBD[rep], iops)
	}
	return rows, random, nil
}

// nbdReads reads t's range of a fresh nbdfuse disk twice (cold, hot) in MB/s.
func (b *bench) nbdReads(p *plan, tuned bool, t readTarget, buf []byte) ([2]float64, error) {
	var r [2]float64
	d, err := b.startNBD(p, tuned)
	if err != nil {
		return r, err
	}
	for k := range r {
		n, dt, err := readSeq(d.disk, t.nbdOff, t.nbdLen, buf)
		if err != nil {
			return r, err
		}
		r[k] = mbps(n, dt)
	}
	return r, d.close.Close()
}

// randomPair runs the O_DIRECT job, reads the range once, and runs the hot job.
func (b *bench) randomPair(ctx context.Context, rows []randomRow, job fioJob, buf []byte, add func(*randomRow, float64)) error {
	job.direct = true
	iops, err := b.randomRead(ctx, job)
	if err != nil {
		return err
	}
	add(&rows[0], iops)
	if _, _, err := readSeq(job.path, job.off, job.size, buf); err != nil {
		return err
	}
	job.direct = false
	if iops, err = b.randomRead(ctx, job); err != nil {
		return err
	}
	add(&rows[1], iops)
	return nil
}

func readSummary(rows []readRow, rep int) string {
	s := ""
	for _, r := range rows {
		s += fmt.Sprintf("%s %s direct %.0f vmfs %.0f nbdfuse %.0f (defaults %.0f) MB/s; ", r.File, r.Mode, r.Direct[rep], r.Vmfs[rep], r.NBD[rep], r.NBDDefault[rep])
	}
	return s
}

// p4 streams the largest payload disk through a vmfs server and reads the server's
// peak RSS and the bytes it wrote to storage.
func (b *bench) p4(ctx context.Context, pf payloadFile) (streamResult, error) {
	buf := make([]byte, readBlock)
	res := streamResult{CopyWritten: pf.plan.disk.Flat.Size}
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		m, err := b.mountVmfs(pf.in.apk, false)
		if err != nil {
			return res, err
		}
		pid, err := m.serverPid()
		if err != nil {
			return res, err
		}
		before, err := procField(pid, "io", "write_bytes")
		if err != nil {
			return res, err
		}
		n, dt, err := readSeq(m.path("payload.img"), 0, -1, buf)
		if err != nil {
			return res, err
		}
		after, err := procField(pid, "io", "write_bytes")
		if err != nil {
			return res, err
		}
		hwm, err := procField(pid, "status", "VmHWM")
		if err != nil {
			return res, err
		}
		if err := m.close.Close(); err != nil {
			return res, err
		}
		res.Bytes = n
		res.PeakRSSKiB = append(res.PeakRSSKiB, float64(hwm))
		res.Written = append(res.Written, float64(after-before))
		res.MBps = append(res.MBps, mbps(n, dt))
		b.logf("P4 rep %d/%d: streamed %s at %.0f MB/s: peak RSS %d KiB, wrote %d bytes", rep+1, b.cfg.reps, size(n), mbps(n, dt), hwm, after-before)
	}
	return res, nil
}
