package metadata

import (
	"errors"
	"fmt"
)

// FormatError reports a malformed field in a binary input file.
type FormatError struct {
	File string // path as the caller gave it
	Off  int64  // byte offset of the bad field; negative when unknown
	Msg  string // what is wrong, e.g. "bad version 3"
}

func (e *FormatError) Error() string {
	if e.Off < 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s at byte %#x", e.File, e.Msg, e.Off)
}

// InputError reports an input file that cannot be opened as a regular file: missing,
// unreadable, or a FIFO, a device, a directory. Callers tell it from a file whose
// content is wrong (a *FormatError, ErrMismatch).
type InputError struct {
	Kind string // what the file is to vmfs, e.g. "apk", "idsig"
	Err  error  // names the path (from package inputfile or the os)
}

func (e *InputError) Error() string { return e.Kind + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Sentinels that callers branch on; match them with errors.Is.
var (
	// ErrNotFound: a named input (an APEX, the payload config inside the APK) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrMismatch: the APK does not match the merkle tree or root hash of its idsig.
	ErrMismatch = errors.New("apk does not match idsig")
)
