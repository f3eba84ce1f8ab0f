// Package inputfile opens and stats the files vmfs is handed (APK, idsig, APEXes,
// apex-info-list, OS configs, kernels) so that nothing blocks on them: a FIFO, a
// device, a socket or a directory is refused with what it is, and a dangling
// symlink is named as one instead of "not found". Their errors name the path cut,
// and escaped where it holds control characters, by Quote.
//
// It owns only that check, and closing such files (CloseAll). It reads no
// formats and knows no layouts.
package inputfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// NotRegularError reports an input that is not a regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s: %s, not a regular file", Quote(e.Path), Kind(e.Mode))
}

// Kind names the file type of m for people.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "not a regular file"
}

// Open opens path read-only without blocking (O_NONBLOCK: opening a FIFO with no
// writer would wait for one forever) and refuses anything but a regular file.
// Symlinks are followed; the returned file is the one checked, so a swap after the
// check cannot slip a FIFO in.
func Open(path string) (*os.File, error) { return OpenFile(path, os.O_RDONLY) }

// OpenFile is Open with flag's access mode (os.O_RDONLY or os.O_RDWR: a
// writable disk).
func OpenFile(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, describe(path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, describe(path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &NotRegularError{Path: path, Mode: st.Mode()}
	}
	// O_NONBLOCK means nothing to a regular file's reads; clear it all the same.
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fcntl", Path: Quote(path), Err: err}
	}
	return f, nil
}

// Stat returns the FileInfo of path (symlinks followed) when it is a regular file.
func Stat(path string) (os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, describe(path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: st.Mode()}
	}
	return st, nil
}

// ErrDangling is matched (errors.Is) by the error for a symlink whose target does not
// exist, which also matches fs.ErrNotExist: a caller that passes over missing files
// can still name a broken link.
var ErrDangling = errors.New("dangling symlink")

// describe names a dangling symlink as such, and cuts the path in the error with
// Quote: a path read from an input file (an apex-info-list modulePath) may be MiBs.
func describe(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if target, lerr := os.Readlink(path); lerr == nil {
			err = &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w to %s: %w", ErrDangling, Quote(target), fs.ErrNotExist)}
		}
	}
	if pe, ok := err.(*os.PathError); ok {
		return &os.PathError{Op: pe.Op, Path: Quote(pe.Path), Err: pe.Err}
	}
	return err
}

// maxQuoted bounds a path or name echoed in a message: a hostile input may be MiBs.
const maxQuoted = 256

// Quote returns s, a path or name a user gave, for a message: cut to maxQuoted
// bytes with the length said when longer, and in Go's quoted form ("a\n\x1b[31m")
// when it holds anything but printable characters, so that it can neither flood
// a message nor forge a line, or a colour, where it is shown.
func Quote(s string) string {
	text, more := cut(s, maxQuoted)
	if !printable(text) {
		text = strconv.Quote(text)
	}
	return text + more
}

// Cut returns s cut to at most n bytes, never in a character, with its length
// said when longer.
func Cut(s string, n int) string {
	text, more := cut(s, n)
	return text + more
}

func cut(s string, n int) (text, more string) {
	if len(s) <= n {
		return s, ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) { // never half a character
		n--
	}
	return s[:n], fmt.Sprintf("…(%d bytes)", len(s))
}

func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// CloseAll closes the files that are not nil.
func CloseAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
