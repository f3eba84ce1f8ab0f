package metadata

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseProfile(t *testing.T) {
	for i, want := range []string{"android12", "android13", "android14", "android15"} {
		p, err := ParseProfile(want)
		if err != nil || p != Profile(i) || p.String() != want {
			t.Errorf("ParseProfile(%q) = %v (%d), %v", want, p, p, err)
		}
	}
	if Profile(0) != Android12 {
		t.Error("the zero profile is not android12, the default")
	}
	for _, bad := range []string{"", "Android13", "android16", "13"} {
		if _, err := ParseProfile(bad); err == nil || !strings.Contains(err.Error(), "android12, android13, android14, android15") {
			t.Errorf("ParseProfile(%q): %v; want an error listing the profiles", bad, err)
		}
	}
}

func TestParseDebugLevel(t *testing.T) {
	for _, tc := range []struct {
		profile Profile
		in      string
		want    DebugLevel // "": an error is expected
	}{
		{Android12, "", DebugNone},
		{Android12, "full", ""},
		{Android13, "", DebugNone},
		{Android13, "app_only", DebugAppOnly},
		{Android14, "", DebugNone},
		{Android14, "app_only", ""}, // dropped in Android 14
		{Android14, "full", DebugFull},
		{Android15, "", DebugFull}, // Android 15's default
		{Android15, "none", DebugNone},
		{Android15, "FULL", ""},
	} {
		got, err := tc.profile.ParseDebugLevel(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("%s.ParseDebugLevel(%q) = %q, %v; want %q", tc.profile, tc.in, got, err, tc.want)
		}
	}
}

func TestProfileDiskFormat(t *testing.T) {
	for _, tc := range []struct {
		profile Profile
		label   string
		zeroPad bool
	}{
		{Android12, "metadata", false},
		{Android13, "payload-metadata", true},
		{Android14, "payload-metadata", true},
		{Android15, "payload-metadata", true},
	} {
		if tc.profile.MetadataLabel() != tc.label || tc.profile.ZeroPadApexes() != tc.zeroPad {
			t.Errorf("%s: label %q, zero-pad %v; want %q, %v", tc.profile,
				tc.profile.MetadataLabel(), tc.profile.ZeroPadApexes(), tc.label, tc.zeroPad)
		}
	}
}

// TestProfileParsePayloadConfig runs each config through every profile: nil in want
// means the profile refuses it with an error that names the key in say.
func TestProfileParsePayloadConfig(t *testing.T) {
	def := &PayloadConfig{OS: OSConfig{Name: DefaultOSName}}
	task := &PayloadConfig{OS: OSConfig{Name: DefaultOSName}, Task: &Task{Type: TaskMicrodroidLauncher, Command: "libx.so"}}
	withTombstones := `{"export_tombstones": false}`
	for _, tc := range []struct {
		name string
		json string
		want [4]*PayloadConfig // by profile
		say  string
	}{
		{"minimal", `{}`, [4]*PayloadConfig{def, nil, def, def}, "export_tombstones is required at android13"},
		{"export_tombstones", withTombstones, [4]*PayloadConfig{def, def, def, def}, ""},
		{"export_tombstones null", `{"export_tombstones": null}`, [4]*PayloadConfig{def, nil, def, def}, "export_tombstones is null, want true or false"},
		{"export_tombstones a string", `{"export_tombstones": "yes"}`, [4]*PayloadConfig{def, nil, nil, nil}, `export_tombstones is "yes"`},
		{"task.args", `{"export_tombstones": true, "task": {"type": "microdroid_launcher", "command": "libx.so", "args": ["a", "b"]}}`,
			[4]*PayloadConfig{task, task, task, task}, ""},
		{"task.args a string", `{"export_tombstones": true, "task": {"type": "microdroid_launcher", "command": "libx.so", "args": "a b"}}`,
			[4]*PayloadConfig{nil, nil, task, task}, `task.args is "a b", want a list of strings`},
		{"task.args null", `{"export_tombstones": true, "task": {"type": "microdroid_launcher", "command": "libx.so", "args": null}}`,
			[4]*PayloadConfig{nil, nil, task, task}, "task.args is null"},
		{"enable_authfs", `{"export_tombstones": true, "enable_authfs": true}`, [4]*PayloadConfig{def, def, def, def}, ""},
		{"enable_authfs a number", `{"export_tombstones": true, "enable_authfs": 1}`, [4]*PayloadConfig{def, def, nil, nil}, "enable_authfs is 1"},
		{"hugepages a string", `{"export_tombstones": true, "hugepages": "always"}`, [4]*PayloadConfig{def, def, def, nil}, `hugepages is "always"`},
		{"hugepages null", `{"export_tombstones": true, "hugepages": null}`, [4]*PayloadConfig{def, def, def, nil}, "hugepages is null"},
		{"os microdroid_gki", `{"export_tombstones": true, "os": {"name": "microdroid_gki"}}`,
			[4]*PayloadConfig{{OS: OSConfig{Name: "microdroid_gki"}}, nil, nil, nil}, `os.name "microdroid_gki"`},
		{"os name empty", `{"export_tombstones": true, "os": {"name": ""}}`, [4]*PayloadConfig{nil, nil, nil, def}, "os"},
		{"os microdroid", `{"export_tombstones": true, "os": {"name": "microdroid"}}`, [4]*PayloadConfig{def, def, def, def}, ""},
		{"os without name", `{"export_tombstones": true, "os": {}}`, [4]*PayloadConfig{nil, nil, nil, nil}, "os.name is required"},
	} {
		for p, want := range tc.want {
			profile := Profile(p)
			t.Run(tc.name+"/"+profile.String(), func(t *testing.T) {
				got, err := profile.ParsePayloadConfig("vm_config.json", []byte(tc.json))
				if want == nil {
					if err == nil || !strings.Contains(err.Error(), tc.say) || !strings.Contains(err.Error(), "vm_config.json") {
						t.Fatalf("got %+v, %v; want an error naming the file and saying %q", got, err, tc.say)
					}
					t.Log(err)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			})
		}
	}
}

func TestProfileReadPayloadConfig(t *testing.T) {
	apk := makeZip(t, zipEntry{name: "assets/vm_config.json", data: []byte(`{"os": {"name": "microdroid"}}`)})
	if _, err := Android12.ReadPayloadConfig(apk, "assets/vm_config.json"); err != nil {
		t.Errorf("android12: %v", err)
	}
	if _, err := Android13.ReadPayloadConfig(apk, "assets/vm_config.json"); err == nil || !strings.Contains(err.Error(), "export_tombstones") {
		t.Errorf("android13 took a config without export_tombstones: %v", err)
	}
}
