// Package testdata holds the shared fixtures of vmfs tests: a signed sample APK with its
// APK Signature Scheme v4 .idsig, three APEX files of edge-case sizes, an apex-info-list.xml
// and a placeholder OS VM config. The files are produced by real tools (aapt, zipalign,
// apksigner, protoc, openssl) through ./gen and committed, so tests need no Java.
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

// APEX describes one APEX fixture.
type APEX struct {
	Name    string // module name, as listed in vm_config.json and apex-info-list.xml
	Rel     string // path relative to Dir(), as written in apex-info-list.xml
	Size    int64  // exact file size in bytes
	Version int64  // apex_manifest.pb version and versionCode in apex-info-list.xml
	Active  bool   // isActive in apex-info-list.xml
}

// APEXes returns the APEX fixtures in the order of the sample vm_config.json, followed
// by the inactive entry that shares its name with an active one (listed first in the XML,
// so a resolver that takes the first match instead of the active one picks the wrong file).
func APEXes() []APEX {
	return []APEX{
		// size+4 == 4096: the size trailer exactly fills one 4 KiB block.
		{Name: "com.android.adbd", Rel: "apex/com.android.adbd.apex", Size: 4092, Version: 2, Active: true},
		// already 4 KiB aligned: the trailer needs a whole extra block (partition 12288).
		{Name: "com.android.os.statsd", Rel: "apex/com.android.os.statsd.apex", Size: 8192, Version: 1, Active: true},
		// size+4 one byte over 4096: partition 8192.
		{Name: "com.vmfs.edge", Rel: "apex/com.vmfs.edge.apex", Size: 4093, Version: 1, Active: true},
		{Name: "com.android.adbd", Rel: "apex/factory/com.android.adbd.apex", Size: 6000, Version: 1, Active: false},
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
