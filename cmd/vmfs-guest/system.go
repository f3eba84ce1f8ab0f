package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountPseudoFS mounts what the agent reads: /proc, /sys and a devtmpfs on /dev, where the
// kernel creates the disk, loop and device-mapper nodes itself (there is no ueventd).
func mountPseudoFS() (string, error) {
	for _, m := range []struct{ fstype, dir, data string }{
		{"proc", "/proc", ""},
		{"sysfs", "/sys", ""},
		{"devtmpfs", "/dev", "mode=0755"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return "", err
		}
		err := unix.Mount(m.fstype, m.dir, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return "", fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	return "mounted /proc, /sys and devtmpfs on /dev", nil
}

// modulesDir is where the initramfs keeps the kernel modules of the running kernel.
func modulesDir() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])), nil
}

// moduleOrder reads modules.dep ("path.ko: dep.ko dep2.ko", paths relative to its
// directory) and returns every module listed, each after all of its dependencies.
func moduleOrder(r io.Reader) ([]string, error) {
	deps := map[string][]string{}
	var listed []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep: line %q has no ':'", line)
		}
		if _, dup := deps[mod]; dup {
			return nil, fmt.Errorf("modules.dep: %s listed twice", mod)
		}
		deps[mod] = strings.Fields(rest)
		listed = append(listed, mod)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(mod, from string) error
	visit = func(mod, from string) error {
		switch state[mod] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules.dep: dependency cycle through %s", mod)
		}
		ds, ok := deps[mod]
		if !ok {
			return fmt.Errorf("modules.dep: %s needs %s, which is not listed", from, mod)
		}
		state[mod] = visiting
		for _, d := range ds {
			if err := visit(d, mod); err != nil {
				return err
			}
		}
		state[mod] = done
		order = append(order, mod)
		return nil
	}
	for _, m := range listed {
		if err := visit(m, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// loadModules loads every module in the initramfs's modules.dep, dependencies first.
// A module the kernel already has (built in or loaded) is fine.
func loadModules() (string, error) {
	dir, err := modulesDir()
	if err != nil {
		return "", err
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return "", err
	}
	order, err := moduleOrder(f)
	f.Close()
	if err != nil {
		return "", err
	}
	names := make([]string, len(order))
	for i, rel := range order {
		names[i] = strings.TrimSuffix(filepath.Base(rel), ".ko")
		if err := loadModule(filepath.Join(dir, rel)); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("loaded %d modules: %s", len(names), strings.Join(names, " ")), nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// kernelLog returns the kernel's error messages (level KERN_ERR or worse) that contain
// one of words, repeats dropped, for quoting the kernel's own account of a failure.
func kernelLog(words ...string) []string {
	// Raw syscalls: os.File would park a non-blocking read in the poller until the kernel
	// logs something new, instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var out []string
	buf := make([]byte, 8192)
	for {
		// Each read returns one record, "prio,seq,usec,flags;text\n" plus continuation lines;
		// prio is facility*8 + level.
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten while reading; skip ahead
		}
		if err != nil || n <= 0 {
			return out
		}
		head, text, _ := strings.Cut(string(buf[:n]), ";")
		text, _, _ = strings.Cut(text, "\n")
		prio, _, _ := strings.Cut(head, ",")
		if p, err := strconv.Atoi(prio); err != nil || p&7 > 3 {
			continue
		}
		if len(out) > 0 && out[len(out)-1] == text {
			continue
		}
		for _, w := range words {
			if strings.Contains(text, w) {
				out = append(out, text)
				break
			}
		}
	}
}

// console returns where the verdict goes: /dev/console (the serial port given by
// console=), or stdout when /dev is not there.
func console() io.WriteCloser {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		return f
	}
	return os.Stdout
}

// quietConsole keeps kernel messages off the console while the verdict is written.
func quietConsole() {
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0)
}

// powerOff syncs and powers the VM off. It returns only if that failed; init then exits,
// the kernel panics, and panic=-1 with QEMU's -no-reboot ends the VM all the same.
func powerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
