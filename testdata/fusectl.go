package testdata

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fusectl is where the kernel's FUSE control filesystem is mounted.
const fusectl = "/sys/fs/fuse/connections"

// WithinOrAbort runs fn, which uses the FUSE mount at mnt, and fails the test if
// fn has not returned after d. A process stuck on a FUSE request that the server
// never answers sits in D state, which no signal ends; WithinOrAbort then aborts
// the mount's connection through fusectl (mounting fusectl if need be), which
// fails every request in flight, so a deadlock fails the test instead of wedging
// the machine. fn must not call t.FailNow: it runs on a goroutine of its own.
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
	if err := abortFUSE(unix.Minor(st.Dev)); err != nil {
		t.Fatalf("abort the connection of %s: %v; the mount stays wedged", mnt, err)
	}
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still stuck after aborting the connection of %s", mnt)
	}
}

// abortFUSE aborts FUSE connection conn (the minor of the mount's st_dev).
func abortFUSE(conn uint32) error {
	abort := fmt.Sprintf("%s/%d/abort", fusectl, conn)
	if _, err := os.Stat(abort); os.IsNotExist(err) {
		if err := syscall.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mount fusectl at %s: %w", fusectl, err)
		}
	}
	return os.WriteFile(abort, []byte("1"), 0)
}
