package metadata

import (
	"fmt"
	"os"
)

// openRegular opens path, which must be a regular file, and returns it with its size.
func openRegular(path, kind string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", kind, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", kind, err)
	}
	return f, st.Size(), nil
}
