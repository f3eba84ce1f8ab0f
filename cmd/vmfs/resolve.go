package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"vmfs/cmd/vmfs/payload"
	"vmfs/fusedisk"
	"vmfs/layout"
	"vmfs/metadata"
)

// Defaults as on an Android device.
const (
	defaultOSDir = "/apex/com.android.virt/etc"
)

// inputFlags are the flags every command that resolves a payload takes.
type inputFlags struct {
	apexDirs     []string
	apexInfoList string
	osDir        string
	randomGUIDs  bool
	flags        *pflag.FlagSet
}

func (f *inputFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringArrayVar(&f.apexDirs, "apex-dir", nil, "directory holding <name>.apex files (repeatable)")
	fs.StringVar(&f.apexInfoList, "apex-info-list", metadata.DefaultApexInfoList, "apex-info-list.xml mapping APEX names to files (the default is used when it exists; a list named here must exist)")
	fs.StringVar(&f.osDir, "os-dir", defaultOSDir, "directory holding <os>.json VM configs")
	fs.BoolVar(&f.randomGUIDs, "random-guids", false, "fresh random disk and partition GUIDs, as Android does (default: derived from the inputs)")
}

// resolve resolves the payload the command line names.
func (f *inputFlags) resolve(apk, idsig, configPath string) (*payload.Payload, error) {
	return payload.Resolve(payload.Inputs{
		APK: apk, Idsig: idsig, ConfigPath: configPath,
		ApexDirs: f.apexDirs, ApexInfoList: f.apexInfoList, RequireApexInfoList: f.flags.Changed("apex-info-list"),
		OSDir: f.osDir, RandomGUIDs: f.randomGUIDs,
	})
}

// osDiskDir is where the OS config's i-th disk appears in the mount.
func osDiskDir(i int) string { return fmt.Sprintf("disks/%d", i) }

// fuseDisks lists the disks to serve: the payload at the root, the OS config's
// partitioned disks under disks/<i>.
func fuseDisks(p *payload.Payload) []fusedisk.Disk {
	ds := []fusedisk.Disk{{Disk: p.Disk}}
	for i := range p.OSConfig.Disks {
		if d := p.OSDisks[i]; d != nil {
			ds = append(ds, fusedisk.Disk{Dir: osDiskDir(i), Disk: d})
		}
	}
	return ds
}

// vmConfig is the VM config to launch from a mount at mnt: the OS config with its
// partitioned disks replaced by their composites in the mount and the payload disk
// appended, as virtualizationservice does.
func vmConfig(p *payload.Payload, mnt string) *metadata.VMConfig {
	c := *p.OSConfig
	c.Disks = nil
	for i, d := range p.OSConfig.Disks {
		if p.OSDisks[i] != nil {
			d = metadata.DiskImage{Image: fusedisk.Disk{Dir: osDiskDir(i)}.Paths(mnt).Composite, Writable: d.Writable}
		}
		c.Disks = append(c.Disks, d)
	}
	c.Disks = append(c.Disks, metadata.DiskImage{Image: fusedisk.Disk{}.Paths(mnt).Composite})
	return &c
}

// layoutJSON says where every byte of each disk comes from, by the disk's name in
// the mount: its flat image's without .img (payload, disks/<i>/disk).
func layoutJSON(disks []fusedisk.Disk) ([]byte, error) {
	doc := map[string]layout.Description{}
	for _, d := range disks {
		doc[strings.TrimSuffix(d.Paths("").Flat, ".img")] = d.Disk.Describe()
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	return append(b, '\n'), err
}

// metadataJSON is the metadata partition decoded, for people.
func metadataJSON(p *payload.Payload) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.Metadata)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = json.Indent(&out, b, "", "  ")
	return append(out.Bytes(), '\n'), err
}

// indentJSON marshals v for people: indented, '<', '>' and '&' left as they are.
func indentJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}
