package launcher

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"vmfs/internal/inputfile"
	"vmfs/metadata"

	"golang.org/x/sys/unix"
)

// Inherited is a set of open files a VMM inherits as descriptors, so that it
// needs no right to their paths: a service opens a client's files, or has them
// sent, and the VMM, running as the client (RunOptions.Credential), opens them
// again by the names Path gives, /proc/self/fd/N with N = 3 + the file's place
// in the set (exec.Cmd.ExtraFiles). The kernel then checks the file's own
// permissions for the VMM's user, and not those of the directories above it.
// The zero value is an empty set; name every file before starting the VMM.
type Inherited struct{ files []*os.File }

// fdPrefix is where a process finds its own descriptors.
const fdPrefix = "/proc/self/fd/"

// Path adds f to the set, unless it is in already, and returns the path by
// which the VMM opens it.
func (h *Inherited) Path(f *os.File) string {
	i := slices.Index(h.files, f)
	if i < 0 {
		i = len(h.files)
		h.files = append(h.files, f)
	}
	return fdPrefix + strconv.Itoa(3+i)
}

// file returns the file of the set that path names, or nil: here, unlike in
// the VMM, /proc/self/fd/N is some other file.
func (h Inherited) file(path string) *os.File {
	n, ok := strings.CutPrefix(path, fdPrefix)
	if !ok {
		return nil
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 3 || i-3 >= len(h.files) || strconv.Itoa(i) != n {
		return nil
	}
	return h.files[i-3]
}

// stat is inputfile.Stat for a path of the set: the file it holds must be a
// regular file, and errors name it by its own name.
func (h Inherited) stat(path string) error {
	f := h.file(path)
	if f == nil {
		_, err := inputfile.Stat(path)
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return &inputfile.NotRegularError{Path: f.Name(), Mode: st.Mode()}
	}
	return nil
}

// maxInMemory bounds a kernel, initrd or bootloader that inMemory copies.
const maxInMemory = 1 << 30

// inMemory is cfg with its kernel, initrd and bootloader, where they are files
// of h, replaced by sealed copies in memory (memfds) added to h, for QEMU:
// it reopens those by path, and Landlock, which confines a VMM its confined
// parent starts, checks a reopen through /proc/self/fd/N against the file's
// own path, but a memfd has none. The copies are returned to be closed once
// the VMM has exited.
func (h *Inherited) inMemory(cfg *metadata.VMConfig) (*metadata.VMConfig, []*os.File, error) {
	out := *cfg
	var copies []*os.File
	h.files = slices.Clip(h.files) // the caller's set stays as it was
	for _, b := range []struct {
		what string
		path *string
	}{{"kernel", &out.Kernel}, {"initrd", &out.Initrd}, {"bootloader", &out.Bootloader}} {
		f := h.file(*b.path)
		if f == nil {
			continue
		}
		m, err := memCopy(b.what, f)
		if err != nil {
			inputfile.CloseAll(copies...)
			return nil, nil, err
		}
		copies = append(copies, m)
		*b.path = h.Path(m)
	}
	return &out, copies, nil
}

// memCopy copies f, the VM's what, into a sealed memfd, reading it at offsets
// so that the offset f shares with whoever opened it stays as it was.
func memCopy(what string, f *os.File) (*os.File, error) {
	tooLarge := fmt.Errorf("%w: %s %s: larger than %d MiB, the most QEMU is handed", ErrConfig, what, f.Name(), maxInMemory>>20)
	if st, err := f.Stat(); err == nil && st.Size() > maxInMemory {
		return nil, tooLarge
	}
	fd, err := unix.MemfdCreate("vmfs "+what, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%s %s: a copy in memory: %w", what, f.Name(), os.NewSyscallError("memfd_create", err))
	}
	m := os.NewFile(uintptr(fd), what)
	n, err := io.Copy(m, io.NewSectionReader(f, 0, maxInMemory+1))
	switch {
	case err != nil:
		err = fmt.Errorf("%s %s: a copy in memory: %w", what, f.Name(), err)
	case n > maxInMemory:
		err = tooLarge // it grew
	default:
		_, err = unix.FcntlInt(m.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
		err = os.NewSyscallError("seal the copy of the "+what, err)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
