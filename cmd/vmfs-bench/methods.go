package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/fusedisk"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// closer runs its function at most once: when a measurement is done with the thing,
// or at the end of the run when the measurement failed first.
type closer struct {
	once sync.Once
	fn   func() error
	err  error
}

func (c *closer) Close() error {
	c.once.Do(func() { c.err = c.fn() })
	return c.err
}

// onExit registers fn to run at the end of the run unless it ran before.
func (b *bench) onExit(fn func() error) *closer {
	c := &closer{fn: fn}
	b.closers = append(b.closers, c)
	return c
}

// closeAll runs every registered closer, the newest first.
func (b *bench) closeAll() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i].Close())
	}
	b.closers = nil
	return errors.Join(errs...)
}

// freshDir makes a new empty directory in the run's temp dir.
func (b *bench) freshDir(prefix string) (string, error) {
	return os.MkdirTemp(b.tmp, prefix+"-")
}

// vmfsMount is a mount served by a background `vmfs mount` server.
type vmfsMount struct {
	dir   string
	close *closer
}

func (m *vmfsMount) path(name string) string { return filepath.Join(m.dir, name) }

// mountVmfs mounts the payload apk with the run's idsig, APEXes and OS configs,
// with --no-passthrough unless passthrough.
func (b *bench) mountVmfs(apk string, passthrough bool) (*vmfsMount, error) {
	args := []string{"--apex-info-list", b.in.apexInfoList, "--os-dir", b.in.osDir}
	if !passthrough {
		args = append(args, "--no-passthrough")
	}
	return b.mount(append(args, apk, b.in.idsig, testdata.ConfigPath)...)
}

// mount runs `vmfs mount <args> <fresh mountpoint>`, which returns once the mount
// is ready. It runs without the run's context: a client killed mid-mount would
// leave the detached server behind.
func (b *bench) mount(args ...string) (*vmfsMount, error) {
	mnt, err := b.freshDir("vmfs")
	if err != nil {
		return nil, err
	}
	args = append(append([]string{"mount"}, args...), mnt)
	out, err := exec.Command(b.cfg.vmfs, args...).CombinedOutput()
	m := &vmfsMount{dir: mnt}
	m.close = b.onExit(func() error {
		if src, _ := mountSource(mnt); src == "" {
			return os.Remove(mnt)
		}
		if out, err := exec.Command(b.cfg.vmfs, "unmount", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("vmfs unmount %s: %w: %s", mnt, err, bytes.TrimSpace(out))
		}
		return os.Remove(mnt)
	})
	if err != nil {
		m.close.Close()
		return nil, fmt.Errorf("vmfs %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return m, nil
}

// serverPid is the pid of the vmfs server of m, from its mount source "vmfs:<pid>".
func (m *vmfsMount) serverPid() (int, error) {
	src, err := mountSource(m.dir)
	if err != nil {
		return 0, err
	}
	pid, ok := strings.CutPrefix(src, "vmfs:")
	if !ok {
		return 0, fmt.Errorf("mount %s: source %q is not vmfs:<pid>", m.dir, src)
	}
	return strconv.Atoi(pid)
}

// mountSource returns the source of the mount at point, or "" when nothing is
// mounted there.
func mountSource(point string) (string, error) {
	m, err := fusedisk.MountAt(point)
	if m == nil || err != nil {
		return "", err
	}
	return m.Source, nil
}

// copyFlat writes the flat disk image to out as a careful user would: the original
// bytes with copy_file_range (an in-kernel copy, no round trip through user space),
// the GPT and trailers written, the zero padding left as holes. No fsync: the
// image counts as ready once the kernel has it, which favours the copy.
func copyFlat(p *plan, out string) error {
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	srcs := make([]*os.File, len(p.disk.Sources))
	for i, s := range p.disk.Sources {
		if srcs[i], err = os.Open(s.Path); err != nil {
			return err
		}
		defer srcs[i].Close()
	}
	for _, e := range p.disk.Flat.Extents {
		switch e.Kind {
		case layout.Zero:
		case layout.Data:
			if _, err := f.WriteAt(e.Data, e.Off); err != nil {
				return fmt.Errorf("copy to %s: %w", out, err)
			}
		case layout.File:
			src := srcs[e.Source]
			if _, err := f.Seek(e.Off, io.SeekStart); err != nil {
				return err
			}
			if _, err := src.Seek(e.SourceOff, io.SeekStart); err != nil {
				return err
			}
			// *os.File.ReadFrom uses copy_file_range for an io.LimitedReader of a file.
			n, err := io.Copy(f, io.LimitReader(src, e.Len))
			if err != nil {
				return fmt.Errorf("copy %s to %s: %w", src.Name(), out, err)
			}
			if n != e.Len {
				return fmt.Errorf("copy %s to %s: %d of %d bytes", src.Name(), out, n, e.Len)
			}
		}
	}
	if err := f.Truncate(p.disk.Flat.Size); err != nil {
		return err
	}
	return f.Close()
}

// writeSeedFiles writes what the seed's virtualizationservice wrote before starting
// crosvm: the GPT header and footer files, one shared 4 KiB zero filler for the
// padding, a file for each run of synthesized bytes (the metadata, the APEX size
// trailers), and the composite descriptor that stitches them between the originals.
// It returns the header path, the first bytes of the disk.
func writeSeedFiles(p *plan, dir string) (string, error) {
	d := p.disk
	c := layout.Composite{Version: layout.CompositeVersion, Length: uint64(d.Flat.Size)}
	header := filepath.Join(dir, "composite-0-header.img")
	if err := os.WriteFile(header, d.Header.Extents[0].Data, 0o644); err != nil {
		return "", err
	}
	c.Components = append(c.Components, layout.Component{Path: header})
	zero := filepath.Join(dir, "zero.img")
	if err := os.WriteFile(zero, make([]byte, layout.PartitionAlign), 0o644); err != nil {
		return "", err
	}
	for i, part := range d.Partitions {
		for j, e := range part.Extents {
			path := zero
			switch e.Kind {
			case layout.File:
				path = d.Sources[e.Source].Path
			case layout.Data:
				path = filepath.Join(dir, fmt.Sprintf("part%d-%d.img", i, j))
				if err := os.WriteFile(path, e.Data, 0o644); err != nil {
					return "", err
				}
			}
			c.Components = append(c.Components, layout.Component{Path: path, Offset: uint64(part.Offset + e.Off)})
		}
	}
	footer := filepath.Join(dir, "composite-0-footer.img")
	if err := os.WriteFile(footer, d.Footer.Extents[0].Data, 0o644); err != nil {
		return "", err
	}
	c.Components = append(c.Components, layout.Component{Path: footer, Offset: uint64(d.Flat.Size - layout.FooterSize)})
	if err := os.WriteFile(filepath.Join(dir, "composite-0.img"), c.Marshal(), 0o644); err != nil {
		return "", err
	}
	return header, nil
}

// nbdDisk is nbdkit's partitioning plugin serving the payload's partition files as
// one GPT disk on a Unix socket, and nbdfuse presenting it as <mnt>/disk.img.
type nbdDisk struct {
	disk  string
	close *closer
}

// nbdTuning is what a tuned nbdfuse gets, so that the comparison is of the servers,
// not of kernel settings: -o kernel_cache keeps read pages across opens as vmfs's
// FOPEN_KEEP_CACHE does (the nbdfuse manual calls it "generally a good idea"), and
// the mount's read_ahead_kb is raised to what vmfs sets on its own.
const (
	nbdTuning       = "-o kernel_cache, read_ahead_kb 1024"
	nbdReadaheadKiB = 1024
)

// startNBD serves p's partitions with nbdkit + nbdfuse and returns once the disk is
// ready to read. The partition files are named by their GPT labels, so nbdkit writes
// the same partition names. Differences from vmfs's disk that no option removes:
// nbdkit pads each partition to 512 bytes, not 4 KiB, and the APEX partitions are the
// bare files, without the size trailer. tuned gives nbdfuse what vmfs gives itself
// (see nbdTuning); otherwise it runs with its defaults.
func (b *bench) startNBD(p *plan, tuned bool) (*nbdDisk, error) {
	dir, err := b.freshDir("nbd")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, part := range p.disk.Partitions {
		name := filepath.Join(dir, part.Label)
		if part.Label == metadata.Android12.MetadataLabel() {
			err = os.WriteFile(name, p.metadata, 0o644)
		} else {
			err = os.Symlink(p.disk.Sources[part.Extents[0].Source].Path, name)
		}
		if err != nil {
			return nil, err
		}
		files = append(files, part.Label) // nbdkit names a partition by the path it was given
	}
	sock, kitPid := filepath.Join(dir, "sock"), filepath.Join(dir, "nbdkit.pid")
	// alignment=4096 places the partitions where vmfs does (its default is 1 MiB).
	args := append([]string{"-r", "-U", sock, "-P", kitPid, "partitioning", "partition-type=gpt", "alignment=4096"}, files...)
	// nbdkit forks into the background once it listens, so Run returns when it is ready.
	kit := exec.Command(b.cfg.nbdkit, args...)
	kit.Dir = dir
	out, err := kit.CombinedOutput()
	stopKit := b.onExit(func() error { return stopPidFile(kitPid, "nbdkit") })
	if err != nil {
		stopKit.Close()
		return nil, fmt.Errorf("nbdkit: %w: %s", err, bytes.TrimSpace(out))
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return nil, err
	}
	fusePid := filepath.Join(dir, "nbdfuse.pid")
	args = []string{"-r", "-P", fusePid}
	if tuned {
		args = append(args, "-o", "kernel_cache")
	}
	cmd := exec.Command(b.cfg.nbdfuse, append(args, filepath.Join(mnt, "disk.img"), "--unix", sock)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		stopKit.Close()
		return nil, fmt.Errorf("nbdfuse: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	d := &nbdDisk{disk: filepath.Join(mnt, "disk.img")}
	d.close = b.onExit(func() error {
		var errs []error
		if src, _ := mountSource(mnt); src != "" {
			errs = append(errs, unmount(mnt))
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			errs = append(errs, fmt.Errorf("nbdfuse on %s did not exit after unmount; killed", mnt))
		}
		return errors.Join(append(errs, stopKit.Close())...)
	})
	// nbdfuse writes its pid file once it serves.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fusePid); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err // for the closer
			d.close.Close()
			return nil, fmt.Errorf("nbdfuse exited before serving: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		default:
		}
		if time.Now().After(deadline) {
			d.close.Close()
			return nil, fmt.Errorf("nbdfuse not serving %s after 10s", mnt)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if tuned {
		if err := d.raiseReadahead(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// raiseReadahead gives the nbdfuse mount the readahead vmfs gives its own, which
// vmfs too does only as root.
func (d *nbdDisk) raiseReadahead() error {
	if os.Geteuid() != 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(d.disk, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(strconv.Itoa(nbdReadaheadKiB)), 0)
}

func unmount(mnt string) error {
	if os.Geteuid() == 0 {
		if err := unix.Unmount(mnt, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		return nil
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -u %s: %w: %s", mnt, err, bytes.TrimSpace(out))
	}
	return nil
}

// stopPidFile stops the process named in pidFile, checking first that it is still
// the program it should be (a pid may be reused), and waits until it is gone.
func stopPidFile(pidFile, program string) error {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // it never started
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("pid file %s: %w", pidFile, err)
	}
	alive := func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && filepath.Base(exe) == program
	}
	if !alive() {
		return nil
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; alive(); i++ {
		if i == 500 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if i > 1000 {
			return fmt.Errorf("%s %d still running after SIGKILL", program, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// gptPartition finds the partition called label in the GPT of the disk at path (as
// sfdisk reads it: nbdkit's table, not one vmfs wrote) and returns its byte range.
func gptPartition(path, label string) (off, size int64, err error) {
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("sfdisk --json %s: %w", path, err)
	}
	var t struct {
		PartitionTable struct {
			SectorSize int64
			Partitions []struct {
				Name        string
				Start, Size int64
			}
		}
	}
	if err := json.Unmarshal(out, &t); err != nil {
		return 0, 0, fmt.Errorf("sfdisk --json %s: %w", path, err)
	}
	for _, p := range t.PartitionTable.Partitions {
		if p.Name == label {
			ss := max(t.PartitionTable.SectorSize, layout.SectorSize)
			return p.Start * ss, p.Size * ss, nil
		}
	}
	return 0, 0, fmt.Errorf("gpt of %s: no partition %q", path, label)
}
