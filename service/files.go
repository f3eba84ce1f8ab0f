package service

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/internal/wire"
)

// sent are the files of a request by what they are. A handler takes those it
// keeps; the rest are closed with the request.
type sent struct {
	files map[string][]*os.File
	held  []*os.File // taken for a VM: open until it ends (handOver)
}

// knownFiles are what a request's files may be, and how many of each.
var knownFiles = map[string]int{
	fileAPK: 1, fileIdsig: 1, fileMountpoint: 1, fileConsole: 1, fileLog: 1,
	fileKernel: 1, fileInitrd: 1, fileBootloader: 1, fileDisk: wire.MaxFiles,
	fileInstance: 1, fileStorage: 1, fileExtraAPK: wire.MaxFiles, fileExtraIdsig: wire.MaxFiles,
}

func sortFiles(names []string, files []*os.File) (*sent, error) {
	s := &sent{files: map[string][]*os.File{}}
	for i, f := range files {
		if i < len(names) {
			s.files[names[i]] = append(s.files[names[i]], f)
		} else {
			f.Close()
		}
	}
	if len(names) != len(files) {
		s.close()
		return nil, requestf("%d files sent, %d named", len(files), len(names))
	}
	for name, fs := range s.files {
		if len(fs) > knownFiles[name] {
			s.close()
			return nil, requestf("file %s: %d sent, at most %d may be", inputfile.Quote(name), len(fs), knownFiles[name])
		}
	}
	return s, nil
}

// take hands over the file named so, or nil when none was sent.
func (s *sent) take(name string) *os.File {
	fs := s.files[name]
	if len(fs) == 0 {
		return nil
	}
	s.files[name] = fs[1:]
	return fs[0]
}

// takeAll hands over every file named so, in order.
func (s *sent) takeAll(name string) []*os.File {
	fs := s.files[name]
	delete(s.files, name)
	return fs
}

// hold keeps f, taken, open with the request until handOver.
func (s *sent) hold(f *os.File) { s.held = append(s.held, f) }

// handOver gives the files held to the VM that uses them, to close when it ends.
func (s *sent) handOver() []*os.File {
	held := s.held
	s.held = nil
	return held
}

func (s *sent) close() {
	for _, fs := range s.files {
		inputfile.CloseAll(fs...)
	}
	inputfile.CloseAll(s.held...)
	s.files, s.held = nil, nil
}

// use is what a file sent is for, which decides what it may be.
type use int

const (
	useRead   use = iota // read, by the service or the VMM: a regular file open for reading
	useWrite             // a writable disk: a regular file open for reading and writing
	useOutput            // written to: a regular file, pipe, socket or character device
)

// check refuses a file sent as what that cannot serve for u: a file of another
// type (a directory, or a FIFO or device, which reading would wait on or never
// end), one not opened for what it is used for (an O_PATH descriptor, which
// anyone who may look a path up can get, reads nothing), or a file of the
// service's own mount (the service would wait on itself).
func (s *Service) check(what string, f *os.File, u use) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return requestf("%s: %v", what, err)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return requestf("%s: %v", what, err)
	}
	mode, typ := fl&unix.O_ACCMODE, st.Mode&unix.S_IFMT
	switch {
	case fl&unix.O_PATH != 0:
		return requestf("%s: sent as O_PATH, not open for reading", what)
	case st.Dev == s.dev:
		return vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("%s: a file of the service's own mount", what))
	case u == useOutput:
		if typ == unix.S_IFDIR || typ == unix.S_IFBLK {
			return vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("%s: %s; want a regular file, pipe, socket or character device", what, kind(st.Mode)))
		}
		if mode == unix.O_RDONLY {
			return requestf("%s: not opened for writing", what)
		}
		return nil
	case typ != unix.S_IFREG:
		return vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("%s: %s, not a regular file", what, kind(st.Mode)))
	case u == useWrite && mode != unix.O_RDWR:
		return requestf("%s: writable, but not opened for reading and writing", what)
	case u == useRead && mode == unix.O_WRONLY:
		return requestf("%s: not opened for reading", what)
	}
	return nil
}

// kind names the file type of a stat mode for people.
func kind(m uint32) string {
	var fm os.FileMode
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		fm = os.ModeDir
	case unix.S_IFIFO:
		fm = os.ModeNamedPipe
	case unix.S_IFSOCK:
		fm = os.ModeSocket
	case unix.S_IFCHR:
		fm = os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		fm = os.ModeDevice
	case unix.S_IFLNK:
		fm = os.ModeSymlink
	}
	return inputfile.Kind(fm)
}
