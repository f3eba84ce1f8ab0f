package main

import (
	"fmt"
	"slices"
	"strings"

	"vmfs/metadata"
)

// release is what Microdroid of one Android release expects of its payload disk
// (formats-later.md). The guest writes it out itself rather than asking the host's
// metadata.Profile, so that a host that drifts from Microdroid fails a check.
type release struct {
	profile       metadata.Profile
	metadataLabel string
	// sizeTrailer: apexd reads the APEX size from the partition's last 4 bytes
	// (mid-2021); later apexd opens the partition itself as the zip.
	sizeTrailer bool
	// apexPartitionNames: each ApexPayload names its partition, microdroid-apex-<i>;
	// before, the host left partition_name empty.
	apexPartitionNames bool
	// addsApexes: the host adds APEXes the config does not ask for (required, debug,
	// shared libs) and sorts them; before, the disk holds the config's, in its order.
	addsApexes    bool
	extraApks     bool // extra-apk-<i>/extra-idsig-<i> partitions may follow the APK's
	binaryName    bool // the metadata may name the payload binary instead of a config file
	extraApkCount bool // ... and count the extra APKs
}

var releases = []release{
	{profile: metadata.Android12, metadataLabel: "metadata", sizeTrailer: true},
	{profile: metadata.Android13, metadataLabel: "payload-metadata", apexPartitionNames: true, addsApexes: true, extraApks: true},
	{profile: metadata.Android14, metadataLabel: "payload-metadata", apexPartitionNames: true, addsApexes: true, extraApks: true,
		binaryName: true},
	{profile: metadata.Android15, metadataLabel: "payload-metadata", apexPartitionNames: true, addsApexes: true, extraApks: true,
		binaryName: true, extraApkCount: true},
}

// metadataLabels are the labels the metadata partition may have, oldest first.
func metadataLabels() []string {
	var out []string
	for _, r := range releases {
		if !slices.Contains(out, r.metadataLabel) {
			out = append(out, r.metadataLabel)
		}
	}
	return out
}

// profileParam is the kernel parameter naming the profile, for what the metadata cannot
// tell: Android 13, 14 and 15 write the same metadata for a payload config file.
const profileParam = "vmfs.profile="

// fits says why the metadata m, read from the partition labelled label, is not what
// the release's host writes, or nil when it is.
func (r release) fits(label string, m *metadata.Metadata) error {
	if label != r.metadataLabel {
		return fmt.Errorf("the metadata partition is %s, %s's is %s", label, r.profile, r.metadataLabel)
	}
	for i, a := range m.GetApexes() {
		want := ""
		if r.apexPartitionNames {
			want = metadata.ApexLabel(i)
		}
		if a.GetPartitionName() != want {
			return fmt.Errorf("apex %d (%s) has partition_name %q, %s's host writes %q", i, a.GetName(), a.GetPartitionName(), r.profile, want)
		}
	}
	if c := m.GetConfig(); c != nil {
		if !r.binaryName {
			return fmt.Errorf("the payload is a binary name, which %s's host does not write", r.profile)
		}
		if c.GetExtraApkCount() > 0 && !r.extraApkCount {
			return fmt.Errorf("the payload counts %d extra apks, which %s's host does not write", c.GetExtraApkCount(), r.profile)
		}
	}
	return nil
}

// releasesFor returns the releases whose host writes metadata m under label, oldest
// first, narrowed to the one the kernel command line names with vmfs.profile= if any.
func releasesFor(label string, m *metadata.Metadata, cmdline string) ([]release, error) {
	var fit []release
	var why []string
	for _, r := range releases {
		if err := r.fits(label, m); err != nil {
			why = append(why, err.Error())
			continue
		}
		fit = append(fit, r)
	}
	named := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, profileParam); ok {
			named = v
		}
	}
	if named != "" {
		p, err := metadata.ParseProfile(named)
		if err != nil {
			return nil, fmt.Errorf("kernel parameter %s%s: %w", profileParam, named, err)
		}
		i := slices.IndexFunc(fit, func(r release) bool { return r.profile == p })
		if i < 0 {
			return nil, fmt.Errorf("the kernel names %s, but the disk is not %s's: %s", p, p, strings.Join(why, "; "))
		}
		return fit[i : i+1], nil
	}
	if len(fit) == 0 {
		return nil, fmt.Errorf("no release writes this metadata: %s", strings.Join(why, "; "))
	}
	return fit, nil
}

// profileNames names releases for the verdict: one profile, or those the disk could be.
func profileNames(rs []release) string {
	var names []string
	for _, r := range rs {
		names = append(names, r.profile.String())
	}
	return strings.Join(names, "|")
}
