package vmfs

import (
	"context"
	"errors"
	"fmt"

	"vmfs/fusedisk"
)

// UnmountService removes what a killed service left at dir: the mounts that
// expose its payloads elsewhere (they share its mount's source), then its
// mount. It returns the mountpoints it removed. A service still serving is
// refused: SIGTERM stops it in order, its VMs first.
func UnmountService(ctx context.Context, dir string) ([]string, error) {
	st, err := Status(ctx, dir)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return nil, withKind(ErrMount, fmt.Errorf("%s: not a vmfs mount", dir))
	case st.State == StateServing:
		return nil, withKind(ErrMount, fmt.Errorf("%s: its server %d is serving; stop it with SIGTERM", dir, st.Pid))
	}
	ms, err := fusedisk.Mounts()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, m := range ms {
		if m.FSType != fusedisk.FSType || m.Source != st.source || m.Point == st.Dir {
			continue
		}
		if _, err := UnmountDir(ctx, m.Point); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, m.Point)
	}
	if _, err := UnmountDir(ctx, st.Dir); err != nil {
		return gone, errors.Join(append(errs, err)...)
	}
	return append(gone, st.Dir), errors.Join(errs...)
}
