// Package testdata holds the shared fixtures of vmfs tests: a signed sample APK with its
// APK Signature Scheme v4 .idsig, three APEX files of edge-case sizes, an apex-info-list.xml
// and a placeholder OS VM config; and under later/ an Android 13+ sample with two extra
// APKs, 4 KiB-aligned APEXes and an apex-info-list.xml with update times and factory
// flags. The files are produced by real tools (aapt, zipalign, apksigner, protoc,
// openssl) through ./gen and committed, so tests need no Java.
// Besides naming the files, it holds the helpers tests share: what a test requires, a
// large APK, reading as another user, a deadline on a FUSE mount. It imports no other
// vmfs package.
// The signing key in app/ is a throwaway test key: never trust anything it signs.
package testdata

//go:generate go run ./gen

import (
	"path/filepath"
	"runtime"
)

// ConfigPath is the payload config path inside the sample APK, as given to `vm run-app`.
const ConfigPath = "assets/vm_config.json"

// APKSizeFloor is a size the sample APK exceeds, so that its v4 Merkle tree has two levels
// (one 4096-byte hash block covers 128 data blocks = 512 KiB).
const APKSizeFloor = 512 << 10

// APEX describes one APEX fixture and its apex-info-list.xml entry.
type APEX struct {
	Name    string // module name, as listed in vm_config.json and apex-info-list.xml
	Rel     string // path relative to Dir(); apex-info-list.xml has it relative to its own directory
	Size    int64  // exact file size in bytes
	Version int64  // apex_manifest.pb version and versionCode in apex-info-list.xml
	Active  bool   // isActive
	Factory bool   // isFactory
	// LastUpdate is lastUpdateMillis, which holds seconds on a device (apexd writes the
	// file's mtime; the Android 12 sample's list has that instant in ms).
	LastUpdate int64
	SharedLibs bool // provideSharedApexLibs: Android 13+ puts the APEX on every payload disk
	// Preinstalled is preinstalledModulePath: an absolute device path, or relative to
	// the list's directory; empty means the APEX's own path.
	Preinstalled string
}

// sample12Millis is the Android 12 sample list's lastUpdateMillis: 2009-01-01 in ms.
const sample12Millis = 1230768000000

// APEXes returns the APEX fixtures in the order of the sample vm_config.json, followed
// by the inactive entry that shares its name with an active one (listed first in the XML,
// so a resolver that takes the first match instead of the active one picks the wrong file).
func APEXes() []APEX {
	return []APEX{
		// size+4 == 4096: the size trailer exactly fills one 4 KiB block. An update of
		// the factory copy below.
		{Name: "com.android.adbd", Rel: "apex/com.android.adbd.apex", Size: 4092, Version: 2, Active: true,
			LastUpdate: sample12Millis, Preinstalled: "apex/factory/com.android.adbd.apex"},
		// already 4 KiB aligned: the trailer needs a whole extra block (partition 12288).
		{Name: "com.android.os.statsd", Rel: "apex/com.android.os.statsd.apex", Size: 8192, Version: 1, Active: true,
			Factory: true, LastUpdate: sample12Millis},
		// size+4 one byte over 4096: partition 8192.
		{Name: "com.vmfs.edge", Rel: "apex/com.vmfs.edge.apex", Size: 4093, Version: 1, Active: true,
			Factory: true, LastUpdate: sample12Millis},
		{Name: "com.android.adbd", Rel: "apex/factory/com.android.adbd.apex", Size: 6000, Version: 1, Active: false,
			Factory: true, LastUpdate: sample12Millis},
	}
}

// PayloadBinaryName is the payload both samples carry as lib/x86_64/<name>: the task
// command of their payload configs, and the payload binary name of Android 14+.
const PayloadBinaryName = "libsample.so"

// The Android 13+ sample, in later/: its APK relative to Dir(), and the APEXes its
// payload config asks for, one of which (com.android.os.statsd) Android 13 and 14 also
// require, so that it must go on the disk once.
const LaterAPKRel = "later/sample.apk"

func LaterConfigApexes() []string { return []string{"com.vmfs.edge", "com.android.os.statsd"} }

// LaterAPKPath is the Android 13+ sample APK (v2, v3 and v4 signatures); its payload
// config at ConfigPath lists the extra APKs by paths relative to its directory.
func LaterAPKPath() string { return Path(LaterAPKRel) }

// LaterIdsigPath is the v4 signature apksigner wrote for LaterAPKPath.
func LaterIdsigPath() string { return LaterAPKPath() + ".idsig" }

// ExtraAPK is an extra APK fixture and its v4 signature.
type ExtraAPK struct{ APK, Idsig string }

// LaterExtraAPKs are the Android 13+ sample's extra APKs, in its config's order.
func LaterExtraAPKs() []ExtraAPK {
	var out []ExtraAPK
	for _, name := range []string{"extra-0.apk", "extra-1.apk"} {
		out = append(out, ExtraAPK{APK: Path("later", name), Idsig: Path("later", name+".idsig")})
	}
	return out
}

// LaterAPEXInfoListPath is the Android 13+ sample's apex-info-list.xml: modulePath
// relative to later/, preinstalledModulePath absolute device paths under /system or
// /system_ext, lastUpdateMillis in seconds as on a device.
func LaterAPEXInfoListPath() string { return Path("later", "apex-info-list.xml") }

// laterFactory is the Android 13+ list's lastUpdateMillis of factory APEXes:
// 2009-01-01 in seconds, the mtime Android's build gives files.
const laterFactory = 1230768000

// LaterAPEXes returns the Android 13+ APEX fixtures, each a 4 KiB multiple, in the
// order of later/apex-info-list.xml (inactive first; not sorted by name, so that the
// sort Android 13+ applies shows).
func LaterAPEXes() []APEX {
	return []APEX{
		{Name: "com.android.adbd", Rel: "later/apex/factory/com.android.adbd.apex", Size: 4096, Version: 1,
			Factory: true, LastUpdate: laterFactory, Preinstalled: "/system/apex/com.android.adbd.apex"},
		{Name: "com.vmfs.sharedlibs", Rel: "later/apex/factory/com.vmfs.sharedlibs.apex", Size: 4096, Version: 1,
			Factory: true, LastUpdate: laterFactory, SharedLibs: true, Preinstalled: "/system/apex/com.vmfs.sharedlibs.apex"},
		{Name: "com.vmfs.edge", Rel: "later/apex/com.vmfs.edge.apex", Size: 12288, Version: 3, Active: true,
			Factory: true, LastUpdate: laterFactory, Preinstalled: "/system_ext/apex/com.vmfs.edge.apex"},
		// Updated: debug-only in Android 13+.
		{Name: "com.android.adbd", Rel: "later/apex/com.android.adbd.apex", Size: 8192, Version: 2, Active: true,
			LastUpdate: 1700000000, Preinstalled: "/system/apex/com.android.adbd.apex"},
		{Name: "com.vmfs.sharedlibs", Rel: "later/apex/com.vmfs.sharedlibs.apex", Size: 8192, Version: 2, Active: true,
			LastUpdate: 1700000100, SharedLibs: true, Preinstalled: "/system/apex/com.vmfs.sharedlibs.apex"},
		{Name: "com.android.os.statsd", Rel: "later/apex/com.android.os.statsd.apex", Size: 4096, Version: 1, Active: true,
			Factory: true, LastUpdate: laterFactory, Preinstalled: "/system/apex/com.android.os.statsd.apex"},
	}
}

// Dir returns the absolute path of this directory, found from the source file location so
// it works from any package's tests (not under -trimpath).
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("testdata: runtime.Caller failed")
	}
	return filepath.Dir(file)
}

// Path joins elems onto Dir().
func Path(elem ...string) string {
	return filepath.Join(append([]string{Dir()}, elem...)...)
}

// APKPath is the signed sample APK (v2 + v4 signatures).
func APKPath() string { return Path("app", "sample.apk") }

// IdsigPath is the v4 signature file apksigner wrote next to the APK.
func IdsigPath() string { return Path("app", "sample.apk.idsig") }

// CertPath is the PEM certificate of the throwaway signing key.
func CertPath() string { return Path("app", "key.x509.pem") }

// APEXInfoListPath is the apex-info-list.xml whose modulePath entries are relative to Dir().
func APEXInfoListPath() string { return Path("apex-info-list.xml") }

// OSDir is the directory holding the OS VM config <os.name>.json and its placeholder files.
func OSDir() string { return Path("os") }

// OSConfigPath is the placeholder microdroid VmConfig JSON (relative paths, not bootable).
func OSConfigPath() string { return Path("os", "microdroid.json") }
