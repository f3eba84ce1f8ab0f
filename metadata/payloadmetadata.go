package metadata

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// maxMetadataSize caps the protobuf body of the payload metadata; vmfs writes a few hundred bytes.
const maxMetadataSize = 1 << 20

// Names the guest looks for (formats.md section 3.2, 3.3).
const (
	apkName            = "apk"
	apkPartition       = "microdroid-apk"
	apkIdsigPartition  = "microdroid-apk-idsig"
	guestApkMountPoint = "/mnt/apk/"
)

// NewPayloadMetadata returns the metadata the mid-2021 host wrote: version 1, one entry per
// APEX with only its name (in partition order), the APK and idsig partition names, and the
// payload config path as the guest sees it under /mnt/apk.
func NewPayloadMetadata(configPath string, apexNames []string) *Metadata {
	m := &Metadata{
		Version: 1,
		Apk: &ApkPayload{
			Name:                 apkName,
			PayloadPartitionName: apkPartition,
			IdsigPartitionName:   apkIdsigPartition,
		},
		PayloadConfigPath: guestApkMountPoint + configPath,
	}
	for _, n := range apexNames {
		m.Apexes = append(m.Apexes, &ApexPayload{Name: n})
	}
	return m
}

// EncodeMetadata returns the payload metadata partition contents: the body length as a
// big-endian u32, then the deterministic protobuf encoding of m.
func EncodeMetadata(m *Metadata) ([]byte, error) {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode payload metadata: %w", err)
	}
	if len(body) > maxMetadataSize {
		return nil, fmt.Errorf("encode payload metadata: body is %d bytes, more than %d", len(body), maxMetadataSize)
	}
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...), nil
}

// DecodeMetadata reads one payload metadata blob from r: a big-endian u32 length N (at most
// 1 MiB) and exactly N bytes of protobuf. Bytes after the body are not read.
func DecodeMetadata(r io.Reader) (*Metadata, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, fmt.Errorf("decode payload metadata: read length: %w", err)
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n > maxMetadataSize {
		return nil, fmt.Errorf("decode payload metadata: body length %d exceeds %d", n, maxMetadataSize)
	}
	// r's size is unknown, so let the buffer grow with the data instead of trusting n.
	body, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("decode payload metadata: read %d-byte body: %w", n, err)
	}
	if len(body) != int(n) {
		return nil, fmt.Errorf("decode payload metadata: body is %d bytes, length prefix says %d: %w",
			len(body), n, io.ErrUnexpectedEOF)
	}
	m := new(Metadata)
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("decode payload metadata: %w", err)
	}
	return m, nil
}
