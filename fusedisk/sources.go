package fusedisk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/layout"
)

// ErrSourceChanged reports a source that is not the file the disk was laid out over.
var ErrSourceChanged = errors.New("source changed since mount")

// source is one original file, pinned by fd, however many names lead to it.
type source struct {
	path    string   // absolute, as first opened
	names   []string // every absolute path the disks name it by, path first
	f       *os.File
	fd      int
	want    unix.Stat_t // fingerprint at open
	access  access      // who may read it, and so the nodes that show it
	changed atomic.Bool
	once    sync.Once
	nodes   []*fileNode // nodes whose cache must go when the source changes
	// inval takes the source once it has changed, to drop the nodes' cached pages
	// off the request path; it has room for every source.
	inval chan<- *source
}

// fileID tells files apart: the names of one file share it.
type fileID struct{ dev, ino uint64 }

func (s *source) id() fileID { return fileID{uint64(s.want.Dev), s.want.Ino} }

// share makes s stand for dup too, a second opening of the same file, and closes dup.
func (s *source) share(dup *source) {
	if !slices.Contains(s.names, dup.path) {
		s.names = append(s.names, dup.path)
	}
	dup.f.Close()
}

// SourceError reports a source that cannot be served: it cannot be opened, is not
// a regular file, or no longer has the size it was laid out for (Err then wraps
// ErrSourceChanged). These are faults of the input, not of the mount.
type SourceError struct {
	Path string // absolute
	Err  error  // names Path
}

func (e *SourceError) Error() string { return e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// openSource opens path and checks it still has the size the layout was built for.
// inputfile.Open refuses what is not a regular file without blocking on it: the
// file may have been swapped for a FIFO since the layout was made.
func openSource(s layout.Source) (*source, error) {
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return nil, &SourceError{Path: s.Path, Err: fmt.Errorf("%s: %w", s.Path, err)}
	}
	f, err := inputfile.Open(abs)
	if err != nil {
		return nil, &SourceError{Path: abs, Err: err}
	}
	src := &source{path: abs, names: []string{abs}, f: f, fd: int(f.Fd())}
	if err := unix.Fstat(src.fd, &src.want); err != nil {
		f.Close()
		return nil, &SourceError{Path: abs, Err: &os.PathError{Op: "fstat", Path: abs, Err: err}}
	}
	if src.want.Size != s.Size {
		f.Close()
		return nil, &SourceError{Path: abs, Err: fmt.Errorf("%s: %d bytes, laid out for %d: %w", abs, src.want.Size, s.Size, ErrSourceChanged)}
	}
	src.access = accessOf(src.fd, &src.want)
	return src, nil
}

// check reports whether the source is still the file that was opened. It costs one
// fstat per read: inotify alone misses writes through mmap and on network
// filesystems, and in BenchmarkSequentialRead the fstat is lost in the noise.
func (s *source) check(log *zap.Logger) bool {
	if s.changed.Load() {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		s.markChanged(log, "fstat: "+err.Error())
		return false
	}
	switch {
	case st.Size != s.want.Size:
		s.markChanged(log, fmt.Sprintf("size %d, was %d", st.Size, s.want.Size))
	case st.Mtim != s.want.Mtim || st.Ctim != s.want.Ctim:
		s.markChanged(log, "modified")
	default:
		return true
	}
	return false
}

// markChanged fences the source off for good, logs once, and has the kernel's
// cached pages of every node built on it dropped so later reads reach vmfs and fail.
// It never waits for the kernel: a read may be the first to notice the change, and
// the kernel drops pages only once the reads that hold them are answered.
func (s *source) markChanged(log *zap.Logger, why string) {
	s.changed.Store(true)
	s.once.Do(func() {
		log.Error("source changed; its reads now fail with EIO", zap.String("file", s.path), zap.String("change", why))
		s.inval <- s
	})
}

// invalidate drops the kernel's cached pages of the nodes of each source that
// comes in, until done is closed.
func invalidate(changed <-chan *source, done <-chan struct{}) {
	for {
		select {
		case s := <-changed:
			for _, n := range s.nodes {
				n.NotifyContent(0, 0)
			}
		case <-done:
			return
		}
	}
}

// watcher reports edits, deletion and replacement of sources through inotify.
// inotify watches a file, not a name: the names of one file get one watch, which
// is why a file is one source however many names lead to it.
type watcher struct {
	f     *os.File
	files map[int32]*source            // watch on the file itself
	dirs  map[int32]map[string]*source // watch on the parent, by base name
}

const (
	fileEvents = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	dirEvents  = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE
)

func newWatcher(srcs []*source) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), files: map[int32]*source{}, dirs: map[int32]map[string]*source{}}
	for _, s := range srcs {
		wd, err := unix.InotifyAddWatch(fd, s.path, fileEvents)
		if err != nil {
			w.f.Close()
			return nil, &os.PathError{Op: "inotify_add_watch", Path: s.path, Err: err}
		}
		w.files[int32(wd)] = s
		for _, name := range s.names {
			dir := filepath.Dir(name)
			wd, err = unix.InotifyAddWatch(fd, dir, dirEvents)
			if err != nil {
				w.f.Close()
				return nil, &os.PathError{Op: "inotify_add_watch", Path: dir, Err: err}
			}
			if w.dirs[int32(wd)] == nil {
				w.dirs[int32(wd)] = map[string]*source{}
			}
			w.dirs[int32(wd)][filepath.Base(name)] = s
		}
	}
	return w, nil
}

// run reads events until close.
func (w *watcher) run(log *zap.Logger) {
	buf := make([]byte, 64*1024)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if s := w.files[ev.Wd]; s != nil && ev.Mask&fileEvents != 0 {
				s.markChanged(log, eventName(ev.Mask))
			}
			if s := w.dirs[ev.Wd][cString(nameb)]; s != nil && ev.Mask&dirEvents != 0 {
				s.markChanged(log, eventName(ev.Mask)+" in its directory")
			}
		}
	}
}

func (w *watcher) close() error { return w.f.Close() }

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func eventName(mask uint32) string {
	switch {
	case mask&unix.IN_MODIFY != 0:
		return "written"
	case mask&unix.IN_ATTRIB != 0:
		return "attributes changed"
	case mask&(unix.IN_DELETE_SELF|unix.IN_DELETE) != 0:
		return "deleted"
	case mask&(unix.IN_MOVE_SELF|unix.IN_MOVED_FROM) != 0:
		return "renamed away"
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
		return "replaced"
	}
	return fmt.Sprintf("inotify event %#x", mask)
}
