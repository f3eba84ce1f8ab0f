// Package strictjson checks a JSON document for what encoding/json lets through:
// a key repeated within one object (json keeps the last value, where another
// reader may keep the first or fail), and a key that names a struct field only
// when case is ignored (json fills the field tagged "op" from "OP"). Its errors
// say where the key is ("disks[0].partitions[1]") and quote it with
// inputfile.Quote.
//
// It owns only these checks; decoding stays encoding/json's.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"vmfs/internal/inputfile"
)

// Duplicates reports the first key that appears twice within one object of
// data, a document json has already decoded (its syntax and nesting checked).
func Duplicates(data []byte) error { return Keys(data, nil) }

// Keys is Duplicates, and also reports a key of an object that decodes into a
// struct of v's type (a pointer to it, as json.Unmarshal takes) that is not
// spelled exactly as one of its fields. v nil checks duplicates only.
func Keys(data []byte, v any) error {
	var t reflect.Type
	if v != nil {
		t = reflect.TypeOf(v)
	}
	return walk(json.NewDecoder(bytes.NewReader(data)), "", t)
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk checks the JSON value next in dec, found at path ("" for the top,
// "apexes[1]"), which decodes into t (nil: anything, its keys unchecked).
func walk(dec *json.Decoder, path string, t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)) {
		t = nil // decoded by its own method, which json does not match fields for
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = map[string]reflect.Type{}
			fieldsOf(t, fields)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key := tok.(string) // json.Decoder yields object keys as strings
			if seen[key] {
				return fmt.Errorf("duplicate key %q%s", inputfile.Quote(key), in(path))
			}
			seen[key] = true
			inner := key
			if path != "" {
				inner = path + "." + key
			}
			var elem reflect.Type
			switch {
			case fields != nil:
				var ok bool
				if elem, ok = fields[key]; !ok {
					return fmt.Errorf("unknown field %q%s (keys are matched exactly)", inputfile.Quote(key), in(path))
				}
			case t != nil && t.Kind() == reflect.Map:
				elem = t.Elem()
			}
			if err := walk(dec, inner, elem); err != nil {
				return err
			}
		}
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, fmt.Sprintf("%s[%d]", path, i), elem); err != nil {
				return err
			}
		}
	default:
		return nil // a scalar
	}
	_, err = dec.Token() // the closing '}' or ']'
	return err
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + inputfile.Quote(path)
}

// fieldsOf adds the JSON names of struct t's fields to fields, as json names
// them: the tag's name, else the Go name; an untagged embedded struct's fields
// are its own.
func fieldsOf(t reflect.Type, fields map[string]reflect.Type) {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case f.Anonymous && name == "" && ft.Kind() == reflect.Struct:
			fieldsOf(ft, fields)
			continue
		case !f.IsExported():
			continue
		case name == "":
			name = f.Name
		}
		fields[name] = f.Type
	}
}
