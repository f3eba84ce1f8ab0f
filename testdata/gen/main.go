// Command gen regenerates the shared vmfs test fixtures in testdata/ with real tools:
// aapt compiles the binary AndroidManifest.xml, zipalign page-aligns the native library,
// apksigner signs the APK with v2 and writes the v4 .idsig, protoc encodes each
// apex_manifest.pb, and openssl makes the throwaway signing key (only when it is missing
// or -new-key is given). Tools run through os/exec with argument lists, never a shell.
// Zip entries carry a fixed mtime and all filler bytes come from seeded ChaCha8, so a
// rerun with the same key writes the same bytes (apksigner's RSA PKCS#1 v1.5 signatures
// are deterministic).
//
// Run from the repository root with `go run ./testdata/gen`, or `go generate ./testdata`.
package main

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"vmfs/testdata"
)

//go:embed apex_manifest.proto
var apexManifestProto []byte

// frameworkRes is the Debian android-framework-res package's framework, which aapt
// needs to resolve android: attribute ids in the manifest.
const frameworkRes = "/usr/share/android-framework-res/framework-res.apk"

// zipDate and zipTime are the fixed MS-DOS mtime of every zip entry, 2009-01-01 00:00:00
// (the date Android's signapk also uses): date = (2009-1980)<<9 | 1<<5 | 1, time = 0.
const (
	zipDate = 29<<9 | 1<<5 | 1
	zipTime = 0
)

// libSize makes the APK larger than testdata.APKSizeFloor, so its v4 tree has two levels.
// The Android 13+ sample and its extra APKs stay small: one tree level each.
const (
	libSize      = 600 << 10
	laterLibSize = 64 << 10
)

// extraSizes are the stored asset sizes of the extra APKs.
var extraSizes = []int{20 << 10, 100 << 10}

// manifestXML is the source aapt compiles, for an app with no code: its comment,
// package, minSdkVersion (= targetSdkVersion) and label. Any minSdkVersion from 31
// (Android 12, the first release with Android Virtualization Framework) lets apksigner
// skip v1 (JAR) signing.
const manifestXML = `<?xml version="1.0" encoding="utf-8"?>
<!-- vmfs test fixture: %s -->
<manifest xmlns:android="http://schemas.android.com/apk/res/android"
    package="%s"
    android:versionCode="1"
    android:versionName="1.0">
    <uses-sdk android:minSdkVersion="%d" android:targetSdkVersion="%[3]d" />
    <application android:label="%s" android:hasCode="false" />
</manifest>
`

func main() {
	dir := flag.String("dir", defaultDir(), "testdata directory to write into (the signing key is read from <dir>/app)")
	newKey := flag.Bool("new-key", false, "replace the committed throwaway signing key with a fresh one")
	flag.Parse()
	if err := generate(*dir, *newKey); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// defaultDir accepts both `go generate` (cwd testdata/) and `go run ./testdata/gen` (cwd root).
func defaultDir() string {
	if _, err := os.Stat(filepath.Join("gen", "main.go")); err == nil {
		return "."
	}
	return "testdata"
}

func generate(dir string, newKey bool) error {
	tools := []string{"aapt", "zipalign", "apksigner", "protoc"}
	keyPath := filepath.Join(dir, "app", "key.pk8")
	certPath := filepath.Join(dir, "app", "key.x509.pem")
	_, keyErr := os.Stat(keyPath)
	makeKey := newKey || errors.Is(keyErr, os.ErrNotExist)
	if makeKey {
		tools = append(tools, "openssl")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("find tool %s (Debian packages: aapt zipalign apksigner protobuf-compiler openssl): %w", t, err)
		}
	}
	if _, err := os.Stat(frameworkRes); err != nil {
		return fmt.Errorf("find %s (Debian package android-framework-res): %w", frameworkRes, err)
	}
	tmp, err := os.MkdirTemp("", "vmfs-testdata-")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	for _, d := range []string{"app", "os"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if makeKey {
		if err := makeSigningKey(tmp, keyPath, certPath); err != nil {
			return err
		}
	}
	if err := writeAPEXes(dir, tmp, append(testdata.APEXes(), testdata.LaterAPEXes()...)); err != nil {
		return err
	}
	if err := writeAPEXInfoList(dir, ".", testdata.APEXes()); err != nil {
		return err
	}
	if err := writeAPEXInfoList(dir, "later", testdata.LaterAPEXes()); err != nil {
		return err
	}
	all, err := apps()
	if err != nil {
		return err
	}
	for _, a := range all {
		if err := writeApp(dir, tmp, keyPath, certPath, a); err != nil {
			return err
		}
	}
	return writeOS(dir)
}

// run executes a tool and returns its stdout; a failure carries the tool's stderr.
func run(stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// makeSigningKey writes an RSA-2048 key as unencrypted PKCS#8 DER (what apksigner --key
// takes) and a self-signed certificate valid for 100 years.
func makeSigningKey(tmp, keyPath, certPath string) error {
	pem := filepath.Join(tmp, "key.pem")
	steps := [][]string{
		{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem},
		{"pkcs8", "-topk8", "-nocrypt", "-inform", "PEM", "-outform", "DER", "-in", pem, "-out", keyPath},
		{"req", "-new", "-x509", "-sha256", "-days", "36500", "-key", pem, "-out", certPath,
			"-subj", "/O=vmfs/CN=vmfs throwaway test key - test only"},
	}
	for _, args := range steps {
		if _, err := run(nil, "openssl", args...); err != nil {
			return fmt.Errorf("make signing key %s: %w", keyPath, err)
		}
	}
	return nil
}

// filler returns n deterministic pseudo-random bytes derived from label.
func filler(label string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte("vmfs testdata " + label)))
	b := make([]byte, n)
	_, _ = r.Read(b) // ChaCha8.Read never fails
	return b
}

// zipEntry is one file of a zip built by buildZip.
type zipEntry struct {
	name   string
	data   []byte
	stored bool // uncompressed, as native libraries and APEX payload images are
}

// buildZip writes entries in order with the given EOCD comment. Every entry is written
// raw with its CRC and sizes in the local header (no data descriptors, like apexer's and
// soong's zips) and the fixed MS-DOS mtime.
func buildZip(entries []zipEntry, comment string) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		body := e.data
		fh := &zip.FileHeader{Name: e.name, Method: zip.Store}
		if !e.stored {
			var err error
			if body, err = deflate(e.data); err != nil {
				return nil, fmt.Errorf("zip entry %s: %w", e.name, err)
			}
			fh.Method = zip.Deflate
		}
		fh.SetMode(0o644)
		// CreateRaw ignores Modified and writes only these MS-DOS fields.
		//lint:ignore SA1019 CreateRaw reads only the MS-DOS fields
		fh.ModifiedDate, fh.ModifiedTime = zipDate, zipTime
		fh.CRC32 = crc32.ChecksumIEEE(e.data)
		fh.CompressedSize64 = uint64(len(body))
		fh.UncompressedSize64 = uint64(len(e.data))
		w, err := zw.CreateRaw(fh)
		if err != nil {
			return nil, fmt.Errorf("zip entry %s: %w", e.name, err)
		}
		if _, err := w.Write(body); err != nil {
			return nil, fmt.Errorf("zip entry %s: %w", e.name, err)
		}
	}
	if err := zw.SetComment(comment); err != nil {
		return nil, fmt.Errorf("zip comment: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip close: %w", err)
	}
	return buf.Bytes(), nil
}

func deflate(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write(data); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeAPEXes writes each APEX padded to its exact size with a zero-filled EOCD comment,
// which is how apksigner --align-file-size pads real APEXes to a 4 KiB multiple.
func writeAPEXes(dir, tmp string, apexes []testdata.APEX) error {
	protoDir := filepath.Join(tmp, "proto")
	if err := os.MkdirAll(protoDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", protoDir, err)
	}
	if err := os.WriteFile(filepath.Join(protoDir, "apex_manifest.proto"), apexManifestProto, 0o644); err != nil {
		return fmt.Errorf("write apex_manifest.proto: %w", err)
	}
	for _, a := range apexes {
		text := fmt.Sprintf("name: %q\nversion: %d\n", a.Name, a.Version)
		pb, err := run([]byte(text), "protoc", "-I", protoDir, "--encode=apex.proto.ApexManifest", "apex_manifest.proto")
		if err != nil {
			return fmt.Errorf("encode apex_manifest.pb for %s: %w", a.Rel, err)
		}
		// Leave about 1.5 KiB for headers, central directory and some comment.
		payload := filler(a.Rel, int(a.Size-1536)&^511)
		entries := []zipEntry{
			{name: "apex_manifest.pb", data: pb, stored: true},
			{name: "apex_payload.img", data: payload, stored: true},
		}
		bare, err := buildZip(entries, "")
		if err != nil {
			return fmt.Errorf("build %s: %w", a.Rel, err)
		}
		pad := a.Size - int64(len(bare))
		if pad < 0 || pad > 0xffff {
			return fmt.Errorf("build %s: unpadded zip is %d bytes, cannot pad to %d with a zip comment", a.Rel, len(bare), a.Size)
		}
		out, err := buildZip(entries, string(make([]byte, pad)))
		if err != nil {
			return fmt.Errorf("build %s: %w", a.Rel, err)
		}
		if int64(len(out)) != a.Size {
			return fmt.Errorf("build %s: got %d bytes, want %d", a.Rel, len(out), a.Size)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(a.Rel)), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(a.Rel), err)
		}
		if err := os.WriteFile(filepath.Join(dir, a.Rel), out, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", a.Rel, err)
		}
	}
	return nil
}

type apexInfoList struct {
	XMLName xml.Name   `xml:"apex-info-list"`
	Infos   []apexInfo `xml:"apex-info"`
}

// apexInfo carries the attributes AOSP system/apex apexd/ApexInfoList.xsd requires.
type apexInfo struct {
	ModuleName             string `xml:"moduleName,attr"`
	ModulePath             string `xml:"modulePath,attr"`
	PreinstalledModulePath string `xml:"preinstalledModulePath,attr"`
	VersionCode            int64  `xml:"versionCode,attr"`
	VersionName            string `xml:"versionName,attr"`
	IsFactory              bool   `xml:"isFactory,attr"`
	IsActive               bool   `xml:"isActive,attr"`
	LastUpdateMillis       int64  `xml:"lastUpdateMillis,attr"`
	ProvideSharedApexLibs  bool   `xml:"provideSharedApexLibs,attr"`
}

// writeAPEXInfoList writes <listDir>/apex-info-list.xml (listDir relative to dir) for
// apexes, inactive entries first so first-match resolvers fail tests, with modulePath
// relative to listDir.
func writeAPEXInfoList(dir, listDir string, apexes []testdata.APEX) error {
	var list apexInfoList
	for _, pass := range []bool{false, true} {
		for _, a := range apexes {
			if a.Active != pass {
				continue
			}
			rel, err := filepath.Rel(listDir, a.Rel)
			if err != nil {
				return fmt.Errorf("apex-info-list.xml: %w", err)
			}
			pre := a.Preinstalled
			if pre == "" {
				pre = rel
			}
			list.Infos = append(list.Infos, apexInfo{
				ModuleName:             a.Name,
				ModulePath:             rel,
				PreinstalledModulePath: pre,
				VersionCode:            a.Version,
				IsFactory:              a.Factory,
				IsActive:               a.Active,
				LastUpdateMillis:       a.LastUpdate,
				ProvideSharedApexLibs:  a.SharedLibs,
			})
		}
	}
	body, err := xml.MarshalIndent(list, "", "    ")
	if err != nil {
		return fmt.Errorf("encode apex-info-list.xml: %w", err)
	}
	out := append([]byte("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"), body...)
	out = append(out, '\n')
	path := filepath.Join(dir, listDir, "apex-info-list.xml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// payloadConfig is the payload config JSON the samples carry; the keys after apexes
// appear only in the Android 13+ sample (export_tombstones is required in Android 13).
type payloadConfig struct {
	OS struct {
		Name string `json:"name"`
	} `json:"os"`
	Task struct {
		Type    string `json:"type"`
		Command string `json:"command"`
	} `json:"task"`
	Apexes           []apexRef `json:"apexes"`
	ExtraApks        []apkRef  `json:"extra_apks,omitempty"`
	ExportTombstones *bool     `json:"export_tombstones,omitempty"`
}

type apexRef struct {
	Name string `json:"name"`
}

type apkRef struct {
	Path string `json:"path"`
}

// vmConfigJSON is the payload config of a sample asking for apexes, running
// lib/<abi>/libsample.so; later adds the Android 13+ keys.
func vmConfigJSON(apexes []string, later bool) ([]byte, error) {
	var c payloadConfig
	c.OS.Name = "microdroid"
	c.Task.Type = "microdroid_launcher"
	c.Task.Command = testdata.PayloadBinaryName
	for _, a := range apexes {
		c.Apexes = append(c.Apexes, apexRef{Name: a})
	}
	if later {
		for _, e := range testdata.LaterExtraAPKs() {
			// Relative to the APK's directory, as vmfs reads them.
			c.ExtraApks = append(c.ExtraApks, apkRef{Path: filepath.Base(e.APK)})
		}
		yes := true
		c.ExportTombstones = &yes
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", testdata.ConfigPath, err)
	}
	return append(b, '\n'), nil
}

// app is one signed APK to make: out (relative to the testdata directory) gets the APK
// and out + ".idsig" its v4 signature.
type app struct {
	out     string
	comment string // the manifest's
	pkg     string
	label   string
	minSdk  int
	entries []zipEntry // after AndroidManifest.xml
	v3      bool       // also sign with APK Signature Scheme v3, which Android 14+ guests verify
}

// apps lists the APKs to make: the Android 12 sample, then the Android 13+ sample and
// its two extra APKs.
func apps() ([]app, error) {
	var names []string
	for _, a := range testdata.APEXes() {
		if a.Active {
			names = append(names, a.Name)
		}
	}
	config, err := vmConfigJSON(names, false)
	if err != nil {
		return nil, err
	}
	laterConfig, err := vmConfigJSON(testdata.LaterConfigApexes(), true)
	if err != nil {
		return nil, err
	}
	lib := "lib/x86_64/" + testdata.PayloadBinaryName
	out := []app{
		{
			out: "app/sample.apk", comment: "an app with no code whose payload is lib/x86_64/libsample.so.",
			pkg: "com.vmfs.sample", label: "vmfs sample", minSdk: 31,
			entries: []zipEntry{
				{name: "classes.dex", data: []byte("vmfs test fixture: placeholder, not a dex file (the app has android:hasCode=\"false\")\n")},
				{name: testdata.ConfigPath, data: config},
				{name: lib, data: filler(lib, libSize), stored: true},
			},
		},
		{
			out: testdata.LaterAPKRel, comment: "an Android 13+ app with two extra APKs whose payload is lib/x86_64/libsample.so.",
			pkg: "com.vmfs.later", label: "vmfs later sample", minSdk: 33, v3: true,
			entries: []zipEntry{
				{name: testdata.ConfigPath, data: laterConfig},
				{name: lib, data: filler("later/"+lib, laterLibSize), stored: true},
			},
		},
	}
	for i, e := range testdata.LaterExtraAPKs() {
		rel, err := filepath.Rel(testdata.Dir(), e.APK)
		if err != nil {
			return nil, err
		}
		out = append(out, app{
			out: rel, comment: fmt.Sprintf("extra APK %d of the Android 13+ sample.", i),
			pkg: fmt.Sprintf("com.vmfs.later.extra%d", i), label: fmt.Sprintf("vmfs extra %d", i), minSdk: 33, v3: true,
			entries: []zipEntry{{name: "assets/extra.bin", data: filler(rel, extraSizes[i]), stored: true}},
		})
	}
	return out, nil
}

// writeApp builds the unsigned APK in Go (fixed order and mtimes), page-aligns it with
// zipalign, then signs it with apksigner (v2, v3 if asked, and v4, which writes the .idsig).
func writeApp(dir, tmp, keyPath, certPath string, a app) error {
	src := filepath.Join(tmp, "AndroidManifest.xml")
	if err := os.WriteFile(src, []byte(fmt.Sprintf(manifestXML, a.comment, a.pkg, a.minSdk, a.label)), 0o644); err != nil {
		return fmt.Errorf("write manifest source: %w", err)
	}
	compiled := filepath.Join(tmp, "manifest.apk")
	if _, err := run(nil, "aapt", "package", "-f", "-M", src, "-I", frameworkRes, "-F", compiled); err != nil {
		return fmt.Errorf("compile AndroidManifest.xml of %s: %w", a.out, err)
	}
	axml, err := readZipEntry(compiled, "AndroidManifest.xml")
	if err != nil {
		return err
	}
	unaligned, err := buildZip(append([]zipEntry{{name: "AndroidManifest.xml", data: axml}}, a.entries...), "")
	if err != nil {
		return fmt.Errorf("build %s: %w", a.out, err)
	}
	unalignedPath := filepath.Join(tmp, "unaligned.apk")
	if err := os.WriteFile(unalignedPath, unaligned, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", unalignedPath, err)
	}
	aligned := filepath.Join(tmp, "aligned.apk")
	if _, err := run(nil, "zipalign", "-f", "-p", "4", unalignedPath, aligned); err != nil {
		return fmt.Errorf("align %s: %w", a.out, err)
	}
	signed := filepath.Join(tmp, "signed.apk")
	if _, err := run(nil, "apksigner", "sign",
		"--key", keyPath, "--cert", certPath,
		"--v1-signing-enabled", "false",
		"--v2-signing-enabled", "true",
		"--v3-signing-enabled", strconv.FormatBool(a.v3),
		"--v4-signing-enabled", "true",
		"--out", signed, aligned); err != nil {
		return fmt.Errorf("sign %s: %w", a.out, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(a.out)), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(a.out), err)
	}
	for _, suffix := range []string{"", ".idsig"} {
		b, err := os.ReadFile(signed + suffix)
		if err != nil {
			return fmt.Errorf("read signed %s%s: %w", a.out, suffix, err)
		}
		if err := os.WriteFile(filepath.Join(dir, a.out+suffix), b, 0o644); err != nil {
			return fmt.Errorf("write %s%s: %w", a.out, suffix, err)
		}
	}
	return nil
}

func readZipEntry(path, name string) ([]byte, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer zr.Close()
	f, err := zr.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", name, path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", name, path, err)
	}
	return b, nil
}

// vmConfig mirrors the AVF VmConfig JSON keys the placeholder OS config uses.
type vmConfig struct {
	Kernel    string      `json:"kernel"`
	Initrd    string      `json:"initrd"`
	Params    string      `json:"params"`
	Disks     []diskImage `json:"disks"`
	MemoryMiB uint32      `json:"memory_mib"`
}

type diskImage struct {
	Partitions []partition `json:"partitions"`
	Writable   bool        `json:"writable"`
}

type partition struct {
	Label string `json:"label"`
	Path  string `json:"path"`
}

// writeOS writes a non-bootable OS config whose paths are relative to os/; one partition
// file is 4 KiB aligned and one is not.
func writeOS(dir string) error {
	files := []struct {
		name string
		data []byte
	}{
		{"kernel", []byte("vmfs placeholder kernel: not bootable\n")},
		{"initrd.img", []byte("vmfs placeholder initrd: not bootable\n")},
		{"vbmeta.img", filler("os/vbmeta.img", 4096)},
		{"super.img", filler("os/super.img", 5000)},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, "os", f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("write os/%s: %w", f.name, err)
		}
	}
	cfg := vmConfig{
		Kernel: "kernel",
		Initrd: "initrd.img",
		Params: "console=hvc0 panic=-1",
		Disks: []diskImage{{Partitions: []partition{
			{Label: "vbmeta_a", Path: "vbmeta.img"},
			{Label: "super", Path: "super.img"},
		}}},
		MemoryMiB: 256,
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode os/microdroid.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "os", "microdroid.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write os/microdroid.json: %w", err)
	}
	return nil
}
