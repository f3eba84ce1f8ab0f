package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"vmfs"
	"vmfs/service"
	"vmfs/testdata"
)

// serviceResult is P6: one `vmfs serve` for many payloads against a standalone
// mount per payload.
type serviceResult struct {
	APKSize  int64  `json:"apk_bytes"` // the payload of the add figures
	DiskSize int64  `json:"disk_bytes"`
	Add      series `json:"service_add_ms"`      // service.Client.Add in this process, then the first 4 KiB read
	AddCLI   series `json:"service_mount_ms"`    // `vmfs mount --socket`, then the read
	Mount    series `json:"standalone_mount_ms"` // `vmfs mount` with its own server, then the read
	Copy     series `json:"copy_ms"`             // resolve and copy the flat image, then the read

	Payloads       int    `json:"payloads"`
	PayloadAPK     int64  `json:"payload_apk_bytes"`
	ServiceRSSKiB  series `json:"service_rss_kib"`
	MountsRSSKiB   series `json:"standalone_rss_kib"` // summed over the servers
	ServiceFDs     series `json:"service_fds"`
	MountsFDs      series `json:"standalone_fds"`
	ServiceAllMs   series `json:"service_add_all_ms"` // every payload through `vmfs mount --socket`
	MountsAllMs    series `json:"standalone_add_all_ms"`
	ServiceBaseKiB series `json:"service_empty_rss_kib"` // before the first payload
}

// vmfsService is a `vmfs serve` the run started.
type vmfsService struct {
	pid         int
	dir, socket string
	client      *service.Client
	close       *closer
}

// serveTimeout bounds the wait for a service to serve, and to exit once told.
const serveTimeout = 30 * time.Second

// startService starts `vmfs serve` in a fresh directory and returns once it
// serves; its closer stops it with SIGTERM, as systemd would.
func (b *bench) startService() (*vmfsService, error) {
	dir, err := b.freshDir("service")
	if err != nil {
		return nil, err
	}
	s := &vmfsService{dir: filepath.Join(dir, "mnt"), socket: filepath.Join(dir, "vmfs.sock")}
	cmd := exec.Command(b.cfg.vmfs, "serve", "--dir", s.dir, "--socket", s.socket, "--apex-info-list", b.in.apexInfoList,
		"--os-dir", b.in.osDir, "--cid-dir", filepath.Join(dir, "cids"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmfs serve: %w", err)
	}
	s.pid = cmd.Process.Pid
	ready, exited := make(chan struct{}), make(chan error, 1)
	var log bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "serving") {
				close(ready)
			}
		}
		exited <- cmd.Wait()
	}()
	s.close = b.onExit(func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("vmfs serve after SIGTERM: %w", err)
			}
		case <-time.After(serveTimeout):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("vmfs serve still running %v after SIGTERM; killed", serveTimeout)
		}
		return os.RemoveAll(dir)
	})
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		s.close.Close()
		return nil, fmt.Errorf("vmfs serve exited: %v: %s", err, log.String())
	case <-time.After(serveTimeout):
		s.close.Close()
		return nil, fmt.Errorf("vmfs serve not serving after %v", serveTimeout)
	}
	s.client = &service.Client{Socket: s.socket}
	return s, nil
}

// spec is the payload of apk, as a client names it: the service has its own APEXes.
func clientSpec(apk, idsig string) vmfs.Spec {
	return vmfs.Spec{APK: apk, Idsig: idsig, ConfigPath: testdata.ConfigPath}
}

// p6 measures the service: adding one payload against a standalone mount and a
// copy, back to back in each repetition; then n payloads in one service against
// n standalone mounts.
func (b *bench) p6(ctx context.Context, pf payloadFile) (serviceResult, error) {
	res := serviceResult{APKSize: pf.plan.apk().Size, DiskSize: pf.plan.disk.Flat.Size}
	if err := b.p6Add(ctx, pf, &res); err != nil {
		return res, err
	}
	return res, b.p6Many(ctx, &res)
}

func (b *bench) p6Add(ctx context.Context, pf payloadFile, res *serviceResult) error {
	s, err := b.startService()
	if err != nil {
		return err
	}
	defer s.close.Close()
	ms := func(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		p, err := s.client.Add(ctx, "", clientSpec(pf.in.apk, pf.in.idsig), "")
		if err != nil {
			return err
		}
		if err := readyRead(filepath.Join(p.Dir, "payload.img")); err != nil {
			return err
		}
		res.Add = append(res.Add, ms(start))
		if err := s.client.Remove(ctx, p.Name); err != nil {
			return err
		}

		start = time.Now()
		out, err := exec.Command(b.cfg.vmfs, "mount", "--socket", s.socket, pf.in.apk, pf.in.idsig, testdata.ConfigPath).Output()
		if err != nil {
			return fmt.Errorf("vmfs mount --socket: %w", err)
		}
		dir := strings.TrimSpace(string(out))
		if err := readyRead(filepath.Join(dir, "payload.img")); err != nil {
			return err
		}
		res.AddCLI = append(res.AddCLI, ms(start))
		if err := s.client.Remove(ctx, filepath.Base(dir)); err != nil {
			return err
		}

		start = time.Now()
		m, err := b.mountVmfs(pf.in.apk, false)
		if err != nil {
			return err
		}
		if err := readyRead(m.path("payload.img")); err != nil {
			return err
		}
		res.Mount = append(res.Mount, ms(start))
		if err := m.close.Close(); err != nil {
			return err
		}

		syncDisk()
		flat := filepath.Join(b.tmp, "flat.img")
		start = time.Now()
		plan, err := resolve(pf.in)
		if err == nil {
			err = copyFlat(plan, flat)
		}
		if err == nil {
			err = readyRead(flat)
		}
		if err != nil {
			return err
		}
		res.Copy = append(res.Copy, ms(start))
		if err := os.Remove(flat); err != nil {
			return err
		}
		syncDisk()
		b.logf("P6 %s rep %d/%d: service add %.2f ms, vmfs mount through the service %.1f ms, standalone vmfs mount %.1f ms, copy %.1f ms",
			size(res.APKSize), rep+1, b.cfg.reps, res.Add[rep], res.AddCLI[rep], res.Mount[rep], res.Copy[rep])
	}
	return nil
}

// manyPayloads is how many payloads P6 serves at once.
func (b *bench) manyPayloads() (n int, apkSize int64) {
	if b.cfg.smoke {
		return 8, 64 << 10
	}
	return 100, 1 << 20
}

// p6Many adds n payloads of their own APKs through `vmfs mount` to one fresh
// service, and mounts them standalone, and measures the memory and descriptors
// each way holds and the time to add them all.
func (b *bench) p6Many(ctx context.Context, res *serviceResult) error {
	n, apkSize := b.manyPayloads()
	res.Payloads, res.PayloadAPK = n, apkSize
	apks := make([]string, n)
	for i := range apks {
		apks[i] = filepath.Join(b.tmp, fmt.Sprintf("many-%d.apk", i))
		if err := writeRandomAPK(apks[i], apkSize, uint64(1000+i)); err != nil {
			return err
		}
	}
	defer func() {
		for _, apk := range apks {
			os.Remove(apk)
		}
	}()
	for rep := 0; rep < b.cfg.reps; rep++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := b.startService()
		if err != nil {
			return err
		}
		base, err := procField(s.pid, "status", "VmRSS")
		if err != nil {
			return err
		}
		start := time.Now()
		for _, apk := range apks {
			if out, err := exec.Command(b.cfg.vmfs, "mount", "--socket", s.socket, apk, b.in.idsig, testdata.ConfigPath).CombinedOutput(); err != nil {
				return fmt.Errorf("vmfs mount --socket %s: %w: %s", apk, err, bytes.TrimSpace(out))
			}
		}
		res.ServiceAllMs = append(res.ServiceAllMs, float64(time.Since(start).Microseconds())/1000)
		srss, sfds, err := usage(s.pid)
		if err != nil {
			return err
		}
		res.ServiceBaseKiB = append(res.ServiceBaseKiB, float64(base))
		res.ServiceRSSKiB, res.ServiceFDs = append(res.ServiceRSSKiB, float64(srss)), append(res.ServiceFDs, float64(sfds))
		if err := s.close.Close(); err != nil {
			return err
		}

		var mounts []*vmfsMount
		start = time.Now()
		for _, apk := range apks {
			m, err := b.mountVmfs(apk, false)
			if err != nil {
				return err
			}
			mounts = append(mounts, m)
		}
		res.MountsAllMs = append(res.MountsAllMs, float64(time.Since(start).Microseconds())/1000)
		var rssSum, fdSum int64
		for _, m := range mounts {
			pid, err := m.serverPid()
			if err != nil {
				return err
			}
			rss, fds, err := usage(pid)
			if err != nil {
				return err
			}
			rssSum, fdSum = rssSum+rss, fdSum+int64(fds)
		}
		res.MountsRSSKiB, res.MountsFDs = append(res.MountsRSSKiB, float64(rssSum)), append(res.MountsFDs, float64(fdSum))
		var errs []error
		for _, m := range mounts {
			errs = append(errs, m.close.Close())
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		b.logf("P6 %d payloads rep %d/%d: service %.1f MiB, %d fds, added in %.0f ms; standalone %.1f MiB, %d fds, mounted in %.0f ms",
			n, rep+1, b.cfg.reps, float64(srss)/1024, sfds, res.ServiceAllMs[rep], float64(rssSum)/1024, fdSum, res.MountsAllMs[rep])
	}
	return nil
}

// usage is the resident memory (KiB) and the open descriptors of process pid.
func usage(pid int) (rssKiB int64, fds int, err error) {
	if rssKiB, err = procField(pid, "status", "VmRSS"); err != nil {
		return 0, 0, err
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rssKiB, len(ents), err
}
