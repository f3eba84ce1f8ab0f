package vmfs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmfs/metadata"
	"vmfs/testdata"
)

func fixtureSpec() Spec {
	return Spec{
		APK: testdata.APKPath(), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath,
		ApexInfoList: testdata.APEXInfoListPath(), OSDir: testdata.OSDir(),
	}
}

func TestResolveFixtures(t *testing.T) {
	p, err := Resolve(context.Background(), fixtureSpec())
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
	for _, path := range p.ApexPaths() {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("apex %s: %v", path, err)
		}
	}
	m, err := metadata.DecodeMetadata(bytes.NewReader(p.MetadataBlob()))
	if err != nil || m.GetPayloadConfigPath() != "/mnt/apk/"+testdata.ConfigPath || len(m.GetApexes()) != len(p.Apexes) {
		t.Errorf("metadata %v, %v", m, err)
	}
	if p.Disk.Partitions[0].Label != metadata.Android12.MetadataLabel() || len(p.OSDisks) != 1 {
		t.Errorf("partition 1 %q, %d OS disks", p.Disk.Partitions[0].Label, len(p.OSDisks))
	}
}

func TestResolveInfoList(t *testing.T) {
	ctx := context.Background()
	in := fixtureSpec()
	// The default list is passed over where it does not exist (a host without
	// /apex); then no APEX is found...
	in.ApexInfoList = ""
	if _, err := os.Stat(metadata.DefaultApexInfoList); errors.Is(err, fs.ErrNotExist) {
		if _, err := Resolve(ctx, in); !errors.Is(err, metadata.ErrNotFound) || !errors.Is(err, ErrInput) {
			t.Errorf("absent default list: %v", err)
		}
	}
	// ...unless a directory holds them.
	in.ApexDirs = []string{testdata.Path("apex")}
	if _, err := Resolve(ctx, in); err != nil {
		t.Errorf("apex dir: %v", err)
	}
	// One named must exist, though the directory would do.
	none := filepath.Join(t.TempDir(), "none.xml")
	in.ApexInfoList = none
	_, err := Resolve(ctx, in)
	var ie *metadata.InputError
	if !errors.As(err, &ie) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), none) {
		t.Errorf("absent named list: %v, want an *InputError naming %s", err, none)
	}
}
