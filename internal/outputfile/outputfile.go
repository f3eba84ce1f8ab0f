// Package outputfile opens the files vmfs is told to write to (a VM's console, a
// VMM's log) so that the open never blocks: a FIFO with no reader is refused at
// once instead of waited on, and a directory or a block device is refused by what
// it is. Its errors name the path cut by inputfile.Quote.
//
// It owns only that open: the output side of internal/inputfile.
package outputfile

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
)

// Error reports an output file that cannot be opened: its path and why.
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string { return inputfile.Quote(e.Path) + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrNoReader is matched (errors.Is) by the error for a FIFO no one reads: a
// writer would wait for a reader forever.
var ErrNoReader = errors.New("a FIFO with no reader")

// Open opens path for writing without blocking (O_NONBLOCK: opening a FIFO with no
// reader would wait for one). A regular file, made (0644 before the umask) when
// missing, is truncated, and only then, and left blocking; a FIFO with a reader and
// a character device (/dev/null, a terminal) are taken as they are. A FIFO with no
// reader, a socket (which has no open(2)), a directory and a block device are
// refused.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, describe(path, err)
	}
	st, err := f.Stat()
	if err == nil {
		switch m := st.Mode(); {
		case m.IsRegular():
			if err = f.Truncate(0); err == nil {
				err = unix.SetNonblock(int(f.Fd()), false)
			}
		case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0, m.IsDir():
			err = errors.New(inputfile.Kind(m))
		}
	}
	if err != nil {
		f.Close()
		return nil, describe(path, err)
	}
	return f, nil
}

// describe says what path is when that is why it could not be opened.
func describe(path string, err error) error {
	var st unix.Stat_t
	switch {
	case errors.Is(err, unix.ENXIO) && unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO:
		err = ErrNoReader
	case errors.Is(err, unix.ENXIO) && unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		err = errors.New("a socket, which cannot be opened by name")
	case errors.Is(err, unix.EISDIR):
		err = errors.New(inputfile.Kind(fs.ModeDir))
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said once, by Error
	}
	return &Error{Path: path, Err: err}
}
