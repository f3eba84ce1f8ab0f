package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// verdictPrefix starts the console line on which the vmfs test guest
// (cmd/vmfs-guest) reports its checks as JSON.
const verdictPrefix = "VMFS-VERDICT "

type verdict struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Reason string `json:"reason"`
	} `json:"checks"`
}

// verdictWatcher is a console writer that keeps the guest's verdict line.
type verdictWatcher struct {
	mu      sync.Mutex
	line    []byte
	verdict *verdict
	bad     error
}

// maxLine bounds the bytes kept of one console line.
const maxLine = 1 << 20

func (w *verdictWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			if len(w.line)+len(rest) <= maxLine {
				w.line = append(w.line, rest...)
			}
			break
		}
		if len(w.line)+i <= maxLine {
			w.line = append(w.line, rest[:i]...)
		}
		w.parse(strings.TrimRight(string(w.line), "\r"))
		w.line = w.line[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (w *verdictWatcher) parse(line string) {
	i := strings.Index(line, verdictPrefix)
	if i < 0 {
		return
	}
	var v verdict
	if err := json.Unmarshal([]byte(line[i+len(verdictPrefix):]), &v); err != nil {
		w.bad = fmt.Errorf("garbled guest verdict: %w", err)
		return
	}
	w.verdict = &v
}

// ErrNoVerdict: the guest ended without reporting a verdict.
var ErrNoVerdict = errors.New("the guest printed no VMFS-VERDICT line")

// result is nil for a passing verdict, or when none was required and none came.
func (w *verdictWatcher) result(required bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.verdict == nil && w.bad != nil:
		return w.bad
	case w.verdict == nil && required:
		return ErrNoVerdict
	case w.verdict == nil:
		return nil
	case w.verdict.OK:
		return nil
	}
	var failed []string
	for _, c := range w.verdict.Checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Reason)
		}
	}
	return fmt.Errorf("guest verdict: failed: %s", strings.Join(failed, "; "))
}
