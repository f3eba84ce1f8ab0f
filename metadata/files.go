package metadata

import (
	"os"

	"vmfs/internal/inputfile"
)

// openRegular opens path, which must be a regular file, and returns it with its size.
// kind names the input in errors ("apk", "idsig"). It never blocks: a FIFO or a device
// is refused by what it is (inputfile.Open). Failures are *InputError.
func openRegular(path, kind string) (*os.File, int64, error) {
	f, err := inputfile.Open(path)
	if err != nil {
		return nil, 0, &InputError{Kind: kind, Err: err}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, &InputError{Kind: kind, Err: err}
	}
	return f, st.Size(), nil
}
