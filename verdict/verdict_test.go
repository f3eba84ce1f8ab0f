package verdict

import (
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	v := &Verdict{OK: false, Checks: []Check{{Name: "a", OK: true, Reason: "fine"}, {Name: "b", Reason: "bad\nstack", Errno: "EIO"}},
		Profile: "android13|android14"}
	line, err := v.Line()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(line, "\n") != 2 || !strings.HasPrefix(line, "\n"+Prefix) {
		t.Fatalf("line %q: want the verdict alone on one line", line)
	}
	got, err := Parse("[    3.1] noise " + strings.TrimSpace(line) + "\r")
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("Parse: %+v, %v; want %+v", got, err, v)
	}
	if f := got.Failed(); len(f) != 1 || f[0] != "b: bad\nstack" {
		t.Errorf("Failed: %q", f)
	}
	if v, err := Parse("no verdict here"); v != nil || err != nil {
		t.Errorf("plain line: %v %v", v, err)
	}
	if _, err := Parse(Prefix + `{"ok":tru`); err == nil {
		t.Error("garbled verdict accepted")
	}
}
