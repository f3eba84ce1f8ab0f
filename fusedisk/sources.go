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

// Sources are the original files of some disks, each opened once however many
// names lead to it, fingerprinted and watched until Close.
type Sources struct {
	files  []*source          // one per file
	byPath map[string]*source // by every path the disks name them by
	watch  *watcher
}

// OpenSources opens the sources of disks read-only and without blocking, checks
// that each still has the size it was laid out for, and starts watching them. A
// source that cannot be served gives a *SourceError. log gets the changes
// noticed later (nil: nowhere).
func OpenSources(disks []Disk, log *zap.Logger) (*Sources, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Sources{byPath: map[string]*source{}}
	byID := map[fileID]*source{}
	for _, d := range disks {
		for _, ls := range d.Disk.Sources {
			src, err := openSource(ls, log)
			if err != nil {
				s.closeFiles()
				return nil, err
			}
			if have := byID[src.id()]; have != nil {
				have.share(src)
				src = have
			} else {
				byID[src.id()] = src
				s.files = append(s.files, src)
			}
			s.byPath[ls.Path] = src
		}
	}
	var err error
	if s.watch, err = newWatcher(s.files); err != nil {
		s.closeFiles()
		return nil, err
	}
	go s.watch.run()
	return s, nil
}

// Close stops watching the sources and closes them. Nothing may read them any
// more: close them once the tree they serve is unmounted (Server.Wait).
func (s *Sources) Close() error {
	return errors.Join(s.watch.close(), s.closeFiles())
}

func (s *Sources) closeFiles() error {
	var errs []error
	for _, src := range s.files {
		errs = append(errs, src.f.Close())
	}
	return errors.Join(errs...)
}

// forDisk returns the sources of d, indexed like d.Sources.
func (s *Sources) forDisk(d *layout.Disk) ([]*source, error) {
	srcs := make([]*source, len(d.Sources))
	for i, ls := range d.Sources {
		srcs[i] = s.byPath[ls.Path]
		if srcs[i] == nil || srcs[i].want.Size != ls.Size {
			return nil, fmt.Errorf("source %s (%d bytes): not among the opened sources", ls.Path, ls.Size)
		}
	}
	return srcs, nil
}

// source is one original file, pinned by fd, however many names lead to it.
type source struct {
	path    string   // absolute, as first opened
	names   []string // every absolute path the disks name it by, path first
	f       *os.File
	fd      int
	want    unix.Stat_t // fingerprint at open
	access  access      // who may read it, and so the nodes that show it
	log     *zap.Logger // where its change is told
	changed atomic.Bool
	once    sync.Once
	// mu guards nodes: the nodes whose cached pages must go when the source
	// changes, added as they are first opened (see fileNode.Open).
	mu    sync.Mutex
	nodes []*fileNode
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
// layout.ErrSourceChanged). These are faults of the input, not of the mount.
type SourceError struct {
	Path string // absolute
	Err  error  // names Path
}

func (e *SourceError) Error() string { return e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// openSource opens path and checks it still has the size the layout was built for.
// inputfile.Open refuses what is not a regular file without blocking on it: the
// file may have been swapped for a FIFO since the layout was made.
func openSource(s layout.Source, log *zap.Logger) (*source, error) {
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return nil, &SourceError{Path: s.Path, Err: fmt.Errorf("%s: %w", s.Path, err)}
	}
	f, err := inputfile.Open(abs)
	if err != nil {
		return nil, &SourceError{Path: abs, Err: err}
	}
	src := &source{path: abs, names: []string{abs}, f: f, fd: int(f.Fd()), log: log}
	if err := unix.Fstat(src.fd, &src.want); err != nil {
		f.Close()
		return nil, &SourceError{Path: abs, Err: &os.PathError{Op: "fstat", Path: abs, Err: err}}
	}
	if src.want.Size != s.Size {
		f.Close()
		return nil, &SourceError{Path: abs, Err: fmt.Errorf("%s: %d bytes, laid out for %d: %w", abs, src.want.Size, s.Size, layout.ErrSourceChanged)}
	}
	src.access = accessOf(src.fd, &src.want)
	return src, nil
}

// check reports whether the source is still the file that was opened. It costs one
// fstat per read: inotify alone misses writes through mmap and on network
// filesystems, and in BenchmarkSequentialRead the fstat is lost in the noise.
func (s *source) check() bool {
	if s.changed.Load() {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		s.markChanged("fstat: " + err.Error())
		return false
	}
	switch {
	case st.Size != s.want.Size:
		s.markChanged(fmt.Sprintf("size %d, was %d", st.Size, s.want.Size))
	case st.Mtim != s.want.Mtim || st.Ctim != s.want.Ctim:
		s.markChanged("modified")
	default:
		return true
	}
	return false
}

// markChanged fences the source off for good, logs once, and has the kernel's
// cached pages of every node opened on it dropped so later reads reach vmfs and fail.
// It never waits for the kernel: a read may be the first to notice the change, and
// the kernel drops pages only once the reads that hold them are answered.
func (s *source) markChanged(why string) {
	s.changed.Store(true)
	s.once.Do(func() {
		s.log.Error("source changed; its reads now fail with EIO", zap.String("file", s.path), zap.String("change", why))
		go s.dropCaches()
	})
}

// addNode has the kernel's cached pages of n dropped when the source changes.
func (s *source) addNode(n *fileNode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = append(s.nodes, n)
}

// dropCaches drops the kernel's cached pages of the source's nodes.
func (s *source) dropCaches() {
	s.mu.Lock()
	nodes := slices.Clone(s.nodes)
	s.mu.Unlock()
	for _, n := range nodes {
		n.NotifyContent(0, 0)
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
func (w *watcher) run() {
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
				s.markChanged(eventName(ev.Mask))
			}
			if s := w.dirs[ev.Wd][cString(nameb)]; s != nil && ev.Mask&dirEvents != 0 {
				s.markChanged(eventName(ev.Mask) + " in its directory")
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
