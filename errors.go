package vmfs

import "errors"

// Kinds of failure, for errors.Is; the vmfs command turns them into exit codes.
var (
	ErrInput = errors.New("bad input")
	ErrMount = errors.New("mountpoint or FUSE refused")
	ErrVMM   = errors.New("vmm could not be started")
	// ErrArgument: a value a command line or a caller gave is out of range.
	ErrArgument = errors.New("bad argument")
)

// kindError is err, of kind: its message is err's alone.
type kindError struct{ kind, err error }

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Unwrap() error        { return e.err }
func (e *kindError) Is(target error) bool { return target == e.kind }

// WithKind marks err as of kind, for errors.Is; nil stays nil.
func WithKind(kind, err error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return &kindError{kind, err}
}
