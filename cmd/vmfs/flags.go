package main

import (
	"github.com/spf13/pflag"

	"vmfs"
	"vmfs/metadata"
)

// specFlags are the flags of every command that resolves a payload.
type specFlags struct {
	profile           string
	debug             string
	payloadBinaryName string
	extraIdsigs       []string
	extraAPKs         []string
	apexDirs          []string
	apexInfoList      string
	osDir             string
	randomGUIDs       bool
	flags             *pflag.FlagSet
}

func (f *specFlags) register(fs *pflag.FlagSet) {
	f.registerSources(fs)
	fs.StringVar(&f.profile, "profile", metadata.Android12.String(), "the Android release whose payload disk to build: android12 (mid-2021), android13, android14 or android15")
	fs.StringVar(&f.debug, "debug", "", "debug level, as vm run-app's --debug: none, app_only or full (android13+; default: the release's)")
	fs.StringVar(&f.payloadBinaryName, "payload-binary-name", "", "name the payload by a binary in the APK's lib/<abi>/ instead of a config path, which is then left out (android14+)")
	fs.StringArrayVar(&f.extraIdsigs, "extra-idsig", nil, "idsig of an extra APK, in order (repeatable; android13+)")
	fs.StringArrayVar(&f.extraAPKs, "extra-apk", nil, "an extra APK, with --payload-binary-name (repeatable; android15)")
	fs.BoolVar(&f.randomGUIDs, "random-guids", false, "fresh random disk and partition GUIDs, as Android does (default: derived from the inputs)")
}

// sourceFlags name where APEXes and OS configs are found.
var sourceFlags = []string{"apex-dir", "apex-info-list", "os-dir"}

// profileFlags pick a later Android's payload, which a service does not build yet.
var profileFlags = []string{"profile", "debug", "payload-binary-name", "extra-idsig", "extra-apk"}

func (f *specFlags) registerSources(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringArrayVar(&f.apexDirs, "apex-dir", nil, "directory holding <name>.apex files (repeatable)")
	fs.StringVar(&f.apexInfoList, "apex-info-list", metadata.DefaultApexInfoList, "apex-info-list.xml mapping APEX names to files (the default is used when it exists; a list named here must exist)")
	fs.StringVar(&f.osDir, "os-dir", vmfs.DefaultOSDir, "directory holding <os>.json VM configs")
}

// clientSpec is the payload the command line names for a service, which finds
// APEXes and OS configs in its own sources: naming them here is a usage error.
func (f *specFlags) clientSpec(args []string) (vmfs.Spec, error) {
	for _, name := range sourceFlags {
		if f.flags.Changed(name) {
			return vmfs.Spec{}, usagef("--%s: a vmfs service finds APEXes and OS configs in its own sources (vmfs serve --%s)", name, name)
		}
	}
	for _, name := range profileFlags {
		if f.flags.Changed(name) {
			return vmfs.Spec{}, usagef("--%s: a vmfs service builds android12 payloads only so far; run the command without a service", name)
		}
	}
	return vmfs.Spec{APK: args[0], Idsig: args[1], ConfigPath: args[2], RandomGUIDs: f.randomGUIDs}, nil
}

// payloadArgs is how many positional arguments name the payload: the APK, the
// idsig and the config path, which a payload binary name replaces.
func (f *specFlags) payloadArgs() int {
	if f.payloadBinaryName != "" {
		return 2
	}
	return 3
}

// spec is the payload the command line names in args (payloadArgs of them).
func (f *specFlags) spec(args []string) (vmfs.Spec, error) {
	prof, err := metadata.ParseProfile(f.profile)
	if err != nil {
		return vmfs.Spec{}, usagef("--profile: %v", err)
	}
	s := vmfs.Spec{
		Profile: prof, APK: args[0], Idsig: args[1], PayloadBinaryName: f.payloadBinaryName,
		ExtraIdsigs: f.extraIdsigs, ExtraAPKs: f.extraAPKs, Debug: f.debug,
		ApexDirs: f.apexDirs, OSDir: f.osDir, RandomGUIDs: f.randomGUIDs,
	}
	if f.payloadBinaryName == "" {
		s.ConfigPath = args[2]
	}
	if f.flags.Changed("apex-info-list") {
		s.ApexInfoList = f.apexInfoList
	}
	return s, nil
}
