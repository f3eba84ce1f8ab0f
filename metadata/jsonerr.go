package metadata

import (
	"encoding/json"
	"errors"
	"fmt"
)

// decodeError is a JSON decoding failure described in the file's own terms (key path and
// byte offset) rather than Go type names; the decoder's error stays reachable via Unwrap.
type decodeError struct {
	msg string
	err error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.err }

// jsonError describes err from json.Unmarshal of the file called what (e.g. "payload config x.json").
func jsonError(what string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "top level"
		}
		return &decodeError{
			msg: fmt.Sprintf("%s: %s: wrong JSON type %s at byte %d", what, field, te.Value, te.Offset),
			err: err,
		}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &decodeError{msg: fmt.Sprintf("%s: invalid JSON at byte %d: %v", what, se.Offset, err), err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}
