package testdata

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/internal/fusectl"
)

// WithinOrAbort runs fn, which uses the FUSE mount at mnt, and fails the test if
// fn has not returned after d. A process stuck on a FUSE request that the server
// never answers sits in D state, which no signal ends; WithinOrAbort then aborts
// the mount's connection through fusectl, which fails every request in flight,
// so a deadlock fails the test instead of wedging the machine. fn must not call
// t.FailNow: it runs on a goroutine of its own.
func WithinOrAbort(t testing.TB, mnt string, d time.Duration, fn func()) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	t.Errorf("still waiting on the FUSE mount %s after %v: aborting its connection", mnt, d)
	if err := fusectl.Abort(unix.Minor(st.Dev)); err != nil {
		t.Fatalf("abort the connection of %s: %v; the mount stays wedged", mnt, err)
	}
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still stuck after aborting the connection of %s", mnt)
	}
}
