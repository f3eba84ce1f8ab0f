package vmfs

import "context"

// interruptible runs f, which may block on a slow or stuck file, and returns its
// error, or ctx's cause as soon as ctx is done; f is then abandoned. Only for work
// that holds nothing to clean up.
func interruptible(ctx context.Context, f func() error) error {
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
