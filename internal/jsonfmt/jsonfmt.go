// Package jsonfmt writes JSON for people to read: indented, with '<', '>' and '&'
// left as they are (paths such as "/<mountpoint>" stay legible). It owns only that.
package jsonfmt

import (
	"bytes"
	"encoding/json"
)

// Indent marshals v indented by two spaces, ending in a newline.
func Indent(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}
