// Package sampledisk lays out the payload disk of the committed samples at a profile, the
// way vmfs puts metadata and layout together: the Android 12 sample (app/) at android12,
// the Android 13+ one (later/) at the later profiles. Tests of layout, of the test guest
// and of what serves disks share it, so that they check one disk.
package sampledisk

import (
	"cmp"
	"fmt"
	"os"

	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// Options choose the disk.
type Options struct {
	Profile metadata.Profile
	// Debug is `--debug`; empty means the profile's default.
	Debug metadata.DebugLevel
	// BinaryName names the payload by testdata.PayloadBinaryName instead of its config
	// path (android14+). As Android does then, the config's APEXes and extra APKs are not
	// read; at android15 the sample's extra APKs are passed as `--extra-apk`.
	BinaryName bool
	// Replace reads a source from another file, by the fixture's path: a damaged copy.
	Replace map[string]string
}

// Disk is the laid-out disk with what went into it.
type Disk struct {
	*layout.Disk
	Metadata  *metadata.Metadata
	Apexes    []metadata.ApexInfo // in partition order
	ExtraApks int                 // how many extra APKs follow the APK
}

// New lays out the sample's payload disk with o.
func New(o Options) (*Disk, error) {
	p := o.Profile
	debug, err := p.ParseDebugLevel(string(o.Debug))
	if err != nil {
		return nil, err
	}
	apk, idsig, list := testdata.LaterAPKPath(), testdata.LaterIdsigPath(), testdata.LaterAPEXInfoListPath()
	if p == metadata.Android12 {
		apk, idsig, list = testdata.APKPath(), testdata.IdsigPath(), testdata.APEXInfoListPath()
	}
	var extraIdsigs, flagged []string
	if p != metadata.Android12 {
		for _, e := range testdata.LaterExtraAPKs() {
			extraIdsigs = append(extraIdsigs, e.Idsig)
			flagged = append(flagged, e.APK)
		}
	}
	spec := metadata.PayloadSpec{ConfigPath: testdata.ConfigPath}
	var cfg *metadata.PayloadConfig
	var names []string
	if o.BinaryName {
		spec = metadata.PayloadSpec{BinaryName: testdata.PayloadBinaryName}
		if p != metadata.Android15 {
			flagged, extraIdsigs = nil, nil
		}
	} else {
		if cfg, err = p.ReadPayloadConfig(apk, testdata.ConfigPath); err != nil {
			return nil, err
		}
		for _, a := range cfg.Apexes {
			names = append(names, a.Name)
		}
		flagged = nil
	}
	extras, err := p.ExtraApks(apk, cfg, flagged, len(extraIdsigs))
	if err != nil {
		return nil, err
	}
	entries, err := metadata.ApexResolver{InfoList: list}.Entries(p.ApexNames(names, debug))
	if err != nil {
		return nil, err
	}
	d := &Disk{}
	if d.Apexes, err = p.SelectApexes(names, entries, debug); err != nil {
		return nil, err
	}
	d.ExtraApks = len(extras)
	spec.Apexes, spec.ExtraApks = d.Apexes, d.ExtraApks
	if d.Metadata, err = p.NewMetadata(spec); err != nil {
		return nil, err
	}
	lp := layout.Payload{Format: layout.Format{MetadataLabel: p.MetadataLabel(), ZeroPadApexes: p.ZeroPadApexes()}}
	if lp.Metadata, err = metadata.EncodeMetadata(d.Metadata); err != nil {
		return nil, err
	}
	var statErr error
	source := func(path string) layout.Source {
		if r, ok := o.Replace[path]; ok {
			path = r
		}
		st, err := os.Stat(path)
		if err != nil {
			statErr = cmp.Or(statErr, err)
			return layout.Source{Path: path}
		}
		return layout.Source{Path: path, Size: st.Size()}
	}
	for _, a := range d.Apexes {
		lp.Apexes = append(lp.Apexes, source(a.ModulePath))
	}
	lp.APK, lp.Idsig = source(apk), source(idsig)
	for i, e := range extras {
		lp.Extra = append(lp.Extra, layout.ExtraAPK{APK: source(e), Idsig: source(extraIdsigs[i])})
	}
	if statErr != nil {
		return nil, statErr
	}
	if d.Disk, err = layout.PayloadDisk(lp, layout.Options{}); err != nil {
		return nil, fmt.Errorf("%s payload disk of %s: %w", p, apk, err)
	}
	return d, nil
}
