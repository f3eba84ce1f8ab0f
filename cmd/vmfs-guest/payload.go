package main

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"vmfs/metadata"
)

// The guest knows the payload disk's names itself (formats.md 3.3, 3.4) instead of taking
// them from vmfs/layout, so a host that drifts from Microdroid shows up as a failed check.
// metadataLabels: "metadata" until mid-2021, then "payload-metadata"; either is accepted.
var metadataLabels = []string{"metadata", "payload-metadata"}

const (
	apkMountPoint   = "/mnt/apk/" // where Microdroid mounts the APK; payload_config_path starts with it
	blockSize       = 4096        // partition alignment and dm-verity block size
	maxSmallFile    = 1 << 20     // cap on the config and manifest read from a zip
	eocdLen         = 22          // zip end of central directory record without its comment
	eocdSearchRange = eocdLen + 0xFFFF
)

func align4K(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

// apexLabel is the partition of the i-th APEX: the name the metadata gives it, else the
// mid-2021 host's microdroid-apex-<i> (it left partition_name empty).
func apexLabel(i int, a *metadata.ApexPayload) string {
	if a.GetPartitionName() != "" {
		return a.GetPartitionName()
	}
	return fmt.Sprintf("microdroid-apex-%d", i)
}

// readMetadata decodes the payload metadata partition and checks what the guest relies on.
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
	if !strings.HasPrefix(m.GetPayloadConfigPath(), apkMountPoint) {
		return nil, fmt.Errorf("payload config path %q is not under %s", m.GetPayloadConfigPath(), apkMountPoint)
	}
	return m, nil
}

func describeMetadata(m *metadata.Metadata) string {
	var names []string
	for _, a := range m.GetApexes() {
		names = append(names, a.GetName())
	}
	return fmt.Sprintf("version %d, apexes [%s], apk %s + %s, config %s", m.GetVersion(),
		strings.Join(names, " "), m.GetApk().GetPayloadPartitionName(), m.GetApk().GetIdsigPartitionName(),
		m.GetPayloadConfigPath())
}

// checkLayout checks the partition numbers apexd relies on: it finds APEX i at partition
// number i+2 of the disk whose partition 1 is the metadata (formats.md 3.4).
func checkLayout(m *metadata.Metadata, parts map[string]partition, metaLabel string) (string, error) {
	meta := parts[metaLabel]
	if meta.Num != 1 {
		return "", fmt.Errorf("%s is partition %d of %s, apexd needs it to be 1", meta, meta.Num, meta.Disk)
	}
	desc := []string{fmt.Sprintf("%d %s", meta.Num, meta.Label)}
	var labels []string
	for i, a := range m.GetApexes() {
		labels = append(labels, apexLabel(i, a))
	}
	labels = append(labels, m.GetApk().GetPayloadPartitionName(), m.GetApk().GetIdsigPartitionName())
	for i, l := range labels {
		p := parts[l]
		if p.Disk != meta.Disk {
			return "", fmt.Errorf("%s is on %s, the metadata on %s", p, p.Disk, meta.Disk)
		}
		if i < len(m.GetApexes()) && p.Num != i+2 {
			return "", fmt.Errorf("%s is partition %d, apexd opens apex %d at partition %d", p, p.Num, i, i+2)
		}
		desc = append(desc, fmt.Sprintf("%d %s", p.Num, p.Label))
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

// checkApex checks an APEX partition as apexd did between 2021-06 and 2021-07 (formats.md
// 8): the last 4 bytes hold the APEX size (big-endian), the partition is that size plus 4
// rounded up to 4 KiB, and the zip over [0, size) opens under libziparchive's rule that
// nothing follows the end of central directory record and its comment. The APEX's
// apex_manifest.pb must name the APEX the metadata lists.
func checkApex(want string, r io.ReaderAt, partSize int64) (string, error) {
	if partSize < 4 {
		return "", fmt.Errorf("partition is %d bytes, too small for the size trailer", partSize)
	}
	var tr [4]byte
	if err := readFullAt(r, tr[:], partSize-4); err != nil {
		return "", fmt.Errorf("read size trailer: %w", err)
	}
	size := int64(binary.BigEndian.Uint32(tr[:]))
	if size == 0 || size+4 > partSize {
		return "", fmt.Errorf("size trailer says %d bytes, the partition has %d", size, partSize)
	}
	if want := align4K(size + 4); partSize != want {
		return "", fmt.Errorf("partition is %d bytes, a %d-byte apex needs align4K(%d+4) = %d",
			partSize, size, size, want)
	}
	if err := eocdEndsAt(r, size); err != nil {
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
	return fmt.Sprintf("%d-byte apex in a %d-byte partition, apex_manifest.pb names %s", size, partSize, name), nil
}

// eocdEndsAt checks that the zip's end of central directory record plus its comment ends
// exactly at size, as libziparchive (apexd's zip reader) demands.
func eocdEndsAt(r io.ReaderAt, size int64) error {
	n := min(size, eocdSearchRange)
	buf := make([]byte, n)
	if err := readFullAt(r, buf, size-n); err != nil {
		return fmt.Errorf("read zip end of central directory: %w", err)
	}
	for i := len(buf) - eocdLen; i >= 0; i-- {
		if string(buf[i:i+4]) != "PK\x05\x06" {
			continue
		}
		end := size - n + int64(i) + eocdLen + int64(binary.LittleEndian.Uint16(buf[i+20:]))
		if end != size {
			return fmt.Errorf("zip end of central directory record and comment end at byte %d, not at the apex size %d", end, size)
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
// does over the dm-verity device (formats.md 7.3), reads the payload config the metadata
// points at and checks that it asks for the APEXes the metadata lists, in that order.
func checkAPK(m *metadata.Metadata, r io.ReaderAt, partSize int64) (string, error) {
	if partSize%blockSize != 0 {
		return "", fmt.Errorf("partition is %d bytes, not a multiple of %d", partSize, blockSize)
	}
	zr, err := zip.NewReader(r, partSize)
	if err != nil {
		return "", fmt.Errorf("open apk zip over the %d-byte padded partition: %w", partSize, err)
	}
	path := strings.TrimPrefix(m.GetPayloadConfigPath(), apkMountPoint)
	data, err := readZipFile(zr, path)
	if err != nil {
		return "", fmt.Errorf("payload config: %w", err)
	}
	cfg, err := metadata.ParsePayloadConfig(m.GetPayloadConfigPath(), data)
	if err != nil {
		return "", err
	}
	var inConfig, inMetadata []string
	for _, a := range cfg.Apexes {
		inConfig = append(inConfig, a.Name)
	}
	for _, a := range m.GetApexes() {
		inMetadata = append(inMetadata, a.GetName())
	}
	if !slices.Equal(inConfig, inMetadata) {
		return "", fmt.Errorf("payload config asks for apexes [%s], the metadata lists [%s]",
			strings.Join(inConfig, " "), strings.Join(inMetadata, " "))
	}
	return fmt.Sprintf("zip of %d entries opened over the %d-byte padded partition; %s: os %s, apexes [%s] as in the metadata",
		len(zr.File), partSize, path, cfg.OS.Name, strings.Join(inConfig, " ")), nil
}
