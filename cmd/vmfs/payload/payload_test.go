package payload

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

func fixtureInputs() Inputs {
	return Inputs{
		APK: testdata.APKPath(), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath,
		ApexInfoList: testdata.APEXInfoListPath(), RequireApexInfoList: true, OSDir: testdata.OSDir(),
	}
}

func TestResolveFixtures(t *testing.T) {
	p, err := Resolve(fixtureInputs())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, a := range testdata.APEXes() {
		if a.Active {
			want = append(want, testdata.Path(a.Rel))
		}
	}
	// The disk's sources are the APEXes in config order, then the APK and the idsig.
	var got []string
	for _, s := range p.Disk.Sources {
		got = append(got, s.Path)
	}
	if len(got) != len(want)+2 || got[len(got)-2] != testdata.APKPath() || got[len(got)-1] != testdata.IdsigPath() {
		t.Errorf("sources %v", got)
	}
	for _, path := range p.ApexPaths {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("apex %s: %v", path, err)
		}
	}
	m, err := metadata.DecodeMetadata(bytes.NewReader(p.MetadataBlob()))
	if err != nil || m.GetPayloadConfigPath() != "/mnt/apk/"+testdata.ConfigPath || len(m.GetApexes()) != len(p.ApexPaths) {
		t.Errorf("metadata %v, %v", m, err)
	}
	if p.Disk.Partitions[0].Label != layout.MetadataLabel || len(p.OSDisks) != 1 {
		t.Errorf("partition 1 %q, %d OS disks", p.Disk.Partitions[0].Label, len(p.OSDisks))
	}
}

func TestResolveInfoList(t *testing.T) {
	in := fixtureInputs()
	none := filepath.Join(t.TempDir(), "none.xml")
	in.ApexInfoList = none
	// A default list that does not exist is passed over; then no APEX is found...
	in.RequireApexInfoList = false
	if _, err := Resolve(in); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("absent default list: %v", err)
	}
	// ...unless a directory holds them.
	in.ApexDirs = []string{testdata.Path("apex")}
	if _, err := Resolve(in); err != nil {
		t.Errorf("apex dir: %v", err)
	}
	// One named on the command line must exist, though the directory would do.
	in.RequireApexInfoList = true
	_, err := Resolve(in)
	var ie *metadata.InputError
	if !errors.As(err, &ie) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), none) {
		t.Errorf("absent required list: %v, want an *InputError naming %s", err, none)
	}
}
