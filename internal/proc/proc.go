// Package proc answers two questions about another process without blocking or
// signalling it: what state it is in, and when it has exited. It owns only that.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// State is the state letter of process pid from /proc (R, S, D, T, t, Z, ...), or
// 0 when there is no such process.
func State(pid int) byte {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// pid (comm) state ...: comm may hold spaces and parentheses; cut at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if err != nil || i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// WaitExit waits up to d for process pid to exit, and reports whether it did. It
// waits on a pidfd, so it sees the exit itself, not a guess at its time.
func WaitExit(pid int, d time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for deadline := time.Now().Add(d); ; {
		n, err := unix.Poll(fds, int(max(0, time.Until(deadline).Milliseconds())))
		if err == unix.EINTR {
			continue
		}
		return n > 0
	}
}
