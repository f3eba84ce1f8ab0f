// Package confine confines this process with Landlock. It owns the process's
// Landlock ruleset (Apply): once applied, the kernel lets this process, every
// thread of it and every child it starts (across exec, for good) open only the
// paths the rules grant.
//
// What Landlock checks, as measured on Linux 6.18 (ABI 7): every open by path,
// including a reopen through /proc/self/fd/N (the file's own path is checked,
// not the magic link's), in the process and in its children; not reading or
// writing a descriptor opened before, nor stat, readlink, inotify or an O_PATH
// open. A file of an internal mount has no path to check: a memfd reopens
// through /proc/self/fd/N whatever the rules. Where the kernel has no Landlock,
// Apply says so once and the process runs unconfined.
//
// A landlocked process may not change the mount table, whatever its rules: it
// owns also the Helper, an unconfined process it starts before Apply (this
// binary again) that makes those changes for it, for one mount only. It uses
// fusedisk's Mounter and Unmount, and knows nothing of what confines itself
// (the service) nor of what the rules should be.
package confine

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"go.uber.org/zap"
)

// Rules are what a confined process may still open. A directory's rights reach
// everything beneath it; a path that does not exist is passed over.
type Rules struct {
	Read []string // read files, list directories
	// ReadWrite are read, written and created in (files, never removed), and
	// their devices used (ioctl).
	ReadWrite []string
	// Exec are programs to run: read and executed, each with its interpreter
	// (an ELF binary's dynamic loader, a script's #! program), which the kernel
	// opens too. The libraries they load must be in Read.
	Exec []string
}

// The rights of each kind of rule, for a directory; a file gets those that
// apply to files.
const (
	readRights      = landlock.AccessFSSet(ll.AccessFSReadFile | ll.AccessFSReadDir)
	readWriteRights = readRights | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSMakeReg | ll.AccessFSIoctlDev
	execRights      = readRights | ll.AccessFSExecute
	fileRights      = landlock.AccessFSSet(ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSExecute | ll.AccessFSIoctlDev)
)

// abi is the newest Landlock ABI vmfs was tested with. A newer one restricts
// more (connecting to Unix sockets, from v9), so taking it is a change to test.
const abi = 7

// Apply confines this process, its threads and its future children to r, with
// Landlock ABI v7 or the best the kernel has below it, and reports whether it
// did. It cannot be undone. Where the kernel has no Landlock, it logs that and
// returns false.
func Apply(r Rules, log *zap.Logger) (bool, error) {
	v, err := ll.LandlockGetABIVersion()
	if err != nil || v < 1 {
		log.Warn("Landlock is not available in this kernel: running unconfined", zap.Error(err))
		return false, nil
	}
	exec, err := withInterpreters(r.Exec)
	if err != nil {
		return false, err
	}
	var rules []landlock.Rule
	for _, g := range []struct {
		paths  []string
		rights landlock.AccessFSSet
	}{{r.Read, readRights}, {r.ReadWrite, readWriteRights}, {exec, execRights}} {
		for _, p := range g.paths {
			st, err := os.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("landlock rule for %s: %w", p, err)
			}
			rights := g.rights
			if !st.IsDir() {
				rights &= fileRights
			}
			rules = append(rules, landlock.PathAccess(rights, p))
		}
	}
	// Go reads the local time zone on its first use: let that be now, while it may.
	_ = time.Local.String()
	if err := landlock.V7.BestEffort().RestrictPaths(rules...); err != nil {
		return false, fmt.Errorf("landlock: %w", err)
	}
	log.Info("confined with Landlock", zap.Int("abi", min(v, abi)))
	log.Debug("Landlock rules", zap.Strings("read", r.Read), zap.Strings("read_write", r.ReadWrite), zap.Strings("exec", exec))
	return true, nil
}

// withInterpreters is programs with the interpreters they need, transitively.
func withInterpreters(programs []string) ([]string, error) {
	out := append([]string(nil), programs...)
	seen := map[string]bool{}
	for i := 0; i < len(out); i++ {
		if seen[out[i]] {
			continue
		}
		seen[out[i]] = true
		interp, err := interpreter(out[i])
		if err != nil {
			return nil, err
		}
		if interp != "" {
			out = append(out, interp)
		}
	}
	return out, nil
}

// interpreter is the program the kernel runs to execute path, or "" when it
// needs none (or path is missing, or no program at all).
func interpreter(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("landlock rule for %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if line, ok := bytes.CutPrefix(head, []byte("#!")); ok {
		line, _, _ = bytes.Cut(line, []byte("\n"))
		if fields := bytes.Fields(line); len(fields) > 0 {
			return string(fields[0]), nil
		}
		return "", nil
	}
	e, err := elf.NewFile(f)
	if err != nil {
		return "", nil // not ELF: the kernel will refuse it, not Landlock
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", fmt.Errorf("landlock rule for %s: interpreter: %w", path, err)
			}
			return string(bytes.TrimRight(b, "\x00")), nil
		}
	}
	return "", nil
}
