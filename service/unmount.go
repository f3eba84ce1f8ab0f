package service

import (
	"context"
	"errors"
	"fmt"

	"vmfs"
	"vmfs/fusedisk"
)

// UnmountDir removes what a killed service left at dir: the mounts that
// expose its payloads elsewhere (they share its mount's source), then its
// mount. It returns the mountpoints it removed. A service still serving is
// refused: SIGTERM stops it in order, its VMs first.
func UnmountDir(ctx context.Context, dir string) ([]string, error) {
	st, err := vmfs.Status(ctx, dir)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("%s: not a vmfs mount", dir))
	case st.State == vmfs.StateServing:
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("%s: its server %d is serving; stop it with SIGTERM", dir, st.Pid))
	}
	ms, err := fusedisk.Mounts()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, m := range ms {
		if m.FSType != fusedisk.FSType || m.Source != st.Source || m.Point == st.Dir {
			continue
		}
		if _, err := vmfs.UnmountDir(ctx, m.Point); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, m.Point)
	}
	if _, err := vmfs.UnmountDir(ctx, st.Dir); err != nil {
		return gone, errors.Join(append(errs, err)...)
	}
	return append(gone, st.Dir), errors.Join(errs...)
}
