package fusedisk

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// TestChangeNoticedByRead: when a read is the first to notice that a source
// changed, it and later reads fail with EIO, at once. The kernel's cached pages
// used to be dropped from inside that read, and the kernel waits for the page
// locks the read holds: a deadlock only aborting the connection ends. Two APEX
// names lead to one file here, which inotify watches once: the guard must cover
// both names with it.
func TestChangeNoticedByRead(t *testing.T) {
	for name, edit := range testdata.Edits {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			apex, apk, idsig := filepath.Join(dir, "a.apex"), filepath.Join(dir, "app.apk"), filepath.Join(dir, "app.apk.idsig")
			writeRandom(t, apex, 9000, 1)
			writeRandom(t, apk, 70000, 2)
			writeRandom(t, idsig, 3000, 3)
			d, err := layout.PayloadDisk(layout.PayloadParts{
				Metadata: []byte("\x00\x00\x00\x03abc"),
				Apexes:   []layout.Source{{Path: apex, Size: 9000}, {Path: apex, Size: 9000}},
				APK:      layout.Source{Path: apk, Size: 70000},
				Idsig:    layout.Source{Path: idsig, Size: 3000},
			}, layout.Options{})
			if err != nil {
				t.Fatal(err)
			}
			errs, logs := observer.New(zap.ErrorLevel)
			s := mount(t, d, TreeOptions{Logger: zap.New(errs)})
			if err := edit(apex); err != nil {
				t.Fatal(err)
			}
			testdata.WithinOrAbort(t, s.Mountpoint, 10*time.Second, func() {
				for _, f := range []string{"partitions/" + metadata.ApexLabel(0), "partitions/" + metadata.ApexLabel(1), "payload.img"} {
					if _, err := os.ReadFile(filepath.Join(s.Mountpoint, f)); !errors.Is(err, syscall.EIO) {
						t.Errorf("%s after the change: %v, want EIO", f, err)
					}
				}
			})
			if n := logs.FilterField(zap.String("file", apex)).Len(); n != 1 {
				t.Errorf("%d errors logged naming %s, want 1 (one source per file)", n, apex)
			}
		})
	}
}

// TestSourceOpenErrors: a source that cannot be served fails OpenSources at once
// with a *SourceError naming it, whatever took its place after the layout was
// made. A FIFO must not block: opening one for reading waits for a writer.
func TestSourceOpenErrors(t *testing.T) {
	var notRegular *inputfile.NotRegularError
	for name, tc := range map[string]struct {
		swap func(path string) error
		want func(error) bool
	}{
		"fifo": {
			func(path string) error { os.Remove(path); return unix.Mkfifo(path, 0o644) },
			func(err error) bool { return errors.As(err, &notRegular) },
		},
		"directory": {
			func(path string) error { os.Remove(path); return os.Mkdir(path, 0o755) },
			func(err error) bool { return errors.As(err, &notRegular) },
		},
		"gone":   {os.Remove, func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		"shrunk": {func(path string) error { return os.Truncate(path, 4000) }, func(err error) bool { return errors.Is(err, layout.ErrSourceChanged) }},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPayload(t, nil, 5000, 300)
			if err := tc.swap(p.paths[0]); err != nil {
				t.Fatal(err)
			}
			result := make(chan error, 1)
			go func() {
				srcs, err := OpenSources([]Disk{{Disk: p.disk}}, nil)
				if err == nil {
					srcs.Close()
				}
				result <- err
			}()
			var err error
			select {
			case err = <-result:
			case <-time.After(10 * time.Second):
				t.Error("OpenSources still opening after 10 s")
				if f, err := os.OpenFile(p.paths[0], os.O_RDWR, 0); err == nil { // frees a reader waiting on a FIFO
					defer f.Close()
				}
				err = <-result
			}
			var se *SourceError
			if !errors.As(err, &se) || se.Path != p.paths[0] || !tc.want(err) {
				t.Errorf("OpenSources: %v, want a *SourceError for %s", err, p.paths[0])
			}
		})
	}
}
