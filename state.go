package vmfs

import (
	"fmt"
	"os"
	"syscall"

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
// magic) through qemu-storage-daemon, anything else as raw bytes. A QCOW2 image
// the engine cannot serve without opening another file (qcow2.Check) is an
// ErrInput error naming f.
func openState(f *os.File) (stateImage, error) { return openStateAs(f, nil) }

// openStateAs is openState running the engine as cred (nil: as vmfs).
func openStateAs(f *os.File, cred *syscall.Credential) (stateImage, error) {
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
