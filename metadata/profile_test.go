package metadata

import (
	"errors"
	"os"
	"path/filepath"
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

// apexList is a device-like list: adbd updated (factory copy inactive), statsd and edge
// factory, sharedlibs in two versions that both provide shared libs, virt active.
var apexList = []ApexInfo{
	{ModuleName: "com.android.adbd", ModulePath: "/system/apex/com.android.adbd.apex", PreinstalledModulePath: "/system/apex/com.android.adbd.apex", VersionCode: 1, LastUpdateSeconds: 100, IsFactory: true},
	{ModuleName: "com.vmfs.sharedlibs", ModulePath: "/data/apex/active/sharedlibs@2.apex", PreinstalledModulePath: "/system/apex/sharedlibs.apex", VersionCode: 2, LastUpdateSeconds: 300, IsActive: true, ProvideSharedApexLibs: true},
	{ModuleName: "com.vmfs.edge", ModulePath: "/system_ext/apex/com.vmfs.edge.apex", PreinstalledModulePath: "/system_ext/apex/com.vmfs.edge.apex", VersionCode: 1, LastUpdateSeconds: 100, IsFactory: true, IsActive: true},
	{ModuleName: "com.android.adbd", ModulePath: "/data/apex/active/com.android.adbd@2.apex", PreinstalledModulePath: "/system/apex/com.android.adbd.apex", VersionCode: 2, LastUpdateSeconds: 200, IsActive: true},
	{ModuleName: "com.android.os.statsd", ModulePath: "/system/apex/com.android.os.statsd.apex", PreinstalledModulePath: "/system/apex/com.android.os.statsd.apex", VersionCode: 1, LastUpdateSeconds: 100, IsFactory: true, IsActive: true},
	{ModuleName: "com.vmfs.sharedlibs", ModulePath: "/system/apex/sharedlibs.apex", PreinstalledModulePath: "/system/apex/sharedlibs.apex", VersionCode: 1, LastUpdateSeconds: 100, IsFactory: true, ProvideSharedApexLibs: true},
	{ModuleName: "com.android.virt", ModulePath: "/system/apex/com.android.virt.apex", PreinstalledModulePath: "/system/apex/com.android.virt.apex", VersionCode: 1, IsFactory: true, IsActive: true},
}

func TestSelectApexes(t *testing.T) {
	// entries names the picked list entries by module name and version.
	entries := func(got []ApexInfo) []string {
		var out []string
		for _, a := range got {
			out = append(out, a.ModuleName+"@"+string(rune('0'+a.VersionCode)))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		profile Profile
		config  []string
		debug   DebugLevel
		want    []string
	}{
		{"android12: the config's, in its order, active entries only", Android12,
			[]string{"com.vmfs.edge", "com.android.adbd"}, DebugNone, []string{"com.vmfs.edge@1", "com.android.adbd@2"}},
		{"android12 ignores debug", Android12, []string{"com.vmfs.edge"}, DebugFull, []string{"com.vmfs.edge@1"}},
		{"android13: statsd required, shared libs twice, sorted", Android13,
			[]string{"com.vmfs.edge"}, DebugNone,
			[]string{"com.android.os.statsd@1", "com.vmfs.edge@1", "com.vmfs.sharedlibs@1", "com.vmfs.sharedlibs@2"}},
		{"android13 app_only debug adds adbd", Android13, []string{"com.vmfs.edge"}, DebugAppOnly,
			[]string{"com.android.adbd@2", "com.android.os.statsd@1", "com.vmfs.edge@1", "com.vmfs.sharedlibs@1", "com.vmfs.sharedlibs@2"}},
		{"android14: a required APEX the config names too goes once", Android14,
			[]string{"com.android.os.statsd", "com.android.adbd"}, DebugFull,
			[]string{"com.android.adbd@2", "com.android.os.statsd@1", "com.vmfs.sharedlibs@1", "com.vmfs.sharedlibs@2"}},
		{"android15: no statsd, adbd only when debugging", Android15, []string{"com.vmfs.edge"}, DebugNone,
			[]string{"com.vmfs.edge@1", "com.vmfs.sharedlibs@1", "com.vmfs.sharedlibs@2"}},
		{"android15 full debug", Android15, nil, DebugFull,
			[]string{"com.android.adbd@2", "com.vmfs.sharedlibs@1", "com.vmfs.sharedlibs@2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.profile.SelectApexes(tc.config, apexList, tc.debug)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(entries(got), tc.want) {
				t.Errorf("got %v, want %v", entries(got), tc.want)
			}
		})
	}

	t.Run("sort by version then last update, stable", func(t *testing.T) {
		list := []ApexInfo{
			{ModuleName: "b", VersionCode: 1, LastUpdateSeconds: 9, IsActive: true, ProvideSharedApexLibs: true, ModulePath: "/1"},
			{ModuleName: "b", VersionCode: 1, LastUpdateSeconds: 5, IsActive: true, ProvideSharedApexLibs: true, ModulePath: "/2"},
			{ModuleName: "a", VersionCode: 7, LastUpdateSeconds: 5, ProvideSharedApexLibs: true, ModulePath: "/3"},
			{ModuleName: "b", VersionCode: 0, LastUpdateSeconds: 99, ProvideSharedApexLibs: true, ModulePath: "/4"},
			{ModuleName: "b", VersionCode: 1, LastUpdateSeconds: 5, ProvideSharedApexLibs: true, ModulePath: "/5"},
		}
		got, err := Android13.SelectApexes(nil, list, DebugNone)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, a := range got {
			paths = append(paths, a.ModulePath)
		}
		if want := []string{"/3", "/4", "/2", "/5", "/1"}; !reflect.DeepEqual(paths, want) {
			t.Errorf("order %v, want %v", paths, want)
		}
	})

	for _, tc := range []struct {
		name    string
		profile Profile
		config  []string
		list    []ApexInfo
		say     string
		is      error
	}{
		{"android12: config APEX only inactive", Android12, []string{"com.vmfs.other"},
			[]ApexInfo{{ModuleName: "com.vmfs.other", ModulePath: "/x"}}, "com.vmfs.other: no active entry", ErrNotFound},
		{"android13: config APEX missing", Android13, []string{"com.vmfs.none"}, apexList, "com.vmfs.none", ErrNotFound},
		{"android13: {CLASSPATH}", Android13, []string{"{CLASSPATH}"}, apexList, "derive_classpath", nil},
		{"android15: vendor APEX", Android15, []string{"com.vmfs.vendor"},
			[]ApexInfo{{ModuleName: "com.vmfs.vendor", ModulePath: "/vendor/apex/v.apex", PreinstalledModulePath: "/vendor/apex/v.apex", IsActive: true}},
			`preinstalled at "/vendor/apex/v.apex", not under /system or /system_ext`, nil},
		{"android15: /systemx is not /system", Android15, []string{"com.vmfs.x"},
			[]ApexInfo{{ModuleName: "com.vmfs.x", ModulePath: "/systemx/x.apex", PreinstalledModulePath: "/systemx/x.apex", IsActive: true}},
			"not under /system", nil},
		{"android15: relative preinstalled path", Android15, []string{"com.vmfs.x"},
			[]ApexInfo{{ModuleName: "com.vmfs.x", ModulePath: "/x.apex", PreinstalledModulePath: "system/x.apex", IsActive: true}},
			"not under /system", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.profile.SelectApexes(tc.config, tc.list, DebugNone)
			if err == nil || !strings.Contains(err.Error(), tc.say) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("got %+v, %v; want an error saying %q", got, err, tc.say)
			}
		})
	}

	t.Run("android15 passes what it cannot check", func(t *testing.T) {
		list := []ApexInfo{{ModuleName: "com.vmfs.dir", ModulePath: "/home/u/com.vmfs.dir.apex", IsActive: true}}
		if _, err := Android15.SelectApexes([]string{"com.vmfs.dir"}, list, DebugNone); err != nil {
			t.Error(err)
		}
	})
	t.Run("android12: {CLASSPATH} is a name like any", func(t *testing.T) {
		list := []ApexInfo{{ModuleName: "{CLASSPATH}", ModulePath: "/x", IsActive: true}}
		if _, err := Android12.SelectApexes([]string{"{CLASSPATH}"}, list, DebugNone); err != nil {
			t.Error(err)
		}
	})
}

func TestApexNames(t *testing.T) {
	for _, tc := range []struct {
		profile Profile
		debug   DebugLevel
		want    []string
	}{
		{Android12, DebugFull, []string{"com.vmfs.edge", "com.android.os.statsd"}},
		{Android13, DebugNone, []string{"com.vmfs.edge", "com.android.os.statsd"}},
		{Android14, DebugFull, []string{"com.vmfs.edge", "com.android.os.statsd", "com.android.adbd"}},
		{Android15, DebugNone, []string{"com.vmfs.edge", "com.android.os.statsd"}},
		{Android15, DebugFull, []string{"com.vmfs.edge", "com.android.os.statsd", "com.android.adbd"}},
	} {
		got := tc.profile.ApexNames([]string{"com.vmfs.edge", "com.android.os.statsd"}, tc.debug)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s at debug %s: %v, want %v", tc.profile, tc.debug, got, tc.want)
		}
	}
}

// TestApexResolverEntries: the list's entries with absolute paths, then directory finds
// for names without an active entry.
func TestApexResolverEntries(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		return writeFile(t, p, []byte("apex"))
	}
	mk("list/a.apex")
	inDir := mk("dir/com.c.apex")
	mk("dir/com.a.apex") // shadowed by the list's active entry
	list := writeFile(t, filepath.Join(root, "list", "apex-info-list.xml"), []byte(`<apex-info-list>
		<apex-info moduleName="com.a" modulePath="a.apex" isActive="true" versionCode="3" lastUpdateMillis="1700000000" isFactory="false"/>
		<apex-info moduleName="com.c" modulePath="/gone/c.apex" isActive="false"/>
		</apex-info-list>`))
	got, err := ApexResolver{InfoList: list, Dirs: []string{filepath.Join(root, "dir")}}.Entries([]string{"com.a", "com.c", "com.none"})
	if err != nil {
		t.Fatal(err)
	}
	want := []ApexInfo{
		{ModuleName: "com.a", ModulePath: filepath.Join(root, "list", "a.apex"), VersionCode: 3, LastUpdateSeconds: 1700000000, IsActive: true},
		{ModuleName: "com.c", ModulePath: "/gone/c.apex"},
		{ModuleName: "com.c", ModulePath: inDir, IsFactory: true, IsActive: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := (ApexResolver{Dirs: []string{root}}).Entries([]string{"../x"}); err == nil {
		t.Error("an invalid name was searched for")
	}
	bad := writeFile(t, filepath.Join(root, "bad.xml"), []byte("<apex-info-list>"))
	if _, err := (ApexResolver{InfoList: bad}).Entries(nil); err == nil {
		t.Error("a malformed list was taken")
	}
}

func TestProfileExtraApks(t *testing.T) {
	cfg := &PayloadConfig{ExtraApks: []ApkConfig{{Path: "extra-0.apk"}, {Path: "/abs/extra-1.apk"}}}
	fromCfg := []string{"/apps/extra-0.apk", "/abs/extra-1.apk"}
	for _, tc := range []struct {
		name    string
		profile Profile
		cfg     *PayloadConfig
		flagged []string
		idsigs  int
		want    []string
		say     string // when want is nil
	}{
		{"android12 has none", Android12, cfg, nil, 0, nil, ""},
		{"android12 refuses idsigs", Android12, cfg, nil, 2, nil, "0 extra apks but 2 extra idsigs"},
		{"android13 config, relative to the apk", Android13, cfg, nil, 2, fromCfg, ""},
		{"android13 count mismatch", Android13, cfg, nil, 1, nil, "2 extra apks but 1 extra idsigs"},
		{"android15 config and flags", Android15, cfg, []string{"x.apk"}, 2, nil, "--extra-apk goes with a payload binary name"},
		{"android14 binary name: none", Android14, nil, nil, 0, nil, ""},
		{"android14 --extra-apk", Android14, nil, []string{"x.apk"}, 1, nil, "--extra-apk needs android15"},
		{"android15 --extra-apk", Android15, nil, []string{"x.apk", "y.apk"}, 2, []string{"x.apk", "y.apk"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.profile.ExtraApks("/apps/app.apk", tc.cfg, tc.flagged, tc.idsigs)
			if tc.say != "" {
				if err == nil || !strings.Contains(err.Error(), tc.say) {
					t.Fatalf("got %v, %v; want an error saying %q", got, err, tc.say)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
