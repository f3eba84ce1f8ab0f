package vmfs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/internal/qsd"
	"vmfs/qcow2"
)

// stateImage is a VM's writable state file as the VM sees it: a raw file's
// bytes, or a QCOW2 image's virtual disk. A write is in the file when WriteAt
// returns (a killed vmfs loses none); Sync makes the writes durable. It is a
// fusedisk.Writable.
type stateImage interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() int64 // the virtual size: what the VM sees
	// Close syncs and lets go of the engine; the file stays its caller's.
	Close() error
}

// openState opens the state file f, open read-write: a QCOW2 image (by its
// magic) through qemu-storage-daemon running as cred (nil: as vmfs), anything
// else as raw bytes. A QCOW2 image the engine cannot serve without opening
// another file (qcow2.Check) is an ErrInput error naming f.
func openState(f *os.File, cred *syscall.Credential) (stateImage, error) {
	if !qcow2.IsImage(f) {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, WithKind(ErrInput, fmt.Errorf("state file %s: not a regular file", f.Name()))
		}
		return &rawState{f: f, size: st.Size()}, nil
	}
	if err := qcow2.Check(f); err != nil {
		return nil, WithKind(ErrInput, fmt.Errorf("state file %s: %w", f.Name(), err))
	}
	im, err := qsd.Open(f, qsd.Options{Credential: cred})
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", f.Name(), err)
	}
	return im, nil
}

// rawState is a raw state file: its bytes, written in place, never grown.
type rawState struct {
	f    *os.File
	size int64
}

func (r *rawState) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }

func (r *rawState) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("state file %s: %d bytes at %d: past its %d bytes", r.f.Name(), len(p), off, r.size)
	}
	return r.f.WriteAt(p, off)
}

func (r *rawState) Sync() error {
	return os.NewSyscallError("fdatasync", unix.Fdatasync(int(r.f.Fd())))
}

func (r *rawState) Size() int64 { return r.size }

func (r *rawState) Close() error { return r.Sync() }

// heldState is a state file a tree serves while one of its views (the flat
// image, partitions/<label>) is open: the first open takes the file's writer
// lock (lockWriter) and starts its engine (openState), the last release stops
// the engine, syncing, and lets the lock go. So while no view is open vmfs
// holds nothing of the file, no dirty data nor cached QCOW2 tables, and crosvm
// may write it; while crosvm has it, an open fails with EBUSY. It is a
// fusedisk.Holder.
type heldState struct {
	f      *os.File            // the tree's, locked for it (lockState)
	unlock func()              // lets lockState's lock go
	cred   *syscall.Credential // the engine runs as (nil: as vmfs)
	log    *zap.Logger
	mu     sync.Mutex
	users  int        // open views
	im     stateImage // the engine while users > 0
	closed bool       // the tree is gone: no view starts the engine again
}

func (h *heldState) Hold() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("state file %s: its payload is gone: %w", h.f.Name(), os.ErrClosed)
	}
	if h.users == 0 {
		if err := lockWriter(h.f); err != nil {
			return fmt.Errorf("state file %s: %w", h.f.Name(), err)
		}
		im, err := openState(h.f, h.cred)
		if err != nil {
			unlockWriter(h.f)
			return err
		}
		h.im = im
	}
	h.users++
	return nil
}

func (h *heldState) Let() {
	h.mu.Lock()
	defer h.mu.Unlock()
	// A view still open when the tree closed outlives the engine (Close).
	if h.users--; h.users == 0 && h.im != nil {
		h.stop()
	}
}

// stop stops the engine and lets the writer lock go. Callers hold mu.
func (h *heldState) stop() {
	if err := errors.Join(h.im.Close(), unlockWriter(h.f)); err != nil {
		h.log.Error("state file", zap.String("file", h.f.Name()), zap.Error(err))
	}
	h.im = nil
}

// engine is the running engine; nil only when no view is open, when the tree
// reads nothing.
func (h *heldState) engine() (stateImage, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.im == nil {
		return nil, fmt.Errorf("state file %s: no view open", h.f.Name())
	}
	return h.im, nil
}

func (h *heldState) ReadAt(p []byte, off int64) (int, error) {
	im, err := h.engine()
	if err != nil {
		return 0, err
	}
	return im.ReadAt(p, off)
}

func (h *heldState) WriteAt(p []byte, off int64) (int, error) {
	im, err := h.engine()
	if err != nil {
		return 0, err
	}
	return im.WriteAt(p, off)
}

func (h *heldState) Sync() error {
	im, err := h.engine()
	if err != nil {
		return err
	}
	return im.Sync()
}

// Close stops the engine if a view is still open (its later reads and writes
// fail), lets the file's lock go and closes it.
func (h *heldState) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.im != nil {
		h.stop()
	}
	h.closed = true
	h.unlock()
	return h.f.Close()
}
