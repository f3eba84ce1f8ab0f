package metadata

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"vmfs/testdata"
)

func TestParseApexInfoList(t *testing.T) {
	t.Run("phone sample", func(t *testing.T) {
		f, err := os.Open("testdata/apex-info-list.xml")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := ParseApexInfoList(f.Name(), f)
		if err != nil {
			t.Fatal(err)
		}
		// lastUpdateMillis holds seconds on a device (apexd writes st_mtime); this
		// sample's value is kept as it is, whatever its unit.
		entry := func(name, path, pre string, version uint64, active bool) ApexInfo {
			return ApexInfo{ModuleName: name, ModulePath: path, PreinstalledModulePath: pre, VersionCode: version,
				LastUpdateSeconds: 1230768000000, IsFactory: true, IsActive: active}
		}
		want := []ApexInfo{
			entry("com.android.adbd", "/system/apex/com.android.adbd.capex", "/system/apex/com.android.adbd.capex", 330443000, false),
			entry("com.android.adbd", "/data/apex/decompressed/com.android.adbd@330443000.decompressed.apex", "/system/apex/com.android.adbd.capex", 330443000, true),
			entry("com.android.os.statsd", "/system/apex/com.android.os.statsd.apex", "/system/apex/com.android.os.statsd.apex", 330443000, true),
			entry("com.android.virt", "/system/apex/com.android.virt.apex", "/system/apex/com.android.virt.apex", 1, true),
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})

	for _, tc := range []struct {
		name string
		xml  string
		want []ApexInfo // nil: an error is expected
	}{
		{"empty list", `<apex-info-list/>`, []ApexInfo{}},
		{"booleans", `<apex-info-list>
			<apex-info moduleName="a" modulePath="/a" isActive="1"/>
			<apex-info moduleName="b" modulePath="/b" isActive=" false "/>
			<apex-info moduleName="c" modulePath="/c" isActive="0"/>
			<apex-info moduleName="d" modulePath="/d"/>
			</apex-info-list>`,
			[]ApexInfo{{ModuleName: "a", ModulePath: "/a", IsActive: true}, {ModuleName: "b", ModulePath: "/b"},
				{ModuleName: "c", ModulePath: "/c"}, {ModuleName: "d", ModulePath: "/d"}}},
		{"update attributes", `<apex-info-list>
			<apex-info moduleName="a" modulePath="/a" preinstalledModulePath="/system/a" versionCode=" 7 " lastUpdateMillis="1700000000" isFactory="false" isActive="true" provideSharedApexLibs="1"/>
			<apex-info moduleName="b" modulePath="/b" versionCode="18446744073709551615" lastUpdateMillis="0" isFactory="true"/>
			</apex-info-list>`,
			[]ApexInfo{
				{ModuleName: "a", ModulePath: "/a", PreinstalledModulePath: "/system/a", VersionCode: 7, LastUpdateSeconds: 1700000000,
					IsActive: true, ProvideSharedApexLibs: true},
				{ModuleName: "b", ModulePath: "/b", VersionCode: 1<<64 - 1, IsFactory: true},
			}},
		{"unknown elements and comments", `<!-- x --><apex-info-list><foo/><apex-info moduleName="a" modulePath="/a" isActive="true" newAttr="x"><bar/></apex-info></apex-info-list><!-- y -->`,
			[]ApexInfo{{ModuleName: "a", ModulePath: "/a", IsActive: true}}},

		{"empty input", ``, nil},
		{"not xml", `hello`, nil},
		{"wrong root", `<apex-infos><apex-info moduleName="a" modulePath="/a" isActive="true"/></apex-infos>`, nil},
		{"unclosed", `<apex-info-list><apex-info moduleName="a" modulePath="/a" isActive="true"/>`, nil},
		{"second root", `<apex-info-list/><apex-info-list/>`, nil},
		{"text after root", `<apex-info-list/>junk`, nil},
		{"missing moduleName", `<apex-info-list><apex-info modulePath="/a" isActive="true"/></apex-info-list>`, nil},
		{"empty moduleName", `<apex-info-list><apex-info moduleName="" modulePath="/a" isActive="true"/></apex-info-list>`, nil},
		{"missing modulePath", `<apex-info-list><apex-info moduleName="a" isActive="true"/></apex-info-list>`, nil},
		{"bad isActive", `<apex-info-list><apex-info moduleName="a" modulePath="/a" isActive="yes"/></apex-info-list>`, nil},
		{"bad isFactory", `<apex-info-list><apex-info moduleName="a" modulePath="/a" isFactory="no"/></apex-info-list>`, nil},
		{"bad provideSharedApexLibs", `<apex-info-list><apex-info moduleName="a" modulePath="/a" provideSharedApexLibs=""/></apex-info-list>`, nil},
		{"negative versionCode", `<apex-info-list><apex-info moduleName="a" modulePath="/a" versionCode="-1"/></apex-info-list>`, nil},
		{"lastUpdateMillis past u64", `<apex-info-list><apex-info moduleName="a" modulePath="/a" lastUpdateMillis="18446744073709551616"/></apex-info-list>`, nil},
		{"fractional lastUpdateMillis", `<apex-info-list><apex-info moduleName="a" modulePath="/a" lastUpdateMillis="1.5"/></apex-info-list>`, nil},
		{"undefined entity", `<apex-info-list><apex-info moduleName="&evil;" modulePath="/a" isActive="true"/></apex-info-list>`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseApexInfoList("list.xml", strings.NewReader(tc.xml))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				if !strings.Contains(err.Error(), "list.xml") {
					t.Errorf("error %q does not name the file", err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	t.Run("too large", func(t *testing.T) {
		big := "<apex-info-list>" + strings.Repeat("<!-- padding -->", maxApexInfoListSize/16+1) + "</apex-info-list>"
		if _, err := ParseApexInfoList("list.xml", strings.NewReader(big)); err == nil {
			t.Error("no error for an oversized list")
		}
	})
}

func TestApexResolver(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		return writeFile(t, p, []byte("apex"))
	}
	active := mk("data/com.a@2.apex")
	mk("system/com.a.apex")
	relActive := mk("list/rel/com.r.apex")
	dir1 := filepath.Join(root, "dir1")
	dir2 := filepath.Join(root, "dir2")
	inDir2 := mk("dir2/com.b.apex")
	mk("dir1/com.c.apex")
	inDir2c := mk("dir2/com.c.apex")
	if err := os.MkdirAll(filepath.Join(dir1, "com.d.apex"), 0o755); err != nil {
		t.Fatal(err)
	}
	inDir2d := mk("dir2/com.d.apex")
	list := writeFile(t, filepath.Join(root, "list", "apex-info-list.xml"), []byte(`<apex-info-list>
		<apex-info moduleName="com.a" modulePath="`+filepath.Join(root, "system/com.a.apex")+`" isActive="false"/>
		<apex-info moduleName="com.a" modulePath="`+active+`" isActive="true"/>
		<apex-info moduleName="com.r" modulePath="rel/com.r.apex" isActive="true"/>
		<apex-info moduleName="com.c" modulePath="/nonexistent/com.c.apex" isActive="false"/>
		</apex-info-list>`))
	bad := writeFile(t, filepath.Join(root, "bad.xml"), []byte(`<apex-info-list>`))

	withList := ApexResolver{InfoList: list, Dirs: []string{dir1, dir2}}
	for _, tc := range []struct {
		name     string
		resolver ApexResolver
		apex     string
		want     string
		is       error // when want is empty: nil means any error
	}{
		{"active entry wins", withList, "com.a", active, nil},
		{"relative modulePath against the list's directory", withList, "com.r", relActive, nil},
		{"inactive entry falls back to dirs in order", withList, "com.c", filepath.Join(dir1, "com.c.apex"), nil},
		{"second dir", withList, "com.b", inDir2, nil},
		{"directory named like an apex is skipped", withList, "com.d", inDir2d, nil},
		{"dirs only", ApexResolver{Dirs: []string{dir2}}, "com.c", inDir2c, nil},
		{"absent list file is ignored", ApexResolver{InfoList: filepath.Join(root, "none.xml"), Dirs: []string{dir2}}, "com.b", inDir2, nil},
		{"not found", withList, "com.x", "", ErrNotFound},
		{"nothing to search", ApexResolver{}, "com.a", "", ErrNotFound},
		{"invalid name", withList, "../etc/passwd", "", nil},
		{"empty name", withList, "", "", nil},
		{"malformed list", ApexResolver{InfoList: bad, Dirs: []string{dir2}}, "com.b", "", nil},
		{"list is a directory", ApexResolver{InfoList: root, Dirs: []string{dir2}}, "com.b", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.resolver.Resolve(tc.apex)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("no error, got %q", got)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %v is not %v", err, tc.is)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// An APEX that is there but is not a regular file is named with what it is, not
// reported as not found, whether a directory or the info list led to it.
func TestApexResolverUnusable(t *testing.T) {
	root := t.TempDir()
	fifo := filepath.Join(root, "com.fifo.apex")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "com.dir.apex")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(root, "com.dangling.apex")
	if err := os.Symlink(filepath.Join(root, "gone"), dangling); err != nil {
		t.Fatal(err)
	}
	list := writeFile(t, filepath.Join(root, "apex-info-list.xml"), []byte(`<apex-info-list>
		<apex-info moduleName="com.fifo" modulePath="com.fifo.apex" isActive="true"/>
		<apex-info moduleName="com.dir" modulePath="com.dir.apex" isActive="true"/>
		<apex-info moduleName="com.dangling" modulePath="com.dangling.apex" isActive="true"/>
		<apex-info moduleName="com.gone" modulePath="com.gone.apex" isActive="true"/>
		</apex-info-list>`))
	byDir, byList := ApexResolver{Dirs: []string{root}}, ApexResolver{InfoList: list}
	for _, tc := range []struct {
		name     string
		resolver ApexResolver
		apex     string
		say      []string // besides the APEX name
	}{
		{"FIFO in a dir", byDir, "com.fifo", []string{fifo + ": a FIFO (named pipe), not a regular file"}},
		{"FIFO in the list", byList, "com.fifo", []string{list, fifo + ": a FIFO (named pipe), not a regular file"}},
		{"directory in a dir", byDir, "com.dir", []string{dir + ": a directory, not a regular file"}},
		{"directory in the list", byList, "com.dir", []string{list, dir + ": a directory, not a regular file"}},
		{"dangling symlink in a dir", byDir, "com.dangling", []string{dangling, "dangling symlink to " + filepath.Join(root, "gone")}},
		{"dangling symlink in the list", byList, "com.dangling", []string{list, dangling, "dangling symlink to " + filepath.Join(root, "gone")}},
		{"missing file in the list", byList, "com.gone", []string{list, filepath.Join(root, "com.gone.apex"), "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.resolver.Resolve(tc.apex)
			if err == nil {
				t.Fatalf("no error, got %q", got)
			}
			if errors.Is(err, ErrNotFound) {
				t.Errorf("%v: says not found", err)
			}
			for _, s := range append(tc.say, "apex "+tc.apex) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%v: does not say %q", err, s)
				}
			}
		})
	}
}

// Relative Dirs give absolute results.
func TestApexResolverRelativeDir(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "com.a.apex"), []byte("apex"))
	t.Chdir(root)
	got, err := ApexResolver{Dirs: []string{"."}}.Resolve("com.a")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "com.a.apex"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// The shared fixture list resolves to existing files.
func TestApexResolverSharedFixture(t *testing.T) {
	list := testdata.APEXInfoListPath()
	got, err := ApexResolver{InfoList: list}.Resolve("com.android.adbd")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(got); err != nil || !st.Mode().IsRegular() {
		t.Errorf("resolved %q: %v", got, err)
	}
	if filepath.Base(filepath.Dir(got)) == "factory" {
		t.Errorf("resolved the inactive factory entry %q", got)
	}
}
