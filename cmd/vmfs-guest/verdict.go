package main

import (
	"errors"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"vmfs/verdict"
)

// This file is shared by the guest (which prints the verdict) and boot_test.go (which
// parses it from the serial console).

// check is one verdict entry; the line format lives in package verdict.
type check = verdict.Check

// newCheck records the outcome of one step: reason on success, the error otherwise.
func newCheck(name, reason string, err error) check {
	if err == nil {
		return check{Name: name, OK: true, Reason: reason}
	}
	c := check{Name: name, Reason: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		c.Errno = unix.ErrnoName(errno)
	}
	return c
}

// report collects checks and writes the verdict exactly once, whichever of the main
// flow, a recovered panic and the watchdog gets there first.
type report struct {
	mu      sync.Mutex
	checks  []check
	profile string
	state   []func(*verdict.Verdict) // fill in the state partitions' reports
	done    bool
}

// setState records set, which fills in a state partition's report.
func (r *report) setState(set func(*verdict.Verdict)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = append(r.state, set)
}

// setProfile records the profile (or profiles) the disk is from.
func (r *report) setProfile(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.profile = p
}

// add records c and reports whether it passed.
func (r *report) add(c check) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		r.checks = append(r.checks, c)
	}
	return c.OK
}

// step runs fn as check name.
func (r *report) step(name string, fn func() (string, error)) bool {
	reason, err := fn()
	return r.add(newCheck(name, reason, err))
}

// finish writes the verdict line to w unless it was written already. A verdict with no
// checks is a failure: the agent did not get anywhere.
func (r *report) finish(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	r.done = true
	v := verdict.Verdict{OK: len(r.checks) > 0, Checks: r.checks, Profile: r.profile}
	for _, set := range r.state {
		set(&v)
	}
	for _, c := range r.checks {
		v.OK = v.OK && c.OK
	}
	line, err := v.Line()
	if err != nil {
		return err
	}
	// One write, so the line is not split by other console output.
	_, err = io.WriteString(w, line)
	return err
}
