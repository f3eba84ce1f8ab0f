package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Image    string `json:"image"`
	Writable bool   `json:"writable,omitempty"`
}

type embedded struct {
	Extra string `json:"extra"`
}

type doc struct {
	embedded
	Op       string            `json:"op"`
	Disks    []inner           `json:"disks"`
	Run      *inner            `json:"run"`
	Labels   map[string]inner  `json:"labels"`
	Any      any               `json:"any"`
	When     time.Time         `json:"when"` // decoded by its own method
	Untagged string            // json's name: the Go name
	Skipped  string            `json:"-"`
	Raw      json.RawMessage   `json:"raw"`
	Env      map[string]string `json:"env"`
}

// TestKeys: what json would decode by a key's case alone, or with a key twice,
// is refused, saying where; exact keys anywhere, and anything in a value json
// does not match fields for, pass.
func TestKeys(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"exact", `{"op":"a","extra":"e","disks":[{"image":"i","writable":true}],"run":{"image":"r"},"labels":{"X":{"image":"l"}},
			"any":{"OP":1,"Op":2},"when":"2024-01-01T00:00:00Z","Untagged":"u","raw":{"K":1,"k":2},"env":{"A":"1","a":"2"}}`, ""},
		{"case at the top", `{"OP":"list"}`, `unknown field "OP" (keys are matched exactly)`},
		{"case in an embedded struct", `{"Extra":"e"}`, `unknown field "Extra"`},
		{"case in an array", `{"disks":[{"image":"i"},{"Image":"j"}]}`, `unknown field "Image" in disks[1]`},
		{"case behind a pointer", `{"run":{"WRITABLE":true}}`, `unknown field "WRITABLE" in run`},
		{"case in a map's value", `{"labels":{"x":{"iMage":"l"}}}`, `unknown field "iMage" in labels.x`},
		{"duplicate at the top", `{"op":"list","op":"stop"}`, `duplicate key "op"`},
		{"duplicate in a map", `{"env":{"A":"1","A":"2"}}`, `duplicate key "A" in env`},
		{"duplicate in any", `{"any":[{"k":1,"k":2}]}`, `duplicate key "k" in any[0]`},
		{"escaped key", `{"op\n\u001b[31m":1}`, `unknown field "\"op\\n\\x1b[31m\""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			if err := json.Unmarshal([]byte(tc.data), &d); err != nil {
				t.Fatalf("json refuses it already: %v", err)
			}
			err := Keys([]byte(tc.data), &d)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Keys: %v, want %q", err, tc.want)
			}
		})
	}
	if err := Duplicates([]byte(`{"OP":1,"a":{"b":1,"B":2}}`)); err != nil {
		t.Errorf("Duplicates refuses keys that differ in case: %v", err)
	}
}
