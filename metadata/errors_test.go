package metadata

import (
	"path/filepath"
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

// An error that repeats a string taken from an input file cuts it (inputfile.Quote):
// a hostile file may hold MiBs, which would otherwise be echoed whole.
func TestErrorsCutLongInput(t *testing.T) {
	huge := strings.Repeat("a", 512<<10)
	dir := t.TempDir()
	apk := makeZip(t, zipEntry{name: "assets/vm_config.json", data: []byte("{}")})
	list := writeFile(t, filepath.Join(dir, "apex-info-list.xml"),
		[]byte(`<apex-info-list><apex-info moduleName="com.a" modulePath="/`+huge+`" isActive="true"/></apex-info-list>`))
	payload := func(json string) func() error {
		return func() error { _, err := ParsePayloadConfig("c.json", []byte(json)); return err }
	}
	vm := func(json string) func() error {
		return func() error { _, err := parseVMConfig("vm.json", dir, []byte(json)); return err }
	}
	apexList := func(xml string) func() error {
		return func() error { _, err := ParseApexInfoList("list.xml", strings.NewReader(xml)); return err }
	}
	for name, run := range map[string]func() error{
		"ValidName":           func() error { return ValidName("apex", huge) },
		"apex name":           payload(`{"apexes": [{"name": "` + huge + `"}]}`),
		"os name":             payload(`{"os": {"name": "` + huge + `"}}`),
		"task type":           payload(`{"task": {"type": "` + huge + `", "command": "x"}}`),
		"duplicate key":       payload(`{"` + huge + `": 1, "` + huge + `": 2}`),
		"number literal":      vm(`{"kernel": "k", "memory_mib": 1` + strings.Repeat("0", 512<<10) + `}`),
		"partition label":     vm(`{"kernel": "k", "disks": [{"partitions": [{"label": "` + huge + `", "path": "p"}], "writable": false}]}`),
		"moduleName":          apexList(`<apex-info-list><apex-info moduleName="` + huge + `"/></apex-info-list>`),
		"isActive":            apexList(`<apex-info-list><apex-info moduleName="a" modulePath="/a" isActive="` + huge + `"/></apex-info-list>`),
		"XML element name":    apexList(`<apex-info-list><` + huge + `></apex-info-list>`),
		"modulePath":          func() error { _, err := ApexResolver{InfoList: list}.Resolve("com.a"); return err },
		"config path":         func() error { _, err := ReadPayloadConfig(apk, huge); return err },
		"config path with ..": func() error { _, err := ReadPayloadConfig(apk, "../"+huge); return err },
	} {
		t.Run(name, func(t *testing.T) {
			err := run()
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if len(msg) > 1024 || !strings.Contains(msg, " bytes)") {
				t.Fatalf("%d-byte error, want it cut: %.300q", len(msg), msg)
			}
			t.Log(msg)
		})
	}
}
