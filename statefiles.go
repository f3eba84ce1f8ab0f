package vmfs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/launcher"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/qcow2"
)

// DefaultStateSize is the size `vm run-app` makes a missing instance image at, and
// storage unless --storage-size says otherwise: 10 MiB.
const DefaultStateSize = 10 << 20

// InstanceIDSize is the length of an instance ID (`vm run-app --instance-id-file`,
// Android 15): 64 bytes, as virtualizationservice's allocateInstanceId makes them.
const InstanceIDSize = 64

// StateFile is a VM's writable state file (an instance image, encrypted storage)
// and the partition it becomes: its virtual content, written by the VM.
type StateFile struct {
	Label string // vm-instance or encryptedstore
	// Path is where the layout finds the file: its absolute path, or for a file
	// the caller opened (Files.Instance, Files.Storage) the descriptor's key.
	Path   string
	Name   string                 // the file's absolute path as its user named it, for people
	Type   metadata.PartitionType // what a missing one is made as
	Size   int64                  // the partition's size: the image's virtual size
	Format metadata.ImageFormat   // QCOW2Image or RawImage, as the file is
	create int64                  // the size to make a missing one at
	f      *os.File               // the file the caller opened, or nil
}

// stateFiles are the state files spec names, checked against its profile: the
// instance image from android13, storage from android14 (with an instance image),
// in partition order.
func (s Spec) stateFiles() ([]StateFile, error) {
	prof := s.Profile
	switch {
	case prof.State() == metadata.NoState && s.Instance != "":
		return nil, WithKind(ErrArgument, fmt.Errorf("%s: `vm run-app` of Android 12 takes no instance image", prof))
	case !prof.Storage() && s.Storage != "":
		return nil, WithKind(ErrArgument, fmt.Errorf("%s: `vm run-app` takes --storage from Android 14", prof))
	case s.Storage != "" && s.Instance == "":
		return nil, WithKind(ErrArgument, errors.New("storage without an instance image"))
	case s.Storage == "" && s.StorageSize != 0:
		return nil, WithKind(ErrArgument, errors.New("a storage size without storage (--storage)"))
	case !prof.InstanceID() && s.InstanceIDFile != "":
		return nil, WithKind(ErrArgument, fmt.Errorf("%s: `vm run-app` takes --instance-id-file from Android 15", prof))
	case s.StorageSize < 0:
		return nil, WithKind(ErrArgument, fmt.Errorf("storage size %d: want at least 1 byte", s.StorageSize))
	}
	var out []StateFile
	if s.Instance != "" {
		out = append(out, StateFile{Label: metadata.InstanceLabel, Path: s.Instance, Type: metadata.InstancePartition, create: DefaultStateSize})
	}
	if s.Storage != "" {
		out = append(out, StateFile{Label: metadata.StorageLabel, Path: s.Storage, Type: metadata.EncryptedStorePartition, create: orDefault(s.StorageSize, DefaultStateSize)})
	}
	for i := range out {
		abs, err := filepath.Abs(out[i].Path)
		if err != nil {
			return nil, err
		}
		out[i].Path, out[i].Name = abs, abs
		if s.Files == nil {
			continue
		}
		if out[i].f = s.Files.Instance; out[i].Label == metadata.StorageLabel {
			out[i].f = s.Files.Storage
		}
		if out[i].f == nil {
			return nil, fmt.Errorf("%s %s: not among the files handed over open (Spec.Files)", out[i].kind(), inputfile.Quote(abs))
		}
		out[i].Path = openedKey(out[i].f)
	}
	return out, nil
}

// orDefault is n, or def when n is 0.
func orDefault(n, def int64) int64 {
	if n == 0 {
		return def
	}
	return n
}

// CreatedState is what PrepareState made: files to remove when the run they were
// made for never starts, as nothing is left behind by a run that fails.
type CreatedState struct{ made map[string]os.FileInfo }

// Remove removes the files made, each only if it is still the file made.
func (c *CreatedState) Remove() {
	for path, st := range c.made {
		removeOwn(path, st)
	}
	c.made = nil
}

// add records path as made.
func (c *CreatedState) add(path string) {
	if st, err := os.Lstat(path); err == nil {
		c.made[path] = st
	}
}

// PrepareState makes the state files spec names that are missing, as `vm run-app`
// does before it starts the VM: the instance image at 10 MiB, storage at
// spec.StorageSize, in the profile's format (CreatePartition), and at android15 an
// instance ID file of 64 random bytes. An existing file is used as it is (an
// instance ID file must hold an ID). AVF leaves
// what it made when the VM then fails to start; vmfs's callers remove it
// (CreatedState.Remove), so that a failed run leaves nothing behind.
func PrepareState(spec Spec) (*CreatedState, error) {
	files, err := spec.stateFiles()
	if err != nil {
		return nil, err
	}
	c := &CreatedState{made: map[string]os.FileInfo{}}
	for _, f := range files {
		if _, err := os.Lstat(f.Path); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := CreatePartition(f.Path, PartitionSpec{Size: f.create, Type: f.Type, Profile: spec.Profile}); err != nil {
			c.Remove()
			return nil, err
		}
		c.add(f.Path)
	}
	if spec.InstanceIDFile != "" {
		made, err := createInstanceID(spec.InstanceIDFile)
		if err == nil && !made {
			err = checkInstanceID(spec.InstanceIDFile)
		}
		if err != nil {
			c.Remove()
			return nil, err
		}
		if made {
			c.add(spec.InstanceIDFile)
		}
	}
	return c, nil
}

// createInstanceID writes a new instance ID to path unless a file is there, as
// `vm run-app --instance-id-file` does; made says whether it did.
func createInstanceID(path string) (made bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, WithKind(ErrInput, fmt.Errorf("instance id file %s: %w", inputfile.Quote(path), pathless(err)))
	}
	id := make([]byte, InstanceIDSize)
	rand.Read(id)
	_, err = f.Write(id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return false, WithKind(ErrInput, fmt.Errorf("instance id file %s: %w", inputfile.Quote(path), pathless(err)))
	}
	return true, nil
}

// checkInstanceID checks that the file at path holds an instance ID: 64 bytes
// at least, as `vm` reads them.
func checkInstanceID(path string) error {
	f, err := inputfile.Open(path)
	if err != nil {
		return &metadata.InputError{Kind: "instance id file", Err: err}
	}
	defer f.Close()
	id := make([]byte, InstanceIDSize)
	if n, err := f.ReadAt(id, 0); n < len(id) {
		return WithKind(ErrInput, fmt.Errorf("instance id file %s: %d bytes, want %d (%v)", inputfile.Quote(path), n, InstanceIDSize, err))
	}
	return nil
}

// readState reads what a state file holds: its format and virtual size. A missing
// one (inspect) is laid out at the size it would be made at.
func (s *StateFile) read(prof metadata.Profile) error {
	f := s.f
	if f == nil {
		var err error
		f, err = inputfile.Open(s.Path)
		if errors.Is(err, fs.ErrNotExist) {
			s.Format, s.Size = prof.PartitionImage(), prof.PartitionSize(s.create)
			return nil
		}
		if err != nil {
			return &metadata.InputError{Kind: s.kind(), Err: err}
		}
		defer f.Close()
	}
	size, isQCOW2, err := virtualSize(f)
	switch {
	case err != nil:
		return fmt.Errorf("%s %s: %w", s.kind(), inputfile.Quote(s.Name), err)
	case isQCOW2:
		s.Format, s.Size = metadata.QCOW2Image, size
	default:
		s.Format, s.Size = metadata.RawImage, size
	}
	if s.Size == 0 || s.Size%layout.PartitionAlign != 0 {
		return fmt.Errorf("%s %s: a virtual size of %d bytes, not a multiple of 4096: a GPT partition is laid out in 4 KiB units (vmfs create-partition rounds up)",
			s.kind(), inputfile.Quote(s.Name), s.Size)
	}
	return nil
}

// virtualSize is the size of the state file f as the VM sees it: a QCOW2
// image's virtual size (the image checked as openState checks it), a raw file's
// size.
func virtualSize(f *os.File) (size int64, isQCOW2 bool, err error) {
	size, isQCOW2, err = qcow2.VirtualSize(f)
	if err == nil && isQCOW2 {
		err = qcow2.Check(f)
	}
	if err != nil || isQCOW2 {
		return size, isQCOW2, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	return st.Size(), false, nil
}

// kind names the state file for people.
func (s *StateFile) kind() string {
	if s.Type == metadata.InstancePartition {
		return "instance image"
	}
	return "storage"
}

// part is the partition the state file becomes.
func (s *StateFile) part() layout.FilePart {
	return layout.FilePart{Label: s.Label, Source: layout.Source{Path: s.Path, Size: s.Size}, Writable: true}
}

// stateLockByte is the byte of a state file locked (F_OFD_SETLK) while a mount or
// VM uses it. QEMU's image locks take bytes 100 and up and 200 and up, so this lock
// leaves qemu-img, qemu-io and the write engine (qemu-storage-daemon) alone.
const stateLockByte = 0

// lockState locks f, a state file, for one tree (a mount and the VMs booting
// it) until unlock or until its last descriptor closes; a file another one
// holds is refused. An OFD lock belongs to an open file description, which a
// caller that hands files over (a service's client) may send twice: so a file
// this process holds through another tree is refused too.
func lockState(f *os.File) (unlock func(), err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	id := fileID{st.Dev, st.Ino}
	heldStates.Lock()
	defer heldStates.Unlock()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: stateLockByte, Len: 1}
	err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if heldStates.m[id] || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return nil, errors.New("in use by another vmfs VM or mount (one at a time writes it)")
	}
	if err != nil {
		return nil, err
	}
	heldStates.m[id] = true
	return func() {
		heldStates.Lock()
		defer heldStates.Unlock()
		delete(heldStates.m, id)
		lk.Type = unix.F_UNLCK
		unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	}, nil
}

// stateWriterByte is the byte of a state file locked (F_OFD_SETLK) by whoever
// writes it at the moment: a mount while one of its views of the file (the flat
// image, partitions/<label>) is open, or crosvm, which opens the file itself,
// for as long as it runs (lockForCrosvm).
const stateWriterByte = 1

// errWriting is a state file's writer lock held by another writer.
var errWriting = fmt.Errorf("written by another program (crosvm, or a view of a vmfs mount): %w", unix.EBUSY)

// lockWriter takes f's writer lock; a lock another one holds is errWriting.
func lockWriter(f *os.File) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: stateWriterByte, Len: 1}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return errWriting
	}
	return os.NewSyscallError("fcntl", err)
}

// unlockWriter lets f's writer lock go.
func unlockWriter(f *os.File) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Start: stateWriterByte, Len: 1}
	return os.NewSyscallError("fcntl", unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk))
}

// releaseWait bounds how long lockForCrosvm waits for a mount to let a state
// file go: the kernel tells a mount of a view's last close (FUSE release) just
// after close(2) returns, not before.
const releaseWait = 2 * time.Second

// lockForCrosvm takes the writer lock of every state file that a composite disk
// of vm, made by a vmfs mount (a key of flat), names read-write: crosvm opens
// those files itself, so no view of a mount may write them while it runs. The
// locks are on the files returned, which crosvm inherits (files), so that they
// last as long as it runs, whoever launched it; the caller closes its copies
// once it has started. A file open through a view of a mount is an ErrInput
// error naming it.
func lockForCrosvm(ctx context.Context, vm *metadata.VMConfig, flat map[string]string, files *launcher.Inherited) (locked []*os.File, err error) {
	defer func() {
		if err != nil {
			inputfile.CloseAll(locked...)
			locked = nil
		}
	}()
	for _, d := range vm.Disks {
		if _, ok := flat[d.Image]; !ok {
			continue
		}
		b, err := os.ReadFile(d.Image)
		if err != nil {
			return locked, err
		}
		c, err := layout.ParseComposite(b)
		if err != nil {
			return locked, fmt.Errorf("%s: %w", d.Image, err)
		}
		for _, comp := range c.Components {
			if !comp.Writable {
				continue
			}
			f, err := inputfile.OpenFile(comp.Path, os.O_RDWR)
			if err != nil {
				return locked, &metadata.InputError{Kind: "state file", Err: err}
			}
			locked = append(locked, f)
			if err := waitWriter(ctx, f); err != nil {
				return locked, WithKind(ErrInput, fmt.Errorf("state file %s: %w; crosvm writes it itself, so close it there first", inputfile.Quote(comp.Path), err))
			}
			files.Path(f)
		}
	}
	return locked, nil
}

// waitWriter takes f's writer lock, waiting up to releaseWait for a mount to
// let it go.
func waitWriter(ctx context.Context, f *os.File) error {
	deadline := time.Now().Add(releaseWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := lockWriter(f)
		if !errors.Is(err, errWriting) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// fileID names a file: its device and inode.
type fileID struct{ dev, ino uint64 }

// heldStates are the state files this process's trees hold.
var heldStates = struct {
	sync.Mutex
	m map[fileID]bool
}{m: map[fileID]bool{}}
