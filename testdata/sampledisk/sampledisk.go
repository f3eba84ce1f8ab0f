// Package sampledisk is the payload disk of the committed samples at a profile, laid
// out by vmfs.Resolve: the Android 12 sample (app/) at android12, the Android 13+ one
// (later/, with its two extra APKs) at the later profiles. Tests of layout, of the test
// guest and of what serves disks share it, so that they check one disk.
package sampledisk

import (
	"context"

	"vmfs"
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
	// Replace reads the APK or a `--extra-apk` from another file, by the fixture's
	// path: a damaged copy.
	Replace map[string]string
}

// Disk is the laid-out disk with what went into it.
type Disk struct {
	*layout.Disk
	Metadata  *metadata.Metadata
	Apexes    []metadata.ApexInfo // in partition order
	ExtraApks int                 // how many extra APKs follow the APK
}

// Spec is the sample payload with o, as the vmfs command line would name it.
func Spec(o Options) vmfs.Spec {
	replaced := func(path string) string {
		if r, ok := o.Replace[path]; ok {
			return r
		}
		return path
	}
	s := vmfs.Spec{
		Profile: o.Profile, Debug: string(o.Debug), OSDir: testdata.OSDir(), ConfigPath: testdata.ConfigPath,
		APK: replaced(testdata.APKPath()), Idsig: testdata.IdsigPath(), ApexInfoList: testdata.APEXInfoListPath(),
	}
	if o.Profile == metadata.Android12 {
		return s
	}
	s.APK, s.Idsig, s.ApexInfoList = replaced(testdata.LaterAPKPath()), testdata.LaterIdsigPath(), testdata.LaterAPEXInfoListPath()
	if o.BinaryName {
		s.ConfigPath, s.PayloadBinaryName = "", testdata.PayloadBinaryName
	}
	for _, e := range testdata.LaterExtraAPKs() {
		switch {
		case !o.BinaryName:
			s.ExtraIdsigs = append(s.ExtraIdsigs, e.Idsig)
		case o.Profile == metadata.Android15:
			s.ExtraAPKs = append(s.ExtraAPKs, replaced(e.APK))
			s.ExtraIdsigs = append(s.ExtraIdsigs, e.Idsig)
		}
	}
	return s
}

// New lays out the sample's payload disk with o.
func New(o Options) (*Disk, error) {
	p, err := vmfs.Resolve(context.Background(), Spec(o))
	if err != nil {
		return nil, err
	}
	return &Disk{Disk: p.Disk, Metadata: p.Metadata, Apexes: p.Apexes, ExtraApks: len(p.ExtraAPKs)}, nil
}
