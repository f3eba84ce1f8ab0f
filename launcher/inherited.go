package launcher

import (
	"os"
	"slices"
	"strconv"
	"strings"

	"vmfs/internal/inputfile"
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
