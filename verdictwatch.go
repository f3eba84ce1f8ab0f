package vmfs

import (
	"bytes"
	"errors"
	"strings"
	"sync"

	"vmfs/verdict"
)

// verdictWatcher is a console writer that keeps the verdict line the vmfs test
// guest prints.
type verdictWatcher struct {
	mu      sync.Mutex
	line    []byte
	verdict *verdict.Verdict
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
		if v, err := verdict.Parse(string(w.line)); err != nil {
			w.bad = err
		} else if v != nil {
			w.verdict = v
		}
		w.line = w.line[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

// ErrNoVerdict: the guest ended without reporting a verdict.
var ErrNoVerdict = errors.New("the guest printed no " + strings.TrimSpace(verdict.Prefix) + " line")

// result is nil for a passing verdict, or when none was required and none came.
func (w *verdictWatcher) result(required bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.verdict == nil && w.bad != nil:
		return w.bad
	case w.verdict == nil && required:
		return ErrNoVerdict
	case w.verdict == nil || w.verdict.OK:
		return nil
	}
	return errors.New("guest verdict: failed: " + strings.Join(w.verdict.Failed(), "; "))
}
