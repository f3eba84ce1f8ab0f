package vmfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/fusedisk"
	"vmfs/internal/proc"
)

// A server's state, as List sees it.
const (
	StateServing      = "serving"
	StateStopped      = "stopped"       // SIGSTOP or a debugger: kill -CONT resumes it
	StateDead         = "dead"          // killed: UnmountDir frees the mountpoint
	StateNotAnswering = "not answering" // running, but its manifest did not come in time
	StateCovered      = "covered"       // another mount sits on top of it
)

// MountStatus is one vmfs mount and how its server is.
type MountStatus struct {
	Dir      string
	Pid      int    // the serving process, from the mount's source name
	State    string // one of the State constants
	Manifest *Manifest
	Source   string // the mount's source, naming its server (FSName)
}

// answerTimeout bounds the wait for a server's manifest.
const answerTimeout = 2 * time.Second

// List lists the vmfs mounts this process sees. It reads /proc and each serving
// mount's manifest, and never blocks on a stopped or stuck server.
func List(ctx context.Context) ([]MountStatus, error) {
	ms, err := fusedisk.Mounts()
	if err != nil {
		return nil, err
	}
	var out []MountStatus
	for _, m := range ms {
		if m.FSType == fusedisk.FSType {
			out = append(out, status(ctx, m))
		}
	}
	return out, nil
}

// Status is the vmfs mount at dir (or where the symlinks on its path lead), or
// nil when there is none.
func Status(ctx context.Context, dir string) (*MountStatus, error) {
	ms, err := fusedisk.Mounts()
	if err != nil {
		return nil, err
	}
	points := map[string]bool{}
	for _, m := range ms {
		if m.FSType == fusedisk.FSType {
			points[m.Point] = true
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	// A path that resolves nowhere (or not in time) is taken as it is.
	var real string
	if interruptible(tctx, func() (err error) { real, err = realPath(dir, points); return err }) == nil {
		dir = real
	}
	for _, m := range ms {
		if m.FSType == fusedisk.FSType && m.Point == dir {
			st := status(ctx, m)
			return &st, nil
		}
	}
	return nil, nil
}

// maxLinks bounds the symlinks realPath follows, as the kernel's ELOOP does.
const maxLinks = 40

// realPath resolves the symlinks of abs, an absolute clean path, as the kernel
// does; mountinfo names mountpoints so. It never looks at a path of points (the
// vmfs mountpoints), which no symlink can be: a stuck server's mount would never
// answer, and a dead one's answers only errors.
func realPath(abs string, points map[string]bool) (string, error) {
	done, rest, links := "/", strings.Split(abs, "/"), 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, name)
		if points[next] {
			done = next
			continue
		}
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", &os.PathError{Op: "resolve", Path: abs, Err: unix.ELOOP}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			done = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return done, nil
}

// Open returns the manifest of the live vmfs mount at dir.
func Open(ctx context.Context, dir string) (*Manifest, error) {
	st, err := Status(ctx, dir)
	if err != nil {
		return nil, err
	}
	if st == nil || st.State != StateServing {
		why := "not a vmfs mount"
		if st != nil {
			why = "its server is " + st.State
		}
		return nil, WithKind(ErrMount, fmt.Errorf("%s: not a live vmfs mount: %s", dir, why))
	}
	return st.Manifest, nil
}

// status tells how the server of m is: from /proc first, then, when it runs,
// from whether it serves its own manifest in time.
func status(ctx context.Context, m fusedisk.MountInfo) MountStatus {
	st := MountStatus{Dir: m.Point, Source: m.Source}
	if pid, ok := strings.CutPrefix(m.Source, fsNamePrefix); ok {
		st.Pid, _ = strconv.Atoi(pid)
	}
	switch proc.State(st.Pid) {
	case 0, 'Z', 'X':
		st.State = StateDead
		return st
	case 'T', 't':
		st.State = StateStopped
		return st
	}
	if top, err := fusedisk.MountAt(m.Point); err != nil || top == nil || top.Source != m.Source {
		st.State = StateCovered
		return st
	}
	tctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	// A stuck read is abandoned; the kernel aborts it when this process exits.
	err := interruptible(tctx, func() (err error) { st.Manifest, err = ReadManifest(m.Point); return err })
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		st.State = StateNotAnswering
	case err != nil || st.Manifest.Server.Pid != st.Pid:
		st.State, st.Manifest = StateDead, nil // a dead connection, or a pid reused
	default:
		st.State = StateServing
	}
	return st
}

// Unmounted says what UnmountDir did.
type Unmounted struct {
	Detached bool   // the mount was busy and is detached: it goes when its last user closes it
	Pid      int    // its server
	State    string // how the server was: a stopped one exits once continued
}

// serverExitTimeout bounds the wait for a server to exit once its mount is gone.
const serverExitTimeout = 10 * time.Second

// UnmountDir removes the vmfs mount at dir, and only it: another mount on top is
// refused (a *fusedisk.CoveredError). vmfs unmounts it itself, so the result is
// what happened; the server sees its mount go and exits, which UnmountDir waits
// for when the server was serving.
func UnmountDir(ctx context.Context, dir string) (Unmounted, error) {
	st, err := Status(ctx, dir)
	if err != nil {
		return Unmounted{}, err
	}
	if st == nil {
		return Unmounted{}, WithKind(ErrMount, fmt.Errorf("%s: not a vmfs mount", dir))
	}
	u := Unmounted{Pid: st.Pid, State: st.State}
	err = fusedisk.Unmount(st.Dir, st.Source, false)
	if errors.Is(err, fusedisk.ErrBusy) {
		err = fusedisk.Unmount(st.Dir, st.Source, true)
		u.Detached = err == nil
	}
	if err != nil {
		return u, WithKind(ErrMount, err)
	}
	if st.State == StateServing && !u.Detached && !proc.WaitExit(st.Pid, serverExitTimeout) {
		return u, WithKind(ErrMount, fmt.Errorf("unmounted %s, but its server %d is still running after %v", st.Dir, st.Pid, serverExitTimeout))
	}
	return u, nil
}
