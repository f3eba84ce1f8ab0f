package main

import (
	"archive/zip"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"vmfs/metadata"
)

// The guest knows the payload disk's names itself (formats.md 3.3, 3.4) instead of taking
// them from vmfs/layout, so a host that drifts from Microdroid shows up as a failed check.

const (
	apkMountPoint   = "/mnt/apk/" // where Microdroid mounts the APK; a payload config path starts with it
	blockSize       = 4096        // partition alignment and dm-verity block size
	maxSmallFile    = 1 << 20     // cap on the config and manifest read from a zip
	eocdLen         = 22          // zip end of central directory record without its comment
	eocdSearchRange = eocdLen + 0xFFFF
)

func align4K(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

// abis maps the guest's architecture to the Android ABI whose lib/<abi>/ directory of
// the APK holds the payload (the first of ro.product.cpu.abilist in Microdroid).
var abis = map[string]string{"amd64": "x86_64", "arm64": "arm64-v8a"}

// readMetadata decodes the payload metadata partition and checks what the guest relies on:
// version 1, the APK partitions, and a payload, either a config path under /mnt/apk or
// (Android 14+) a binary name.
func readMetadata(r io.Reader) (*metadata.Metadata, error) {
	m, err := metadata.DecodeMetadata(r)
	if err != nil {
		return nil, err
	}
	if m.GetVersion() != 1 {
		return nil, fmt.Errorf("payload metadata version %d, want 1", m.GetVersion())
	}
	apk := m.GetApk()
	if apk.GetPayloadPartitionName() == "" || apk.GetIdsigPartitionName() == "" {
		return nil, errors.New("payload metadata names no apk or idsig partition")
	}
	switch m.GetPayload().(type) {
	case *metadata.Metadata_ConfigPath:
		if !strings.HasPrefix(m.GetConfigPath(), apkMountPoint) {
			return nil, fmt.Errorf("payload config path %q is not under %s", m.GetConfigPath(), apkMountPoint)
		}
	case *metadata.Metadata_Config:
		if m.GetConfig().GetPayloadBinaryName() == "" {
			return nil, errors.New("payload config names no payload binary")
		}
	default:
		return nil, errors.New("payload metadata has no payload (config path or binary name)")
	}
	return m, nil
}

func describeMetadata(m *metadata.Metadata) string {
	var apexes []string
	for _, a := range m.GetApexes() {
		d := a.GetName()
		if a.GetPartitionName() != "" {
			d += fmt.Sprintf(" (%s, updated %d, factory %t)", a.GetPartitionName(), a.GetLastUpdateSeconds(), a.GetIsFactory())
		}
		apexes = append(apexes, d)
	}
	payload := "config " + m.GetConfigPath()
	if c := m.GetConfig(); c != nil {
		payload = fmt.Sprintf("binary %s, %d extra apks", c.GetPayloadBinaryName(), c.GetExtraApkCount())
	}
	return fmt.Sprintf("version %d, apexes [%s], apk %s + %s, %s", m.GetVersion(),
		strings.Join(apexes, ", "), m.GetApk().GetPayloadPartitionName(), m.GetApk().GetIdsigPartitionName(), payload)
}

// payloadLabels lists the partitions of the payload disk in order, as apexd and
// microdroid_manager expect them: the metadata, the APEXes, the APK and its idsig, then
// nExtra pairs of extra APK and idsig.
func payloadLabels(m *metadata.Metadata, metaLabel string, nExtra int) []string {
	labels := []string{metaLabel}
	for i := range m.GetApexes() {
		labels = append(labels, metadata.ApexLabel(i))
	}
	labels = append(labels, m.GetApk().GetPayloadPartitionName(), m.GetApk().GetIdsigPartitionName())
	for i := range nExtra {
		labels = append(labels, metadata.ExtraAPKLabel(i), metadata.ExtraIdsigLabel(i))
	}
	return labels
}

// countExtras counts the extra APK partitions on disk as microdroid_manager finds them,
// by label: extra-apk-0, extra-apk-1, ... up to the first missing one.
func countExtras(parts map[string]partition, disk string) int {
	for n := 0; ; n++ {
		if p, ok := parts[metadata.ExtraAPKLabel(n)]; !ok || p.Disk != disk {
			return n
		}
	}
}

// checkLayout checks that the payload disk holds exactly the partitions labels names,
// numbered in that order from 1: apexd finds APEX i at partition number i+2 of the disk
// whose partition 1 is the metadata (formats.md 3.4), and extra APKs pair with idsigs.
func checkLayout(parts map[string]partition, labels []string) (string, error) {
	meta := parts[labels[0]]
	var desc []string
	for i, l := range labels {
		p := parts[l]
		if p.Disk != meta.Disk {
			return "", fmt.Errorf("%s is on %s, the metadata on %s", p, p.Disk, meta.Disk)
		}
		if p.Num != i+1 {
			return "", fmt.Errorf("%s is partition %d of %s, want %d", p, p.Num, p.Disk, i+1)
		}
		desc = append(desc, fmt.Sprintf("%d %s", p.Num, p.Label))
	}
	var others []string
	for _, p := range parts {
		if p.Disk == meta.Disk && !slices.Contains(labels, p.Label) {
			others = append(others, p.String())
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		return "", fmt.Errorf("%s also holds %s", meta.Disk, strings.Join(others, ", "))
	}
	return fmt.Sprintf("%s: %s", meta.Disk, strings.Join(desc, ", ")), nil
}

// readFullAt reads len(b) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// checkApex checks an APEX partition as apexd of release rel opens it (formats.md 8). With
// the mid-2021 size trailer, the last 4 bytes hold the APEX size (big-endian), the
// partition is that size plus 4 rounded up to 4 KiB, and the zip is the first size bytes.
// Without it, the zip is the whole partition. Either way it must open under
// libziparchive's rule that nothing follows the end of central directory record and its
// comment, and its apex_manifest.pb must name the APEX the metadata lists.
func checkApex(rel release, want string, r io.ReaderAt, partSize int64) (string, error) {
	size, end := partSize, "the partition end"
	if rel.sizeTrailer {
		if partSize < 4 {
			return "", fmt.Errorf("partition is %d bytes, too small for the size trailer", partSize)
		}
		var tr [4]byte
		if err := readFullAt(r, tr[:], partSize-4); err != nil {
			return "", fmt.Errorf("read size trailer: %w", err)
		}
		size, end = int64(binary.BigEndian.Uint32(tr[:])), "the apex size"
		if size == 0 || size+4 > partSize {
			return "", fmt.Errorf("size trailer says %d bytes, the partition has %d", size, partSize)
		}
		if want := align4K(size + 4); partSize != want {
			return "", fmt.Errorf("partition is %d bytes, a %d-byte apex needs align4K(%d+4) = %d",
				partSize, size, size, want)
		}
	}
	if err := eocdEndsAt(r, size, end); err != nil {
		return "", err
	}
	zr, err := zip.NewReader(io.NewSectionReader(r, 0, size), size)
	if err != nil {
		return "", fmt.Errorf("open apex zip over [0, %d): %w", size, err)
	}
	name, err := manifestName(zr)
	if err != nil {
		return "", err
	}
	if name != want {
		return "", fmt.Errorf("apex_manifest.pb names %q, the metadata %q", name, want)
	}
	how := "no size trailer"
	if rel.sizeTrailer {
		how = "size trailer"
	}
	return fmt.Sprintf("%d-byte apex in a %d-byte partition (%s), apex_manifest.pb names %s", size, partSize, how, name), nil
}

// eocdEndsAt checks that the zip's end of central directory record plus its comment ends
// exactly at size (called end in errors), as libziparchive (apexd's zip reader) demands.
func eocdEndsAt(r io.ReaderAt, size int64, end string) error {
	n := min(size, eocdSearchRange)
	buf := make([]byte, n)
	if err := readFullAt(r, buf, size-n); err != nil {
		return fmt.Errorf("read zip end of central directory: %w", err)
	}
	for i := len(buf) - eocdLen; i >= 0; i-- {
		if string(buf[i:i+4]) != "PK\x05\x06" {
			continue
		}
		at := size - n + int64(i) + eocdLen + int64(binary.LittleEndian.Uint16(buf[i+20:]))
		if at != size {
			return fmt.Errorf("zip end of central directory record and comment end at byte %d, not at %s %d (libziparchive refuses the %d bytes after)",
				at, end, size, size-at)
		}
		return nil
	}
	return fmt.Errorf("no zip end of central directory record in the last %d bytes before %d", n, size)
}

// readZipFile reads one small file from a zip.
func readZipFile(zr *zip.Reader, name string) ([]byte, error) {
	f, err := zr.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSmallFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxSmallFile {
		return nil, fmt.Errorf("read %s: more than %d bytes", name, maxSmallFile)
	}
	return b, nil
}

// manifestName returns field 1 (name) of the APEX's apex_manifest.pb
// (apex.proto.ApexManifest).
func manifestName(zr *zip.Reader) (string, error) {
	b, err := readZipFile(zr, "apex_manifest.pb")
	if err != nil {
		return "", fmt.Errorf("apex manifest: %w", err)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", fmt.Errorf("apex_manifest.pb: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", fmt.Errorf("apex_manifest.pb: name: %w", protowire.ParseError(n))
			}
			return string(v), nil
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return "", fmt.Errorf("apex_manifest.pb: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return "", errors.New("apex_manifest.pb has no name")
}

// checkAPK opens the APK zip over its whole partition, zero padding included, as zipfuse
// does over the dm-verity device (formats.md 7.3), and checks the payload the metadata
// names as microdroid_manager of the releases rels would. A config file is parsed with
// each release's schema, and the releases that refuse it drop out (the rest are
// returned); its APEXes must be on the disk (exactly, in order, where the host adds none),
// and, where extra APKs exist, its extra_apks must count the nExtra on the disk. A binary
// name stands for a config that runs it with microdroid_launcher and has as many extra
// APKs as the metadata counts. A microdroid_launcher payload must be in the APK as
// lib/<abi>/<name>, where Microdroid looks for it.
func checkAPK(rels []release, m *metadata.Metadata, nExtra int, r io.ReaderAt, partSize int64) (string, []release, error) {
	if partSize%blockSize != 0 {
		return "", nil, fmt.Errorf("partition is %d bytes, not a multiple of %d", partSize, blockSize)
	}
	zr, err := zip.NewReader(r, partSize)
	if err != nil {
		return "", nil, fmt.Errorf("open apk zip over the %d-byte padded partition: %w", partSize, err)
	}
	var cfg *metadata.PayloadConfig
	var desc string
	if c := m.GetConfig(); c != nil {
		cfg = &metadata.PayloadConfig{Task: &metadata.Task{Type: metadata.TaskMicrodroidLauncher, Command: c.GetPayloadBinaryName()}}
		cfg.ExtraApks = make([]metadata.ApkConfig, c.GetExtraApkCount())
		desc = "payload binary " + c.GetPayloadBinaryName()
	} else {
		path := strings.TrimPrefix(m.GetConfigPath(), apkMountPoint)
		data, err := readZipFile(zr, path)
		if err != nil {
			return "", nil, fmt.Errorf("payload config: %w", err)
		}
		var kept []release
		var refusals []string
		for _, rel := range rels {
			c, err := rel.profile.ParsePayloadConfig(m.GetConfigPath(), data)
			if err != nil {
				refusals = append(refusals, fmt.Sprintf("%s: %v", rel.profile, err))
				continue
			}
			cfg = cmp.Or(cfg, c)
			kept = append(kept, rel)
		}
		if len(kept) == 0 {
			return "", nil, errors.New(strings.Join(refusals, "; "))
		}
		rels = kept
		var inConfig, inMetadata []string
		for _, a := range cfg.Apexes {
			inConfig = append(inConfig, a.Name)
		}
		for _, a := range m.GetApexes() {
			inMetadata = append(inMetadata, a.GetName())
		}
		missing := slices.DeleteFunc(slices.Clone(inConfig), func(n string) bool { return slices.Contains(inMetadata, n) })
		if !rels[0].addsApexes && !slices.Equal(inConfig, inMetadata) || len(missing) > 0 {
			return "", nil, fmt.Errorf("payload config asks for apexes [%s], the metadata lists [%s]",
				strings.Join(inConfig, " "), strings.Join(inMetadata, " "))
		}
		desc = fmt.Sprintf("%s: os %s, apexes [%s] on the disk", path, cfg.OS.Name, strings.Join(inConfig, " "))
	}
	if rels[0].extraApks && len(cfg.ExtraApks) != nExtra {
		return "", nil, fmt.Errorf("the payload expects %d extra apks, the disk has %d", len(cfg.ExtraApks), nExtra)
	}
	if t := cfg.Task; t != nil && t.Type == metadata.TaskMicrodroidLauncher {
		abi, ok := abis[runtime.GOARCH]
		if !ok {
			return "", nil, fmt.Errorf("no Android ABI known for %s", runtime.GOARCH)
		}
		lib := "lib/" + abi + "/" + t.Command
		if st, err := fs.Stat(zr, lib); err != nil || !st.Mode().IsRegular() {
			return "", nil, fmt.Errorf("payload %s is not a file in the apk: %v", lib, err)
		}
		desc += ", runs " + lib
	}
	return fmt.Sprintf("zip of %d entries opened over the %d-byte padded partition; %s", len(zr.File), partSize, desc), rels, nil
}
