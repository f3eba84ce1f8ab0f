package confine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs/fusedisk"
	"vmfs/testdata"
)

const testSource = "confine-test"

// helperScenario serves a vmfs mount at mnt, starts a Helper for it, confines
// itself (reading dir only) and has the Helper do what it may no longer do
// itself, through fusedisk, and refuse the rest.
func helperScenario(dir string, out outcomes) error {
	p := func(name string) string { return filepath.Join(dir, name) }
	h := &Helper{}
	srv, err := fusedisk.Mount(p("mnt"), fusedisk.NewForest(map[string][]byte{"f": []byte("x")}), fusedisk.MountOptions{FsName: testSource, Mounter: h})
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", p("tmp"), "tmpfs", 0, ""); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(p("mnt"), &st); err != nil {
		return err
	}
	if err := h.Start(HelperOptions{Dev: st.Dev, Source: testSource, Remove: []string{p("sock")}}); err != nil {
		return err
	}
	if _, err := Apply(Rules{Read: []string{dir, "/proc/self"}}, zap.NewNop()); err != nil {
		return err
	}
	step := func(name string, err error) { out[name] = outcome(err) }
	open := func(name string, flags int) *os.File {
		f, err := os.OpenFile(p(name), flags, 0)
		if err != nil {
			step("open "+name, err)
		}
		return f
	}
	tree := func(name string) *os.File {
		fd, err := unix.OpenTree(unix.AT_FDCWD, p(name), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			step("open_tree "+name, err)
		}
		return os.NewFile(uintptr(fd), name)
	}
	mounted := func(point string) error {
		m, err := fusedisk.MountAt(p(point))
		if err == nil && (m == nil || m.Source != testSource) {
			err = errors.New("not mounted")
		}
		return err
	}

	empty, full := open("empty", os.O_RDONLY), open("full", os.O_RDONLY)
	mine := tree("mnt")
	step("move_mount itself", fusedisk.Direct{}.Move(mine, empty))
	e, err := fusedisk.Expose(p("mnt"), empty, h)
	step("expose", err)
	step("exposed there", mounted("empty"))
	_, err = fusedisk.Expose(p("mnt"), full, h)
	step("expose on a full directory", errors.Unwrap(err))
	step("move another mount", h.Move(tree("tmp"), empty))
	step("unmount itself", unix.Unmount(p("empty"), unix.MNT_DETACH))
	if e != nil {
		step("unexpose", e.Unmount())
	}
	step("unexposed", mounted("empty"))
	step("detach another mount", h.Detach(open("tmp", unix.O_PATH)))
	err = h.Unmount(p("tmp"), false)
	step("unmount another mount", err)
	out["that error is ErrNotMounted"] = outcome(nil)
	if !errors.Is(err, fusedisk.ErrNotMounted) {
		out["that error is ErrNotMounted"] = "no"
	}
	other := unix.Minor(st.Dev) + 1
	out["abort another connection"] = strings.TrimPrefix(outcome(h.Abort(other)), fmt.Sprintf("FUSE connection %d: ", other))
	step("remove a file itself", os.Remove(p("full/f")))
	step("remove another file", h.Remove(p("full/f")))
	step("remove the socket", h.Remove(p("sock")))
	_, err = os.Lstat(p("sock"))
	step("the socket after", err)
	// A file open keeps the mount busy: Stop detaches it, then aborts it.
	held := open("mnt/f", os.O_RDONLY)
	step("stop the mount", srv.Stop())
	_, err = held.Read(make([]byte, 1))
	step("read the file held after", err)
	step("close", h.Close())
	return nil
}

// TestHelper: a confined process, which may not change the mount table, has
// its Helper expose its vmfs mount on an empty directory and unexpose it,
// remove its socket, and end its mount (a busy one detached, then aborted);
// the Helper refuses to mount on a directory that is not empty, to move,
// detach or unmount another mount, to abort another connection and to remove
// another file, and it ends when closed.
func TestHelper(t *testing.T) {
	requireLandlock(t)
	testdata.RequireFUSE(t)
	dir := t.TempDir()
	for _, d := range []string{"mnt", "tmp", "empty", "full"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "full", "f"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "sock"), nil, 0o644)

	want(t, child(t, "helper", dir), outcomes{
		"move_mount itself":           "EPERM",
		"expose":                      "ok",
		"exposed there":               "ok",
		"expose on a full directory":  "the target is not empty",
		"move another mount":          "the tree to attach is not of the mount it serves",
		"unmount itself":              "EPERM",
		"unexpose":                    "ok",
		"unexposed":                   "not mounted",
		"detach another mount":        "the mount to detach is not of the mount it serves",
		"unmount another mount":       filepath.Join(dir, "tmp") + ": " + fusedisk.ErrNotMounted.Error(),
		"that error is ErrNotMounted": "ok",
		"abort another connection":    "not that of the mount it serves",
		"remove a file itself":        "EACCES",
		"remove another file":         `request "remove" with 0 files: not one the mount helper takes`,
		"remove the socket":           "ok",
		"the socket after":            "ENOENT",
		"stop the mount":              "ok",
		"read the file held after":    "ENOTCONN",
		"close":                       "ok",
	})
}
