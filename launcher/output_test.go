package launcher

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"vmfs/internal/outlet"
	"vmfs/internal/proc"
	"vmfs/testdata"
)

// TestStopWithStuckWriter: a writer that never returns (a pipe nobody reads,
// written as is) stalls the VMM's output but not its supervision: Stop ends the
// VMM, and Stop and Wait return.
func TestStopWithStuckWriter(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	// Hidden behind another type, the pipe is a writer, as a client's file wrapped
	// for the console is: a *os.File would go to the VMM as it is.
	stuck := struct{ io.Writer }{unreadPipe(t)}
	r, w := io.Pipe()
	vm := startVM(t, context.Background(), sh, []string{"-c", "echo ready >&2; while :; do echo console console console console; done"},
		RunOptions{Stdout: stuck, Stderr: w})
	if line, err := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		t.Fatalf("read vmm stderr: %q, %v; want ready", line, err)
	}
	go io.Copy(io.Discard, r)
	// The shell only sleeps once its write blocks: the copy is stuck in the writer.
	if !testdata.Eventually(t, time.Minute, func() bool { return proc.State(vm.Pid()) == 'S' }) {
		t.Fatalf("vmm %d never blocked writing its output", vm.Pid())
	}
	within(t, time.Minute, "Stop", func() {
		if err := vm.Stop(100 * time.Millisecond); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	want := &ExitError{Path: sh, Code: -1, Signal: syscall.SIGTERM}
	if err := wait(t, vm); !reflect.DeepEqual(err, want) {
		t.Errorf("Wait = %v, want %v", err, want)
	}
	if !groupGone(vm.Pid()) {
		t.Errorf("process group %d still has members after Stop", vm.Pid())
	}
}

// counter is an in-memory writer, as the verdict watcher is: it counts the bytes
// and keeps the last line.
type counter struct {
	mu   sync.Mutex
	n    int
	tail []byte
}

func (c *counter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += len(p)
	c.tail = append(c.tail, p...)
	if len(c.tail) > 64 {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-64:]...)
	}
	return len(p), nil
}

// TestOutputToUnreadDestinations: a console that goes to a destination nobody
// reads (a FIFO, a socket, a write that never returns) through an outlet and to
// an in-memory watcher beside it neither stalls the VMM nor starves the watcher:
// the VMM writes its 4 MiB and exits on its own, and the watcher has every byte,
// the last line included, when Wait returns.
func TestOutputToUnreadDestinations(t *testing.T) {
	sh := testdata.RequireTool(t, "sh")
	testdata.RequireTool(t, "dd")
	const size = 4 << 20
	script := "dd if=/dev/zero bs=64k count=64 2>/dev/null; echo verdict: the end"
	for _, tc := range []struct {
		name string
		dest func(t *testing.T) io.Writer
	}{
		{"fifo", func(t *testing.T) io.Writer { return unreadFIFO(t) }},
		{"socket", func(t *testing.T) io.Writer { return unreadSocket(t) }},
		{"blocked writer", func(t *testing.T) io.Writer { return struct{ io.Writer }{unreadPipe(t)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			console := outlet.New(tc.dest(t), outlet.Options{Stall: 50 * time.Millisecond, Logger: zaptest.NewLogger(t)})
			watch := &counter{}
			vm := startVM(t, context.Background(), sh, []string{"-c", script}, RunOptions{Stdout: io.MultiWriter(console, watch)})
			if err := wait(t, vm); err != nil {
				t.Errorf("Wait = %v, want the vmm's own exit 0", err)
			}
			within(t, time.Minute, "outlet Close", console.Close)
			watch.mu.Lock()
			defer watch.mu.Unlock()
			if want := size + len("verdict: the end\n"); watch.n != want || !bytes.HasSuffix(watch.tail, []byte("verdict: the end\n")) {
				t.Errorf("watcher got %d bytes ending %q, want %d ending with the verdict line", watch.n, watch.tail, want)
			}
			if console.Dropped() == 0 {
				t.Error("the unread destination dropped nothing: it took 4 MiB?")
			}
		})
	}
}
