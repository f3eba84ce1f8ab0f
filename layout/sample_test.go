package layout_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"testing"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// sampleAndroid12SHA256 is the sha256 of the android12 flat image of the committed sample
// (its active APEXes in config order, sample.apk and its idsig, metadata as the seed host
// writes it, derived GUIDs). It was recorded before the later profiles were added: the
// default disk must stay byte for byte what it was.
const sampleAndroid12SHA256 = "885e8c545172e8587c499282d2765a2b232b2b9bf0986414e9e1868524953d84"

func TestSampleAndroid12Unchanged(t *testing.T) {
	source := func(path string) layout.Source {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return layout.Source{Path: path, Size: st.Size()}
	}
	var p layout.Payload
	var names []string
	for _, a := range testdata.APEXes() {
		if a.Active {
			p.Apexes = append(p.Apexes, source(testdata.Path(a.Rel)))
			names = append(names, a.Name)
		}
	}
	var err error
	if p.Metadata, err = metadata.EncodeMetadata(metadata.NewPayloadMetadata(testdata.ConfigPath, names)); err != nil {
		t.Fatal(err)
	}
	p.APK, p.Idsig = source(testdata.APKPath()), source(testdata.IdsigPath())
	d, err := layout.PayloadDisk(p, layout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var srcs []io.ReaderAt
	for _, s := range d.Sources {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		srcs = append(srcs, f)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(layout.NewReader(&d.Flat, srcs), 0, d.Flat.Size)); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sampleAndroid12SHA256 {
		t.Errorf("android12 sample image (%d bytes) has sha256 %s, want %s", d.Flat.Size, got, sampleAndroid12SHA256)
	}
}
