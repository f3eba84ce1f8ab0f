package metadata

import (
	"strings"
	"testing"
)

func TestFormatError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  FormatError
		want string
	}{
		{"with offset", FormatError{File: "app.apk.idsig", Off: 0, Msg: "bad version 3"}, "app.apk.idsig: bad version 3 at byte 0x0"},
		{"large offset", FormatError{File: "a.idsig", Off: 0x35, Msg: "bad thing"}, "a.idsig: bad thing at byte 0x35"},
		{"no offset", FormatError{File: "list.xml", Off: -1, Msg: "apex-info #1: moduleName is required"}, "list.xml: apex-info #1: moduleName is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"com.android.adbd", true},
		{"microdroid", true},
		{"a", true},
		{"...", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/abs", false},
		{"a\x00b", false},
		{strings.Repeat("a", 241), false},
		{strings.Repeat("a", 240), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidName("apex", tc.name)
			if (err == nil) != tc.ok {
				t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}
