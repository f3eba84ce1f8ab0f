package metadata

import (
	"encoding/json"
	"errors"
	"fmt"

	"vmfs/internal/inputfile"
	"vmfs/internal/strictjson"
)

// decodeError is a JSON decoding failure described in the file's own terms (key path and
// byte offset) rather than Go type names; the decoder's error stays reachable via Unwrap.
type decodeError struct {
	msg string
	err error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.err }

// cutError is err with its message cut by inputfile.Quote, for a parser whose messages
// repeat input (an XML element or entity name) at any length; errors.Is and As still
// see err.
type cutError struct{ err error }

func (e cutError) Error() string { return inputfile.Quote(e.err.Error()) }
func (e cutError) Unwrap() error { return e.err }

// jsonError describes err from json.Unmarshal of the file called what (e.g. "payload config x.json").
func jsonError(what string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "top level"
		}
		return &decodeError{
			// Value holds a number's literal, which may be any length.
			msg: fmt.Sprintf("%s: %s: wrong JSON type %s at byte %d", what, field, inputfile.Quote(te.Value), te.Offset),
			err: err,
		}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &decodeError{msg: fmt.Sprintf("%s: invalid JSON at byte %d: %v", what, se.Offset, err), err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unmarshalConfig decodes the JSON config data (called what in errors) into v, refusing
// what AVF's serde_json refuses beyond json.Unmarshal: a key repeated within one object.
// serde's derived structs fail on a repeated field, while encoding/json keeps the last
// value, so vmfs and the guest could read different configs. vmfs refuses any repeated
// key, including the unknown ones serde skips.
func unmarshalConfig(what string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return jsonError(what, err)
	}
	// Unmarshal has checked the syntax and bounded the nesting (10000 levels), which
	// Duplicates recurses through.
	if err := strictjson.Duplicates(data); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
