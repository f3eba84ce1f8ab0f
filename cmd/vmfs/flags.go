package main

import (
	"github.com/spf13/pflag"

	"vmfs"
	"vmfs/metadata"
)

// specFlags are the flags of every command that resolves a payload.
type specFlags struct {
	apexDirs     []string
	apexInfoList string
	osDir        string
	randomGUIDs  bool
	flags        *pflag.FlagSet
}

func (f *specFlags) register(fs *pflag.FlagSet) {
	f.registerSources(fs)
	fs.BoolVar(&f.randomGUIDs, "random-guids", false, "fresh random disk and partition GUIDs, as Android does (default: derived from the inputs)")
}

// sourceFlags name where APEXes and OS configs are found.
var sourceFlags = []string{"apex-dir", "apex-info-list", "os-dir"}

func (f *specFlags) registerSources(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringArrayVar(&f.apexDirs, "apex-dir", nil, "directory holding <name>.apex files (repeatable)")
	fs.StringVar(&f.apexInfoList, "apex-info-list", metadata.DefaultApexInfoList, "apex-info-list.xml mapping APEX names to files (the default is used when it exists; a list named here must exist)")
	fs.StringVar(&f.osDir, "os-dir", vmfs.DefaultOSDir, "directory holding <os>.json VM configs")
}

// clientSpec is the payload the command line names for a service, which finds
// APEXes and OS configs in its own sources: naming them here is a usage error.
func (f *specFlags) clientSpec(apk, idsig, configPath string) (vmfs.Spec, error) {
	for _, name := range sourceFlags {
		if f.flags.Changed(name) {
			return vmfs.Spec{}, usagef("--%s: a vmfs service finds APEXes and OS configs in its own sources (vmfs serve --%s)", name, name)
		}
	}
	return vmfs.Spec{APK: apk, Idsig: idsig, ConfigPath: configPath, RandomGUIDs: f.randomGUIDs}, nil
}

// spec is the payload the command line names.
func (f *specFlags) spec(apk, idsig, configPath string) vmfs.Spec {
	s := vmfs.Spec{
		APK: apk, Idsig: idsig, ConfigPath: configPath,
		ApexDirs: f.apexDirs, OSDir: f.osDir, RandomGUIDs: f.randomGUIDs,
	}
	if f.flags.Changed("apex-info-list") {
		s.ApexInfoList = f.apexInfoList
	}
	return s
}
