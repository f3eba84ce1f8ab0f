package fusedisk

import (
	"errors"
	"fmt"
	"io"
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

// Pool shares the sources of many Sources: a file is opened, fingerprinted and
// watched once however many trees read it, and closed when the last Sources that
// holds it is closed. A service that serves many payloads keeps one Pool for all;
// OpenSources makes a pool of its own for one set of disks.
type Pool struct {
	log   *zap.Logger
	watch *watcher
	// mu guards live, closed and every source's refs.
	mu sync.Mutex
	// live is the source a newly opened file joins: the last one opened for that
	// file, while unchanged. A changed source serves out its holders but takes no
	// new ones, which get a fresh source if the file is still good.
	live   map[fileID]*source
	held   map[*source]bool // every source some Sources holds
	closed bool
}

// NewPool starts a pool; log gets the source changes noticed later (nil: nowhere).
func NewPool(log *zap.Logger) (*Pool, error) {
	if log == nil {
		log = zap.NewNop()
	}
	w, err := newWatcher()
	if err != nil {
		return nil, err
	}
	go w.run()
	return &Pool{log: log, watch: w, live: map[fileID]*source{}, held: map[*source]bool{}}, nil
}

// Close stops watching and closes every source still held. Nothing may read
// them any more: close the pool once the trees it serves are unmounted.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	errs := []error{p.watch.close()}
	for src := range p.held {
		errs = append(errs, src.f.Close())
	}
	return errors.Join(errs...)
}

// Sources are the original files of some disks, each held once however many
// names lead to it, fingerprinted and watched until Close.
type Sources struct {
	pool    *Pool
	ownPool bool               // made by OpenSources: closing the Sources closes the pool
	files   []*source          // one per file
	byPath  map[string]*source // by every path the disks name them by
	// mu guards open, retiring and closed: how many files of the trees over these
	// sources the kernel holds open, and whether the sources are to be closed.
	mu       sync.Mutex
	open     int
	retiring bool
	closed   bool
}

// OpenSources opens the sources of disks read-only and without blocking, checks
// that each still has the size it was laid out for, and starts watching them. A
// source that cannot be served gives a *SourceError. log gets the changes
// noticed later (nil: nowhere).
func OpenSources(disks []Disk, log *zap.Logger) (*Sources, error) {
	return OpenFiles(disks, nil, log)
}

// OpenFiles is OpenSources taking the files in opened, already open, in place of
// the names they are laid out under (see Pool.Open).
func OpenFiles(disks []Disk, opened map[string]*os.File, log *zap.Logger) (*Sources, error) {
	p, err := NewPool(log)
	if err != nil {
		return nil, err
	}
	s, err := p.Open(disks, opened)
	if err != nil {
		p.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// Open holds the sources of disks as OpenSources does, sharing each file with
// the pool's other Sources. A source whose path is in opened is that file,
// already open (a client handed it over): it is never opened by name, and its
// guard watches the file, not the name. Open keeps duplicates of those files;
// the caller still owns and closes its own.
func (p *Pool) Open(disks []Disk, opened map[string]*os.File) (*Sources, error) {
	s := &Sources{pool: p, byPath: map[string]*source{}}
	for _, d := range disks {
		for _, ls := range d.Disk.Sources {
			if s.byPath[ls.Path] != nil {
				continue
			}
			src, err := p.acquire(ls, opened[ls.Path], d.Writable[ls.Path])
			if err != nil {
				s.release()
				return nil, err
			}
			if slices.Contains(s.files, src) {
				p.drop(src) // another name of a file held already
			} else {
				s.files = append(s.files, src)
			}
			s.byPath[ls.Path] = src
		}
	}
	return s, nil
}

// acquire returns the pool's source for ls, opening it (or duplicating f, its
// open file) and sharing it with the live source of the same file, with a
// reference taken.
func (p *Pool) acquire(ls layout.Source, f *os.File, w Writable) (*source, error) {
	src, err := openSource(ls, f, w, p.log)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		src.f.Close()
		return nil, errors.New("sources: pool closed")
	}
	if w != nil {
		// A writable source changes by design: it is neither watched nor
		// shared (its file has one writer, its owner's lock says).
		src.refs = 1
		p.held[src] = true
		return src, nil
	}
	if have := p.live[src.id()]; have != nil && have.sameAs(src) {
		if err := have.share(src, p.watch); err != nil {
			return nil, err
		}
		have.refs++
		return have, nil
	}
	if err := p.watch.add(src); err != nil {
		src.f.Close()
		return nil, err
	}
	src.refs = 1
	p.live[src.id()] = src
	p.held[src] = true
	return src, nil
}

// drop lets go of one reference to src, closing it after the last.
func (p *Pool) drop(src *source) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if src.refs--; src.refs > 0 || p.closed {
		return
	}
	p.watch.remove(src)
	delete(p.held, src)
	if p.live[src.id()] == src {
		delete(p.live, src.id())
	}
	src.f.Close()
}

// Close closes the sources now. Nothing may read them any more: close them once
// the tree they serve is unmounted (Server.Wait).
func (s *Sources) Close() error {
	s.mu.Lock()
	closed := s.closed
	s.closed = true
	s.mu.Unlock()
	if !closed {
		s.release()
	}
	if s.ownPool {
		return s.pool.Close()
	}
	return nil
}

// CloseWhenIdle closes the sources once no file of a tree over them is open,
// at once if none is, and refuses every later open of those files (ENOENT). It is
// for a tree taken out of a live mount (Forest.Remove): a process that still
// has one of its files open reads on until it closes it. It does not wait.
func (s *Sources) CloseWhenIdle() {
	s.mu.Lock()
	s.retiring = true
	idle := s.open == 0 && !s.closed
	s.closed = s.closed || idle
	s.mu.Unlock()
	if idle {
		s.release()
	}
}

// hold counts a file of a tree over s opened, unless s is closing; nil (the
// documents of a Forest) reads no source and is always open.
func (s *Sources) hold() bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retiring || s.closed {
		return false
	}
	s.open++
	return true
}

// unhold counts a file closed, and closes the sources after the last when asked to.
func (s *Sources) unhold() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.open--
	idle := s.open == 0 && s.retiring && !s.closed
	s.closed = s.closed || idle
	s.mu.Unlock()
	if idle {
		s.release()
	}
}

// release lets go of s's references and of the nodes it registered for cache drops.
func (s *Sources) release() {
	for _, src := range s.files {
		src.forget(s)
		s.pool.drop(src)
	}
}

// forDisk returns the sources of d, indexed like d.Sources.
func (s *Sources) forDisk(d *layout.Disk) ([]*source, error) {
	srcs := make([]*source, len(d.Sources))
	for i, ls := range d.Sources {
		srcs[i] = s.byPath[ls.Path]
		if srcs[i] == nil || srcs[i].size != ls.Size {
			return nil, fmt.Errorf("source %s (%d bytes): not among the opened sources", ls.Path, ls.Size)
		}
	}
	return srcs, nil
}

// source is one original file, pinned by fd, however many names lead to it.
type source struct {
	path    string   // absolute, as first opened; an opened file's own path, for people
	size    int64    // bytes, as laid out
	w       Writable // the backend of a writable source, or nil
	names   []string // every absolute path the disks name it by, path first; none for an opened file
	f       *os.File
	fd      int
	want    unix.Stat_t // fingerprint at open
	access  access      // who may read it, and so the nodes that show it
	log     *zap.Logger // where its change is told
	changed atomic.Bool
	once    sync.Once
	refs    int // the Sources that hold it; guarded by Pool.mu
	// mu guards nodes: the nodes whose cached pages must go when the source
	// changes, added as they are first opened (see fileNode.Open).
	mu    sync.Mutex
	nodes []*fileNode
}

// reader is what the source's bytes are read through.
func (s *source) reader() io.ReaderAt {
	if s.w != nil {
		return s.w
	}
	return s.f
}

// fileID tells files apart: the names of one file share it.
type fileID struct{ dev, ino uint64 }

func (s *source) id() fileID { return fileID{uint64(s.want.Dev), s.want.Ino} }

// sameAs reports whether dup, a second opening of s's file, finds it as s was
// opened: unchanged since, so that one guard covers both.
func (s *source) sameAs(dup *source) bool {
	return !s.changed.Load() && s.want.Size == dup.want.Size && s.want.Mtim == dup.want.Mtim && s.want.Ctim == dup.want.Ctim
}

// share makes s stand for dup too, a second opening of the same file, watching
// the directory of a name it did not have yet, and closes dup.
func (s *source) share(dup *source, w *watcher) error {
	defer dup.f.Close()
	for _, name := range dup.names {
		if slices.Contains(s.names, name) {
			continue
		}
		if err := w.addName(s, name); err != nil {
			return err
		}
		s.names = append(s.names, name)
	}
	return nil
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

// openSource opens s.Path, or duplicates opened, the file already open under
// that name, and checks it still has the size the layout was built for.
// inputfile.Open refuses what is not a regular file without blocking on it: the
// file may have been swapped for a FIFO since the layout was made.
func openSource(s layout.Source, opened *os.File, w Writable, log *zap.Logger) (*source, error) {
	var src *source
	var err error
	if opened != nil {
		src, err = dupSource(s.Path, opened)
	} else {
		src, err = pathSource(s.Path)
	}
	if err != nil {
		return nil, err
	}
	src.log, src.size, src.w = log, s.Size, w
	if err := unix.Fstat(src.fd, &src.want); err != nil {
		src.f.Close()
		return nil, &SourceError{Path: src.path, Err: &os.PathError{Op: "fstat", Path: src.path, Err: err}}
	}
	// A writable source's size is its backend's (a QCOW2 image's virtual size).
	if w == nil && src.want.Size != s.Size {
		src.f.Close()
		return nil, &SourceError{Path: src.path, Err: fmt.Errorf("%s: %d bytes, laid out for %d: %w", src.path, src.want.Size, s.Size, layout.ErrSourceChanged)}
	}
	src.access = accessOf(src.fd, &src.want)
	return src, nil
}

// pathSource opens path, a name the guard watches.
func pathSource(path string) (*source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &SourceError{Path: path, Err: fmt.Errorf("%s: %w", path, err)}
	}
	f, err := inputfile.Open(abs)
	if err != nil {
		return nil, &SourceError{Path: abs, Err: err}
	}
	return &source{path: abs, names: []string{abs}, f: f, fd: int(f.Fd())}, nil
}

// dupSource duplicates opened, known to the layout as key; it is named by the
// path the kernel gives it, for people, and has no name to watch.
func dupSource(key string, opened *os.File) (*source, error) {
	fd, err := unix.FcntlInt(opened.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &SourceError{Path: key, Err: &os.PathError{Op: "dup", Path: key, Err: err}}
	}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		path = key
	}
	f := os.NewFile(uintptr(fd), path)
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = &inputfile.NotRegularError{Path: path, Mode: st.Mode()}
		}
		return nil, &SourceError{Path: path, Err: err}
	}
	return &source{path: path, f: f, fd: fd}, nil
}

// check reports whether the source is still the file that was opened. It costs one
// fstat per read: inotify alone misses writes through mmap and on network
// filesystems, and in BenchmarkSequentialRead the fstat is lost in the noise.
func (s *source) check() bool {
	if s.w != nil {
		return true // it changes by design, through its backend alone
	}
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

// leadsTo reports whether name leads to s's file.
func (s *source) leadsTo(name string) bool {
	var st unix.Stat_t
	return unix.Stat(name, &st) == nil && st.Dev == s.want.Dev && st.Ino == s.want.Ino
}

// addNode has the kernel's cached pages of n dropped when the source changes.
func (s *source) addNode(n *fileNode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = append(s.nodes, n)
}

// forget drops the nodes of trees over set, which is let go.
func (s *source) forget(set *Sources) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = slices.DeleteFunc(s.nodes, func(n *fileNode) bool { return n.set == set })
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
// is why a file is one source however many names lead to it. Sources come and go
// as the Sources that hold them do.
type watcher struct {
	f  *os.File
	fd int
	// mu guards files and dirs.
	mu    sync.Mutex
	files map[int32][]*source // watch on the file itself
	dirs  map[int32]*dirWatch // watch on a parent of names
}

// dirWatch is the watch on a directory and the sources its names lead to.
type dirWatch struct {
	path  string
	names map[string][]*source // by base name
}

const (
	fileEvents = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	dirEvents  = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE
)

func newWatcher() (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	return &watcher{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, files: map[int32][]*source{}, dirs: map[int32]*dirWatch{}}, nil
}

// add watches s: the file it holds open (through /proc/self/fd, so the very file
// and not what a name leads to now) and the directory of each of its names.
func (w *watcher) add(s *source) error {
	wd, err := unix.InotifyAddWatch(w.fd, fmt.Sprintf("/proc/self/fd/%d", s.fd), fileEvents)
	if err != nil {
		return &os.PathError{Op: "inotify_add_watch", Path: s.path, Err: err}
	}
	w.mu.Lock()
	w.files[int32(wd)] = append(w.files[int32(wd)], s)
	w.mu.Unlock()
	for _, name := range s.names {
		if err := w.addName(s, name); err != nil {
			w.remove(s)
			return err
		}
	}
	return nil
}

// addName watches the directory of name, one of s's names.
func (w *watcher) addName(s *source, name string) error {
	dir := filepath.Dir(name)
	wd, err := unix.InotifyAddWatch(w.fd, dir, dirEvents)
	if err != nil {
		return &os.PathError{Op: "inotify_add_watch", Path: dir, Err: err}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.dirs[int32(wd)]
	if d == nil {
		d = &dirWatch{path: dir, names: map[string][]*source{}}
		w.dirs[int32(wd)] = d
	}
	d.names[filepath.Base(name)] = append(d.names[filepath.Base(name)], s)
	return nil
}

// remove stops watching for s, and removes the watches no source needs any more.
func (w *watcher) remove(s *source) {
	w.mu.Lock()
	defer w.mu.Unlock()
	is := func(x *source) bool { return x == s }
	for wd, srcs := range w.files {
		if w.files[wd] = slices.DeleteFunc(srcs, is); len(w.files[wd]) == 0 {
			delete(w.files, wd)
			unix.InotifyRmWatch(w.fd, uint32(wd)) // gone already when the file was deleted
		}
	}
	for wd, d := range w.dirs {
		for name, srcs := range d.names {
			if d.names[name] = slices.DeleteFunc(srcs, is); len(d.names[name]) == 0 {
				delete(d.names, name)
			}
		}
		if len(d.names) == 0 {
			delete(w.dirs, wd)
			unix.InotifyRmWatch(w.fd, uint32(wd))
		}
	}
}

// run reads events until close. An event on a directory counts for a source only
// when the name no longer leads to its file: one directory watch serves sources
// added over time, and an event queued before a source was added (its own file
// being written there, say) must not count against it.
func (w *watcher) run() {
	buf := make([]byte, 64*1024)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		// name is set for a directory event: the name that moved.
		type change struct {
			s         *source
			why, name string
		}
		var changes []change
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&fileEvents != 0 {
				for _, s := range w.files[ev.Wd] {
					changes = append(changes, change{s, eventName(ev.Mask), ""})
				}
			}
			if d := w.dirs[ev.Wd]; d != nil && ev.Mask&dirEvents != 0 {
				name := cString(nameb)
				for _, s := range d.names[name] {
					changes = append(changes, change{s, eventName(ev.Mask) + " in its directory", filepath.Join(d.path, name)})
				}
			}
		}
		w.mu.Unlock()
		for _, c := range changes {
			if c.name == "" || !c.s.leadsTo(c.name) {
				c.s.markChanged(c.why)
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
