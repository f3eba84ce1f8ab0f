package fusedisk

import (
	"errors"
	"fmt"
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
	return unmount(Direct{}, ms, ours, lazy)
}

// unmount removes m, one of the mounts ms, through mt, as Unmount does.
func unmount(mt Mounter, ms []MountInfo, m *MountInfo, lazy bool) error {
	if top := covered(ms, m); top != nil {
		return &CoveredError{Point: m.Point, FSType: top.FSType}
	}
	return mt.Unmount(m.Point, lazy)
}
