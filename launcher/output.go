package launcher

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// outputDrainLimit bounds the wait, once the VMM's group is gone, for its output
// to be read to the end: a process that left the group may hold a pipe open, and
// a writer may block.
const outputDrainLimit = time.Second

// outputs are the pipes a VMM writes its stdout and stderr to, and the
// goroutines that copy them to RunOptions' writers. The VMM holds only pipe ends
// of the launcher's, never a caller's file, so exec.Cmd.Wait waits for no copy:
// however a writer behaves, the VMM is reaped once it exits.
type outputs struct {
	list  []output
	child []*os.File    // the VMM's ends, closed here once it has started
	done  chan struct{} // closed when every copy has ended
}

type output struct {
	name string
	r    *os.File
	w    io.Writer
}

// pipe returns the VMM's end of a new pipe whose contents go to w, or nil (the
// VMM gets /dev/null) when w is nil.
func (o *outputs) pipe(name string, w io.Writer) (io.Writer, error) {
	if w == nil {
		return nil, nil
	}
	r, cw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("vmm %s: %w", name, err)
	}
	o.list = append(o.list, output{name: name, r: r, w: w})
	o.child = append(o.child, cw)
	return cw, nil
}

// closeChild closes the VMM's ends: from then on, the pipes end when the VMM
// and whatever inherited them have closed theirs.
func (o *outputs) closeChild() {
	for _, f := range o.child {
		f.Close()
	}
}

// copy starts a goroutine per pipe.
func (o *outputs) copy(log *zap.Logger) {
	o.done = make(chan struct{})
	var wg sync.WaitGroup
	for _, out := range o.list {
		wg.Go(func() { out.copy(log) })
	}
	go func() { wg.Wait(); close(o.done) }()
}

// copy reads the pipe to its end, writing what it reads to w until w fails; it
// reads on after that, so the VMM never blocks on a full pipe.
func (out output) copy(log *zap.Logger) {
	buf := make([]byte, 32<<10)
	failed := false
	for {
		n, err := out.r.Read(buf)
		if n > 0 && !failed {
			if _, werr := out.w.Write(buf[:n]); werr != nil {
				failed = true
				log.Warn("vmm output: its writer failed; dropping the rest", zap.String("output", out.name), zap.Error(werr))
			}
		}
		if err != nil {
			return
		}
	}
}

// drain waits, within outputDrainLimit, for the copies to reach the end of the
// pipes, then closes the launcher's ends, ending any copy still reading. A copy
// blocked in a writer's Write is left to it.
func (o *outputs) drain(log *zap.Logger) {
	if o.done != nil {
		t := time.NewTimer(outputDrainLimit)
		select {
		case <-o.done:
		case <-t.C:
			log.Warn("vmm output not read to its end: a process outside the vmm's group holds it, or a writer blocks; abandoning it", zap.Duration("waited", outputDrainLimit))
		}
		t.Stop()
	}
	o.closeReaders()
}

func (o *outputs) closeReaders() {
	for _, out := range o.list {
		out.r.Close()
	}
}
