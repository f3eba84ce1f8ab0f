package metadata

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// classpathPseudoName stands in a payload config for every APEX that puts a jar on a
// classpath, which virtualizationservice learns by running derive_classpath.
const classpathPseudoName = "{CLASSPATH}"

// systemPartitions are where Android 15 lets payload APEXes be preinstalled.
var systemPartitions = []string{"/system", "/system_ext"}

// ApexNames lists the APEXes that may go on the disk at profile p for a payload config
// asking for config at debug level debug: the config's, then those the release requires
// and, unless debug is none, those it needs for debugging. It is what to ask
// ApexResolver.Entries for.
func (p Profile) ApexNames(config []string, debug DebugLevel) []string {
	f := p.facts()
	names := slices.Clone(config)
	if !f.apexesFromInfoList {
		return names
	}
	more := f.requiredApexes
	if debug != DebugNone {
		more = append(slices.Clone(more), f.debugApexes...)
	}
	for _, n := range more {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// SelectApexes returns the APEXes that go on the payload disk, in partition order, chosen
// from the apex-info-list entries list (in list order, as ApexResolver.Entries returns
// them) for a payload config asking for config, at debug level debug, as profile p's
// virtualizationservice chooses them (payload.rs collect_apex_infos):
//
//   - android12: the first active entry of each config name, in config order.
//   - android13 and later: each entry that is active and named by ApexNames, and each
//     entry that provides shared APEX libs, active or not; then a stable sort by (name,
//     version, last update). An entry is taken once, so a name the config lists that
//     the release also requires gives one partition.
//   - android15 also refuses an entry preinstalled outside /system and /system_ext.
//     An entry whose preinstalled path is unknown (the list lacks it, or the APEX was
//     found in a directory) is let through: a Linux host cannot tell.
//
// A config name with no active entry is an error wrapping ErrNotFound: Android leaves it
// out, but on a host it is an input that is missing. A required or debug APEX that list
// lacks is left out, as Android would (a Linux host need not have it). From android13
// on, the pseudo-name "{CLASSPATH}" is refused: it needs derive_classpath, which only
// runs on Android.
func (p Profile) SelectApexes(config []string, list []ApexInfo, debug DebugLevel) ([]ApexInfo, error) {
	f := p.facts()
	for _, name := range config {
		if name == classpathPseudoName && f.apexesFromInfoList {
			return nil, fmt.Errorf("apex %s: %s cannot run derive_classpath on this host to find the APEXes it names", name, p)
		}
		if !slices.ContainsFunc(list, func(a ApexInfo) bool { return a.IsActive && a.ModuleName == name }) {
			return nil, fmt.Errorf("apex %s: no active entry: %w", name, ErrNotFound)
		}
	}
	if !f.apexesFromInfoList {
		out := make([]ApexInfo, len(config))
		for i, name := range config {
			out[i] = list[slices.IndexFunc(list, func(a ApexInfo) bool { return a.IsActive && a.ModuleName == name })]
		}
		return out, nil
	}
	wanted := p.ApexNames(config, debug)
	var out []ApexInfo
	for _, a := range list {
		if a.IsActive && slices.Contains(wanted, a.ModuleName) || a.ProvideSharedApexLibs {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b ApexInfo) int {
		return cmp.Or(cmp.Compare(a.ModuleName, b.ModuleName), cmp.Compare(a.VersionCode, b.VersionCode),
			cmp.Compare(a.LastUpdateSeconds, b.LastUpdateSeconds))
	})
	if f.systemApexesOnly {
		for _, a := range out {
			if a.PreinstalledModulePath == "" {
				continue
			}
			if !slices.ContainsFunc(systemPartitions, func(dir string) bool { return pathUnder(a.PreinstalledModulePath, dir) }) {
				return nil, fmt.Errorf("apex %s: preinstalled at %q, not under %s: %s takes only system APEXes",
					a.ModuleName, a.PreinstalledModulePath, strings.Join(systemPartitions, " or "), p)
			}
		}
	}
	return out, nil
}

// pathUnder reports whether path is dir or inside it, element by element as Rust's
// Path::starts_with compares ("/systemx" is not under "/system").
func pathUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && filepath.IsAbs(path) && rel != ".." && !strings.HasPrefix(rel, "../")
}

// ExtraApks returns the extra APKs of a payload at profile p and checks them against the
// number of extra idsigs given (`vm run-app --extra-idsig`). With a payload config file
// (cfg non-nil) they are its extra_apks, and a relative path is taken relative to the
// directory of the APK at apk (a vmfs extension: on a device the paths are absolute).
// With a payload binary name (cfg nil) they are flagged (`--extra-apk`, android15).
// At android12, which has no extra APKs, a config's extra_apks are not read.
func (p Profile) ExtraApks(apk string, cfg *PayloadConfig, flagged []string, idsigs int) ([]string, error) {
	f := p.facts()
	var paths []string
	switch {
	case cfg != nil && len(flagged) > 0:
		return nil, fmt.Errorf("%s: extra apks come from the payload config's extra_apks; --extra-apk goes with a payload binary name", p)
	case cfg != nil && f.extraApks:
		for _, a := range cfg.ExtraApks {
			path := a.Path
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(apk), path)
			}
			paths = append(paths, path)
		}
	case cfg == nil && len(flagged) > 0 && !f.extraApkCount:
		return nil, fmt.Errorf("%s: --extra-apk needs android15", p)
	case cfg == nil:
		paths = slices.Clone(flagged)
	}
	if len(paths) != idsigs {
		return nil, fmt.Errorf("%s: %d extra apks but %d extra idsigs; give one --extra-idsig per extra apk", p, len(paths), idsigs)
	}
	return paths, nil
}
