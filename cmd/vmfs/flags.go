package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"vmfs"
	"vmfs/metadata"
)

// specFlags are the flags of every command that resolves a payload.
type specFlags struct {
	profile           string
	debug             string
	payloadBinaryName string
	configPath        string
	storage           string
	storageSize       string
	instanceIDFile    string
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
	fs.StringVar(&f.payloadBinaryName, "payload-binary-name", "", "name the payload by a binary in the APK's lib/<abi>/ instead of a config path (android14+)")
	fs.StringVar(&f.configPath, "config-path", "", "the payload config inside the APK (android14+, where it is no argument)")
	fs.StringVar(&f.storage, "storage", "", "encrypted storage image, made when missing (android14+)")
	fs.StringVar(&f.storageSize, "storage-size", "", "size a missing --storage is made at: bytes, or K, M, G (default 10M)")
	fs.StringVar(&f.instanceIDFile, "instance-id-file", "", "file holding the VM's 64-byte instance ID, made when missing (android15)")
	fs.StringArrayVar(&f.extraIdsigs, "extra-idsig", nil, "idsig of an extra APK, in order (repeatable; android13+)")
	fs.StringArrayVar(&f.extraAPKs, "extra-apk", nil, "an extra APK, with --payload-binary-name (repeatable; android15)")
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
func (f *specFlags) clientSpec(args []string) (vmfs.Spec, error) {
	for _, name := range sourceFlags {
		if f.flags.Changed(name) {
			return vmfs.Spec{}, usagef("--%s: a vmfs service finds APEXes and OS configs in its own sources (vmfs serve --%s)", name, name)
		}
	}
	s, err := f.spec(args)
	s.OSDir = "" // the flag's default: the service's own
	return s, err
}

// payloadForms are the positional arguments naming the payload, per profile, as
// each Android's `vm run-app` takes them.
var payloadForms = map[metadata.StatePlacement]string{
	metadata.NoState:        "<apk> <idsig> <config_path>",
	metadata.StateOnOSDisk:  "<apk> <idsig> <instance> <config_path>",
	metadata.StateDiskFirst: "<apk> <idsig> <instance> with one of --config-path, --payload-binary-name",
}

// payloadArgs checks the payload's flags against the profile's form and says how
// many positional arguments (extra more: a mountpoint, optional in brackets)
// name the payload.
func (f *specFlags) payloadArgs(fs *pflag.FlagSet, extra string) (int, error) {
	prof, err := metadata.ParseProfile(f.profile)
	if err != nil {
		return 0, usagef("--profile: %v", err)
	}
	form := func(problem string) error {
		return usagef("%s: %s; %s takes %s%s", fs.Name(), problem, prof, payloadForms[prof.State()], extra)
	}
	switch prof.State() {
	case metadata.StateDiskFirst:
		if (f.configPath == "") == (f.payloadBinaryName == "") {
			return 0, form("give one of --config-path and --payload-binary-name")
		}
	default:
		if f.configPath != "" {
			return 0, form("--config-path is an argument")
		}
	}
	if !prof.Storage() && (f.storage != "" || f.storageSize != "") {
		return 0, form("no --storage (from android14)")
	}
	if !prof.InstanceID() && f.instanceIDFile != "" {
		return 0, form("no --instance-id-file (android15)")
	}
	want := map[metadata.StatePlacement]int{metadata.NoState: 3, metadata.StateOnOSDisk: 4, metadata.StateDiskFirst: 3}[prof.State()]
	if f.payloadBinaryName != "" && prof.State() == metadata.NoState {
		want-- // the library says which profiles take a binary name
	}
	more := strings.Fields(extra)
	required := len(more) - strings.Count(extra, "[")
	if fs.NArg() < want+required || fs.NArg() > want+len(more) {
		return 0, form(fmt.Sprintf("%d arguments", fs.NArg()))
	}
	return want, nil
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
		Storage: f.storage, InstanceIDFile: f.instanceIDFile, ConfigPath: f.configPath,
	}
	switch prof.State() {
	case metadata.NoState:
		if f.payloadBinaryName == "" {
			s.ConfigPath = args[2]
		}
	case metadata.StateOnOSDisk:
		s.Instance, s.ConfigPath = args[2], args[3]
	default:
		s.Instance = args[2]
	}
	if f.storageSize != "" {
		if s.StorageSize, err = vmfs.ParseSize(f.storageSize); err != nil {
			return vmfs.Spec{}, usagef("--storage-size: %v", err)
		}
		if s.StorageSize == 0 {
			return vmfs.Spec{}, usagef("--storage-size: want at least 1 byte")
		}
	}
	if f.flags.Changed("apex-info-list") {
		s.ApexInfoList = f.apexInfoList
	}
	return s, nil
}

// registerNoPassthrough registers --no-passthrough, on a command that mounts.
func registerNoPassthrough(fs *pflag.FlagSet, p *bool) {
	fs.BoolVar(p, "no-passthrough", false, "serve every read through vmfs; by default the kernel reads a file that is exactly one original (an android13+ APEX partition, a 4 KiB-aligned APK's) from the original itself where it can (root, Linux 6.9+), past the change guard")
}
