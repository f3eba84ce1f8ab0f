package fusedisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrBusy reports a mount in use, which only a lazy unmount can remove.
var ErrBusy = errors.New("mount busy")

// ErrNotMounted reports that no vmfs mount is at a mountpoint.
var ErrNotMounted = errors.New("not a vmfs mount")

// CoveredError reports another mount on top of a vmfs mount. Unmounting by path
// would remove that one instead, so vmfs refuses.
type CoveredError struct {
	Point  string
	FSType string // of the mount on top
}

func (e *CoveredError) Error() string {
	return fmt.Sprintf("%s: a %s mount sits on top of the vmfs mount; unmount it first", e.Point, e.FSType)
}

// Unmount removes the vmfs mount at point whose source is source ("" for any
// vmfs mount), and only that one: it refuses with a *CoveredError when another
// mount sits on top and ErrNotMounted when there is none. A busy mount gives an
// error wrapping ErrBusy unless lazy, which detaches it: the kernel drops it when
// its last user closes it. Root unmounts directly, other users through fusermount3.
func Unmount(point, source string, lazy bool) error {
	ms, err := Mounts()
	if err != nil {
		return err
	}
	var ours *MountInfo
	for i := range ms {
		if ms[i].Point == point && ms[i].FSType == FSType && (source == "" || ms[i].Source == source) {
			ours = &ms[i]
		}
	}
	if ours == nil {
		return fmt.Errorf("%s: %w", point, ErrNotMounted)
	}
	return unmount(ms, ours, lazy)
}

// unmount removes m, one of the mounts ms, as Unmount does.
func unmount(ms []MountInfo, m *MountInfo, lazy bool) error {
	point := m.Point
	if top := covered(ms, m); top != nil {
		return &CoveredError{Point: point, FSType: top.FSType}
	}
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = unix.MNT_DETACH
		}
		err := unix.Unmount(point, flags)
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w", point, ErrBusy)
		}
		if err != nil {
			return &os.PathError{Op: "unmount", Path: point, Err: err}
		}
		return nil
	}
	args := []string{"-u", point}
	if lazy {
		args = []string{"-u", "-z", point}
	}
	out, err := exec.Command("fusermount3", args...).CombinedOutput()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(string(out))
	if strings.Contains(msg, unix.EBUSY.Error()) {
		return fmt.Errorf("unmount %s: %w", point, ErrBusy)
	}
	return fmt.Errorf("fusermount3 -u %s: %s (%v)", point, msg, err)
}
