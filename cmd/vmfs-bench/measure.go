package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// readBlock is the size of every sequential read.
const readBlock = 1 << 20

// readSeq reads n bytes of path from off in 1 MiB reads (n < 0: to the end) and
// returns the bytes read and the time the reads took, open excluded.
func readSeq(path string, off, n int64, buf []byte) (int64, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	start := time.Now()
	var total int64
	for n < 0 || total < n {
		b := buf
		if n >= 0 {
			b = buf[:min(int64(len(buf)), n-total)]
		}
		m, err := f.ReadAt(b, off+total)
		total += int64(m)
		if err == io.EOF && n < 0 {
			break
		}
		if err != nil {
			return total, 0, fmt.Errorf("read %s at %d: %w", path, off+total, err)
		}
	}
	return total, time.Since(start), nil
}

// readAll reads every path to its end and returns the bytes and time in all.
func readAll(paths []string, buf []byte) (int64, time.Duration, error) {
	var n int64
	var d time.Duration
	for _, p := range paths {
		m, t, err := readSeq(p, 0, -1, buf)
		if err != nil {
			return 0, 0, err
		}
		n, d = n+m, d+t
	}
	return n, d, nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// readyRead is what "readable" means in P1: the first 4 KiB of the disk came back.
func readyRead(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 4096)
	if _, err := io.ReadFull(f, b); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// fioJob is one fio run of 4 KiB random reads over [off, off+size) of a file.
type fioJob struct {
	path      string
	off, size int64
	direct    bool // O_DIRECT: every read goes to the file's server
}

// randomRead runs job with the configured jobs and runtime and returns read IOPS.
func (b *bench) randomRead(ctx context.Context, job fioJob) (float64, error) {
	direct := "0"
	if job.direct {
		direct = "1"
	}
	args := []string{
		"--name=rand", "--filename=" + job.path, "--readonly", "--rw=randread", "--bs=4k",
		"--ioengine=psync", "--numjobs=" + strconv.Itoa(b.cfg.jobs), "--group_reporting",
		"--offset=" + strconv.FormatInt(job.off, 10), "--size=" + strconv.FormatInt(job.size, 10),
		"--direct=" + direct, "--invalidate=0", "--randrepeat=1",
		"--time_based", "--runtime=" + strconv.Itoa(int(b.cfg.fioRuntime.Seconds())),
		"--output-format=json",
	}
	cmd := exec.CommandContext(ctx, b.cfg.fio, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("fio on %s: %w: %s", job.path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	// fio may print notes before the JSON document.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var doc struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("fio on %s: output: %w", job.path, err)
	}
	if len(doc.Jobs) != 1 || doc.Jobs[0].Error != 0 || doc.Jobs[0].Read.IOPS <= 0 {
		return 0, fmt.Errorf("fio on %s: no reads reported: %s", job.path, bytes.TrimSpace(out))
	}
	return doc.Jobs[0].Read.IOPS, nil
}

// procField reads the number of a "name: value" line of /proc/<pid>/<file>.
func procField(pid int, file, name string) (int64, error) {
	return fileField(fmt.Sprintf("/proc/%d/%s", pid, file), name)
}

// fileField reads the number of a "name: value" line (kB units dropped) of path.
func fileField(path, name string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the user plus system CPU time pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: comm may hold spaces, so fields count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("%s: too short", path)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: bad utime or stime", path)
	}
	return time.Duration(utime+stime) * clockTick, nil
}
