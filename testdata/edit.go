package testdata

import (
	"os"

	"golang.org/x/sys/unix"
)

// Edits change a file in place, as a test of vmfs's change guard needs: through
// write(2), which inotify reports, and through a shared mapping, which it does not
// (only the file's mtime tells).
var Edits = map[string]func(path string) error{
	"pwrite": func(path string) error {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt([]byte("XXXX"), 100)
		return err
	},
	"mmap": func(path string) error {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		b[100] ^= 0xff
		return unix.Munmap(b)
	},
}

// Invert rewrites the file at path in place, same size, every byte inverted,
// and returns its new content.
func Invert(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for i := range b {
		b[i] ^= 0xff
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}
