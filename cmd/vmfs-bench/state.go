package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"vmfs"
	"vmfs/launcher"
	"vmfs/metadata"
	"vmfs/testdata"
)

// stateBootResult is P5 with state: the android14 sample booted to the guest's
// verdict with an instance image and storage, and without, in seconds.
type stateBootResult struct {
	NotRun  string `json:"skipped,omitempty"`
	Accel   string `json:"accel,omitempty"`
	State   series `json:"with_state_s,omitempty"`
	NoState series `json:"without_state_s,omitempty"`
}

// stateWriteResult is P7: an instance image written whole in sequential writes.
type stateWriteResult struct {
	Bytes int64           `json:"bytes"` // the image's virtual size
	Rows  []stateWriteRow `json:"rows"`
}

// stateWriteRow is P7 for one write size, in MB/s; QemuIOStart is the start of
// qemu-io (ms), taken off its time.
type stateWriteRow struct {
	Block       int64  `json:"block_bytes"`
	Vmfs        series `json:"vmfs_mbps"`
	QemuIO      series `json:"qemu_io_mbps"`
	QemuIOStart series `json:"qemu_io_start_ms"`
}

// stateBlocks are P7's write sizes, the largest last, and stateWriteGoals their
// targets, vmfs's throughput over qemu-io's.
var (
	stateBlocks     = []int64{4 << 10, 1 << 20}
	stateWriteGoals = map[int64]float64{4 << 10: 0.8, 1 << 20: 0.5}
)

// stateProfile is the release whose state P5 and P7 use: its instance image is
// a QCOW2 image on a disk of its own, and it takes storage.
var stateProfile = metadata.Android14

// createPartition makes a fresh state image as a user does, with `vmfs
// create-partition`.
func (b *bench) createPartition(path string, typ metadata.PartitionType, n int64) error {
	out, err := exec.Command(b.cfg.vmfs, "create-partition", "--profile", stateProfile.String(), "--type", typ.String(),
		path, strconv.FormatInt(n, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vmfs create-partition %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// p5State boots the android14 sample on the test guest twice per repetition
// until its verdict: with a fresh instance image and storage, so that the guest
// checks the instance header, writes its boot record and formats storage, and
// without any state. Both go through vmfs.RunApp, what `vmfs run-app` calls, as
// the command line takes no android14 payload without an instance image: the
// state disk is the only difference.
func (b *bench) p5State(ctx context.Context) (stateBootResult, error) {
	guest, notRun, err := b.bootGuest()
	if notRun != "" || err != nil {
		return stateBootResult{NotRun: notRun}, err
	}
	res := stateBootResult{Accel: b.cfg.accel}
	spec := vmfs.Spec{
		Profile: stateProfile, APK: testdata.LaterAPKPath(), Idsig: testdata.LaterIdsigPath(), ConfigPath: testdata.ConfigPath,
		ApexInfoList: testdata.LaterAPEXInfoListPath(), OSDir: guest,
	}
	for _, e := range testdata.LaterExtraAPKs() {
		spec.ExtraIdsigs = append(spec.ExtraIdsigs, e.Idsig)
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		dir, err := b.freshDir("state")
		if err != nil {
			return res, err
		}
		with := spec
		with.Instance, with.Storage = filepath.Join(dir, "instance.img"), filepath.Join(dir, "storage.img")
		if err := b.createPartition(with.Instance, metadata.InstancePartition, vmfs.DefaultStateSize); err != nil {
			return res, err
		}
		if err := b.createPartition(with.Storage, metadata.EncryptedStorePartition, vmfs.DefaultStateSize); err != nil {
			return res, err
		}
		ts, v, err := timeVerdict(ctx, b.runApp(with))
		if err != nil {
			return res, fmt.Errorf("with state: %w", err)
		}
		// The guest saw the state: a first boot, and storage it formatted.
		if v.Instance == nil || v.Instance.Boots != 1 || v.Storage == nil || v.Storage.Formatted {
			return res, fmt.Errorf("with state: the guest's verdict says instance %+v, storage %+v; want a first boot", v.Instance, v.Storage)
		}
		tn, v, err := timeVerdict(ctx, b.runApp(spec))
		if err != nil {
			return res, fmt.Errorf("without state: %w", err)
		}
		if v.Instance != nil || v.Storage != nil {
			return res, fmt.Errorf("without state: the guest's verdict says instance %+v, storage %+v", v.Instance, v.Storage)
		}
		if err := os.RemoveAll(dir); err != nil {
			return res, err
		}
		res.State, res.NoState = append(res.State, ts.Seconds()), append(res.NoState, tn.Seconds())
		b.logf("P5 with state rep %d/%d (%s): with state %.2f s, without %.2f s", rep+1, b.cfg.reps, b.cfg.accel, ts.Seconds(), tn.Seconds())
	}
	return res, nil
}

// runApp boots spec with vmfs.RunApp under QEMU, as `vmfs run-app --vmm qemu
// --require-verdict` does.
func (b *bench) runApp(spec vmfs.Spec) bootRun {
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		return vmfs.RunApp(ctx, vmfs.RunOptions{
			Spec: spec, RequireVerdict: true, Stdout: stdout, Stderr: stderr,
			VM: launcher.Options{VMM: launcher.VMMQemu, Accel: b.cfg.accel},
		})
	}
}

// p7 writes an android14 instance image (-state-size) whole in sequential
// writes of each size through a `vmfs mount`'s disk.img, then the same writes
// into a twin image by one qemu-io process, in each repetition. qemu-io's start
// (the same process with only a flush, on the twin) is taken off its time;
// the mount's write engine starts at the open, before the clock.
func (b *bench) p7(ctx context.Context) (stateWriteResult, error) {
	res := stateWriteResult{Bytes: b.cfg.stateSize}
	for _, bs := range stateBlocks {
		res.Rows = append(res.Rows, stateWriteRow{Block: bs})
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		for i := range res.Rows {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			row := &res.Rows[i]
			dir, err := b.freshDir("state")
			if err != nil {
				return res, err
			}
			inst, twin := filepath.Join(dir, "instance.img"), filepath.Join(dir, "twin.img")
			for _, path := range []string{inst, twin} {
				if err := b.createPartition(path, metadata.InstancePartition, b.cfg.stateSize); err != nil {
					return res, err
				}
			}
			syncDisk()
			vt, err := b.writeThroughMount(inst, row.Block)
			if err != nil {
				return res, err
			}
			syncDisk()
			startup, err := b.timeQemuIO(ctx, nil, "-f", "qcow2", "-c", "flush", twin)
			if err != nil {
				return res, err
			}
			args := []string{"-f", "qcow2"}
			for off := int64(0); off < b.cfg.stateSize; off += row.Block {
				args = append(args, "-c", fmt.Sprintf("write -q %d %d", off, row.Block))
			}
			qt, err := b.timeQemuIO(ctx, nil, append(args, "-c", "flush", twin)...)
			if err != nil {
				return res, err
			}
			if err := os.RemoveAll(dir); err != nil {
				return res, err
			}
			row.Vmfs = append(row.Vmfs, mbps(b.cfg.stateSize, vt))
			row.QemuIO = append(row.QemuIO, mbps(b.cfg.stateSize, qt-startup))
			row.QemuIOStart = append(row.QemuIOStart, float64(startup.Microseconds())/1000)
			b.logf("P7 %s writes rep %d/%d: vmfs %.1f MB/s, qemu-io %.1f MB/s (its start %.1f ms taken off)",
				size(row.Block), rep+1, b.cfg.reps, row.Vmfs[rep], row.QemuIO[rep], row.QemuIOStart[rep])
		}
	}
	return res, nil
}

// writeThroughMount mounts the android14 sample with the instance image inst,
// writes the image's partition whole through its disk's disk.img in bs-byte
// writes and an fsync, unmounts, and returns the time the writes and the fsync
// took.
func (b *bench) writeThroughMount(inst string, bs int64) (time.Duration, error) {
	args := []string{"--profile", stateProfile.String(), "--os-dir", b.in.osDir, "--apex-info-list", testdata.LaterAPEXInfoListPath(),
		"--config-path", testdata.ConfigPath}
	for _, e := range testdata.LaterExtraAPKs() {
		args = append(args, "--extra-idsig", e.Idsig)
	}
	m, err := b.mount(append(args, testdata.LaterAPKPath(), testdata.LaterIdsigPath(), inst)...)
	if err != nil {
		return 0, err
	}
	// The state disk is the one whose partitions/ shows vm-instance.
	views, err := filepath.Glob(m.path(filepath.Join("disks", "*", "partitions", metadata.InstanceLabel)))
	if err != nil || len(views) != 1 {
		return 0, fmt.Errorf("mount %s: want one disks/*/partitions/%s, found %v (%v)", m.dir, metadata.InstanceLabel, views, err)
	}
	disk := filepath.Join(filepath.Dir(filepath.Dir(views[0])), "disk.img")
	off, n, err := gptPartition(disk, metadata.InstanceLabel)
	if err != nil {
		return 0, err
	}
	if n != b.cfg.stateSize {
		return 0, fmt.Errorf("%s: %s is %d bytes, want %d", disk, metadata.InstanceLabel, n, b.cfg.stateSize)
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, bs)
	start := time.Now()
	for done := int64(0); done < n; done += bs {
		if _, err := f.WriteAt(buf, off+done); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync %s: %w", disk, err)
	}
	took := time.Since(start)
	if err := f.Close(); err != nil {
		return 0, err
	}
	return took, m.close.Close()
}
