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
	guestApkMountPoint = "/mnt/apk/"
)

// PayloadSpec is what the host puts in the payload metadata.
type PayloadSpec struct {
	// ConfigPath is the payload config inside the APK, e.g. "assets/vm_config.json".
	ConfigPath string
	// BinaryName (Android 14+) names the payload by its binary, lib/<abi>/<name> in the
	// APK, instead of a config file (`vm run-app --payload-binary-name`).
	BinaryName string
	// Apexes are the APEXes on the disk, in partition order (SelectApexes).
	Apexes []ApexInfo
	// ExtraApks counts the extra APKs on the disk.
	ExtraApks int
}

// NewMetadata returns the payload metadata virtualizationservice writes at profile p:
// version 1, one ApexPayload per APEX in partition order (the name; from Android 13 also
// its partition, last update and factory flag), the APK and idsig partition names, and the
// payload as "/mnt/apk/" + the config path or (Android 14+) as its binary name, with the
// extra APK count from Android 15.
func (p Profile) NewMetadata(s PayloadSpec) (*Metadata, error) {
	f := p.facts()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s payload metadata: %s", p, fmt.Sprintf(format, args...))
	}
	m := &Metadata{
		Version: 1,
		Apk: &ApkPayload{
			Name:                 apkName,
			PayloadPartitionName: APKLabel,
			IdsigPartitionName:   IdsigLabel,
		},
	}
	switch {
	case s.ExtraApks < 0 || s.ExtraApks > 0 && !f.extraApks:
		return nil, bad("%d extra apks; extra apks need android13 or later", s.ExtraApks)
	case s.BinaryName == "":
		m.Payload = &Metadata_ConfigPath{ConfigPath: guestApkMountPoint + s.ConfigPath}
	case s.ConfigPath != "":
		return nil, bad("both a config path and a payload binary name; give one")
	case !f.binaryName:
		return nil, bad("a payload binary name needs android14 or later")
	case s.ExtraApks > 0 && !f.extraApkCount:
		// Android 14 builds the payload config of a binary name with no extra APKs.
		return nil, bad("%d extra apks with a payload binary name; that needs android15", s.ExtraApks)
	default:
		// The guest looks the binary up as lib/<abi>/<name>.
		if err := ValidName("payload binary", s.BinaryName); err != nil {
			return nil, bad("%v", err)
		}
		c := &BinaryConfig{PayloadBinaryName: s.BinaryName}
		if f.extraApkCount {
			c.ExtraApkCount = uint32(s.ExtraApks)
		}
		m.Payload = &Metadata_Config{Config: c}
	}
	for i, a := range s.Apexes {
		ap := &ApexPayload{Name: a.ModuleName}
		if f.apexUpdateInfo {
			ap.PartitionName = ApexLabel(i)
			ap.LastUpdateSeconds = a.LastUpdateSeconds
			ap.IsFactory = a.IsFactory
		}
		m.Apexes = append(m.Apexes, ap)
	}
	return m, nil
}

// NewPayloadMetadata is Android12.NewMetadata of a config path and APEX names: only the
// names go into the metadata at android12.
func NewPayloadMetadata(configPath string, apexNames []string) *Metadata {
	s := PayloadSpec{ConfigPath: configPath}
	for _, n := range apexNames {
		s.Apexes = append(s.Apexes, ApexInfo{ModuleName: n})
	}
	m, err := Android12.NewMetadata(s)
	if err != nil {
		panic(err) // a config path without extra APKs is always valid
	}
	return m
}

// GetPayloadConfigPath is GetConfigPath under the field's name before Android 14 made it
// one of two payload forms, for callers written before.
func (x *Metadata) GetPayloadConfigPath() string { return x.GetConfigPath() }

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
