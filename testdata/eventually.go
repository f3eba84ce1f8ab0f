package testdata

import (
	"testing"
	"time"
)

// Eventually checks cond until it holds, for at most d, and reports whether it
// did. It is for conditions the kernel brings about asynchronously with no event
// to wait on (an inotify event acted on, a page cache dropped, released handles):
// the test waits for the condition itself, never for a guessed time.
func Eventually(t testing.TB, d time.Duration, cond func() bool) bool {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return cond()
		}
	}
	return true
}
