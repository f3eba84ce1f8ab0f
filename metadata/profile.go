package metadata

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Profile is the Android release whose payload format vmfs follows: how the payload disk
// is laid out, what the host writes in the payload metadata, the payload config schema
// and which APEXes go on the disk. The zero value, Android12, is the mid-2021 design vmfs
// started from and its default.
//
// What differs is one row of data per profile (profiles below), read from the AOSP
// Virtualization module at each release (shared/docs/formats-later.md).
type Profile uint8

const (
	Android12 Profile = iota // mid-2021 (the seed)
	Android13                // lineage-20.0
	Android14                // AOSP cb4dd34b, May 2023
	Android15                // lineage-22.0
)

// DebugLevel is `vm run-app --debug`: it decides whether the debug-only APEXes go on the disk.
type DebugLevel string

const (
	DebugNone    DebugLevel = "none"
	DebugAppOnly DebugLevel = "app_only" // Android 13 only
	DebugFull    DebugLevel = "full"
)

// nameRule is what a profile lets the payload config's os.name be.
type nameRule uint8

const (
	// osAny: any valid name; vmfs loads <os-dir>/<name>.json (the seed's lookup).
	osAny nameRule = iota
	// osMicrodroid: only "microdroid" (virtualizationservice: `Unknown OS "x"`).
	osMicrodroid
	// osDeprecated: absent, "" or "microdroid"; the OS comes from the command line
	// (`'os' in payload config is deprecated`).
	osDeprecated
)

// presence is how a profile's schema treats a key.
type presence uint8

const (
	keyUnknown  presence = iota // ignored, as serde ignores unknown keys
	keyDefault                  // may be absent (#[serde(default)]), not null
	keyOption                   // may be absent or null (Option<T>)
	keyRequired                 // must be there
)

// configSchema is the payload config JSON (VmPayloadConfig, microdroid/payload/config/src/lib.rs)
// as one release reads it, beyond the keys every release has (os, task.type, task.command,
// apexes, extra_apks, prefer_staged).
type configSchema struct {
	osName           nameRule
	taskArgs         presence // task.args, a list of strings; removed in Android 14
	exportTombstones presence // a boolean; required in Android 13, Option<bool> since
	enableAuthfs     presence // Android 14+
	hugepages        presence // Android 15
}

// profileFacts is one release's row.
type profileFacts struct {
	name string
	// metadataLabel labels partition 1 (renamed from "metadata" on 2021-07-06).
	metadataLabel string
	// sizeTrailer: each APEX partition ends with the APEX size as a big-endian u32, as apexd
	// read block APEXes in mid-2021. Without it the APEX is zero-padded to 4 KiB like
	// every other partition, and apexd opens the partition itself as the zip.
	sizeTrailer bool
	// apexUpdateInfo: each ApexPayload carries partition_name, last_update_seconds and
	// is_factory; else only the name.
	apexUpdateInfo bool
	// apexesFromInfoList: the APEX set is filtered from apex-info-list.xml and sorted by
	// (name, version, last update); else it is the config's APEXes in config order.
	apexesFromInfoList bool
	requiredApexes     []string // added whenever active
	debugApexes        []string // added when the debug level is not none
	// systemApexesOnly refuses an APEX preinstalled outside /system and /system_ext.
	systemApexesOnly bool
	// extraApks: extra-apk-<i>/extra-idsig-<i> partitions after the APK's.
	extraApks bool
	// binaryName: the payload may be named by its binary instead of a config path
	// (PayloadConfig in the metadata, `--payload-binary-name`).
	binaryName bool
	// extraApkCount: PayloadConfig counts extra APKs (`--extra-apk` with a binary name).
	extraApkCount bool
	// debugLevels are what `vm run-app --debug` takes, its default first.
	debugLevels []DebugLevel
	schema      configSchema
	// rawPartitions: writable partitions are made sparse raw files (virtualizationmanager,
	// 2024-05, "use raw file instead of qcow"); else QCOW2 (crosvm's QcowFile::new).
	rawPartitions bool
	// partitionGranule: a writable partition's size is rounded up to a multiple of it
	// (initializeWritablePartition, 2023-01; crosvm wants 4 KiB multiples); 0: as asked.
	partitionGranule int64
	// state is where `vm run-app` puts the VM's writable state (formats-later.md).
	state StatePlacement
	// storage: `--storage` (encrypted storage, from Android 14); instanceID:
	// `--instance-id-file` (Android 15).
	storage, instanceID bool
}

// StatePlacement is where a profile's `vm run-app` puts the VM's state files.
type StatePlacement uint8

const (
	NoState        StatePlacement = iota // no instance image (mid-2021)
	StateOnOSDisk                        // vm-instance appended to the OS config's disk 1 (Android 13)
	StateDiskFirst                       // a writable disk [vm-instance, encryptedstore] before the payload disk (Android 14+)
)

var profiles = [...]profileFacts{
	Android12: {
		name:          "android12",
		metadataLabel: "metadata",
		sizeTrailer:   true,
		debugLevels:   []DebugLevel{DebugNone},
		schema:        configSchema{osName: osAny, taskArgs: keyDefault},
	},
	Android13: {
		name:               "android13",
		metadataLabel:      "payload-metadata",
		apexUpdateInfo:     true,
		apexesFromInfoList: true,
		requiredApexes:     []string{"com.android.os.statsd"},
		debugApexes:        []string{"com.android.adbd"},
		extraApks:          true,
		debugLevels:        []DebugLevel{DebugNone, DebugAppOnly, DebugFull},
		schema:             configSchema{osName: osMicrodroid, taskArgs: keyDefault, exportTombstones: keyRequired},
		state:              StateOnOSDisk,
	},
	Android14: {
		name:               "android14",
		metadataLabel:      "payload-metadata",
		apexUpdateInfo:     true,
		apexesFromInfoList: true,
		requiredApexes:     []string{"com.android.os.statsd"},
		debugApexes:        []string{"com.android.adbd"},
		extraApks:          true,
		binaryName:         true,
		debugLevels:        []DebugLevel{DebugNone, DebugFull},
		schema:             configSchema{osName: osMicrodroid, exportTombstones: keyOption, enableAuthfs: keyDefault},
		partitionGranule:   4096,
		state:              StateDiskFirst,
		storage:            true,
	},
	Android15: {
		name:               "android15",
		metadataLabel:      "payload-metadata",
		apexUpdateInfo:     true,
		apexesFromInfoList: true,
		debugApexes:        []string{"com.android.adbd"},
		systemApexesOnly:   true,
		extraApks:          true,
		binaryName:         true,
		extraApkCount:      true,
		debugLevels:        []DebugLevel{DebugFull, DebugNone},
		schema: configSchema{osName: osDeprecated, exportTombstones: keyOption, enableAuthfs: keyDefault,
			hugepages: keyDefault},
		rawPartitions:    true,
		partitionGranule: 4096,
		state:            StateDiskFirst,
		storage:          true,
		instanceID:       true,
	},
}

func (p Profile) facts() *profileFacts {
	if int(p) >= len(profiles) {
		panic(fmt.Sprintf("metadata: profile %d does not exist", p))
	}
	return &profiles[p]
}

// Profiles lists every profile, oldest first.
func Profiles() []Profile {
	out := make([]Profile, len(profiles))
	for i := range profiles {
		out[i] = Profile(i)
	}
	return out
}

// ParseProfile returns the profile called name ("android12" ... "android15").
func ParseProfile(name string) (Profile, error) {
	var names []string
	for _, p := range Profiles() {
		if p.String() == name {
			return p, nil
		}
		names = append(names, p.String())
	}
	return 0, fmt.Errorf("unknown profile %q: want one of %s", name, strings.Join(names, ", "))
}

// String is the profile's name, e.g. "android13".
func (p Profile) String() string { return p.facts().name }

// MetadataLabel is the label of the payload disk's partition 1, the metadata.
func (p Profile) MetadataLabel() string { return p.facts().metadataLabel }

// ZeroPadApexes tells the disk layout to zero-pad each APEX to 4 KiB like every other
// partition, instead of the mid-2021 size trailer.
func (p Profile) ZeroPadApexes() bool { return !p.facts().sizeTrailer }

// PartitionImage is the format AVF makes a VM's writable partition in (`vm
// create-partition`, a missing instance image or storage): QCOW2 up to Android 14, a
// sparse raw file from Android 15.
func (p Profile) PartitionImage() ImageFormat {
	if p.facts().rawPartitions {
		return RawImage
	}
	return QCOW2Image
}

// PartitionSize is the size AVF gives a writable partition asked for at n bytes: n,
// rounded up to 4 KiB from Android 14 (left as it is where that would overflow, as
// AVF leaves it).
func (p Profile) PartitionSize(n int64) int64 {
	g := p.facts().partitionGranule
	if g == 0 || n > math.MaxInt64-(g-1) {
		return n
	}
	return (n + g - 1) / g * g
}

// State is where the profile's `vm run-app` puts the instance image and storage.
func (p Profile) State() StatePlacement { return p.facts().state }

// Storage tells whether the profile's `vm run-app` takes `--storage`.
func (p Profile) Storage() bool { return p.facts().storage }

// InstanceID tells whether the profile's `vm run-app` takes `--instance-id-file`.
func (p Profile) InstanceID() bool { return p.facts().instanceID }

// ParseDebugLevel checks a --debug value; "" gives the profile's default.
func (p Profile) ParseDebugLevel(s string) (DebugLevel, error) {
	levels := p.facts().debugLevels
	if s == "" {
		return levels[0], nil
	}
	if !slices.Contains(levels, DebugLevel(s)) {
		names := make([]string, len(levels))
		for i, l := range levels {
			names[i] = string(l)
		}
		return "", fmt.Errorf("%s: debug level %q is not one of %s", p, s, strings.Join(names, ", "))
	}
	return DebugLevel(s), nil
}
