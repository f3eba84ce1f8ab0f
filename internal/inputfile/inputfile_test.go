package inputfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func TestOpenRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("x"), 0o644)
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "gone"), dangling)
	for _, tc := range []struct{ path, want string }{
		{fifo, "a FIFO (named pipe), not a regular file"},
		{dir, "a directory, not a regular file"},
		{"/dev/null", "a character device, not a regular file"},
		{dangling, "dangling symlink to " + filepath.Join(dir, "gone")},
	} {
		for name, open := range map[string]func(string) error{
			"Open": func(p string) error { f, err := Open(p); f.Close(); return err },
			"Stat": func(p string) error { _, err := Stat(p); return err },
		} {
			done := make(chan error, 1)
			go func() { done <- open(tc.path) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("%s(%s): %v, want an error naming it and saying %q", name, tc.path, err, tc.want)
				}
			case <-time.After(10 * time.Second): // a blocked open(2) on a FIFO never returns
				t.Fatalf("%s(%s) blocked", name, tc.path)
			}
		}
	}
	f, err := Open(regular)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b := make([]byte, 2); func() bool { n, _ := f.Read(b); return n != 1 }() {
		t.Error("a regular file does not read")
	}
	if _, err := Open(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrDangling) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Stat(dangling); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrDangling) {
		t.Errorf("dangling symlink: %v, want both fs.ErrNotExist and ErrDangling", err)
	}
}

// A path read from an input file may be MiBs long; errors repeat it cut.
func TestErrorsCutLongPaths(t *testing.T) {
	long := "/" + strings.Repeat("a", 4<<20)
	for name, open := range map[string]func(string) error{
		"Open": func(p string) error { _, err := Open(p); return err },
		"Stat": func(p string) error { _, err := Stat(p); return err },
	} {
		if err := open(long); err == nil || len(err.Error()) > 400 || !strings.Contains(err.Error(), "4194305 bytes") {
			t.Errorf("%s of a 4 MiB path: %d-byte error %.100q", name, len(fmt.Sprint(err)), fmt.Sprint(err))
		}
	}
}

func TestQuoteCutsLongStrings(t *testing.T) {
	long := strings.Repeat("a", 4<<20)
	if q := Quote(long); len(q) > 300 || !strings.Contains(q, "4194304 bytes") {
		t.Errorf("Quote of 4 MiB: %d bytes: %.80q", len(q), q)
	}
	if q := Quote(strings.Repeat("é", 200)); !utf8.ValidString(q) {
		t.Errorf("Quote cut a character in half: %q", q)
	}
	if Quote("short") != "short" {
		t.Error("a short string changed")
	}
}

// TestQuoteEscapes: a name with a newline, an escape sequence or a C1 control
// comes out on one line with no control byte, and says what it holds; a long
// one is cut as well.
func TestQuoteEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"a\n\x1b[31mforged 10.apk": `"a\n\x1b[31mforged 10.apk"`,
		"csi\u009b31m":             `"csi\u009b31m"`,
		"bad\xffutf8":              `"bad\xffutf8"`,
		"/tmp/plain name.apk":      "/tmp/plain name.apk",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	long := Quote(strings.Repeat("\x1b", 4<<10))
	if !strings.HasPrefix(long, `"\x1b`) || !strings.HasSuffix(long, "…(4096 bytes)") || strings.ContainsRune(long, 0x1b) {
		t.Errorf("Quote of 4 KiB of ESC: %.80s", long)
	}
}
