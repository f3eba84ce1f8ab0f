package vmfs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	"vmfs/fusedisk"
	"vmfs/internal/inputfile"
	"vmfs/layout"
	"vmfs/metadata"
)

// DefaultOSDir holds the OS configs (<os>.json) on an Android device.
const DefaultOSDir = "/apex/com.android.virt/etc"

// Spec names the files a payload is made of and where to look for the rest.
type Spec struct {
	// Profile is the Android release whose payload disk to build; the zero value
	// is android12, the mid-2021 format.
	Profile metadata.Profile
	// ConfigPath names the payload config inside the APK; from android14 a
	// PayloadBinaryName may name the payload instead (then the config is not read).
	APK, Idsig, ConfigPath, PayloadBinaryName string
	// ExtraIdsigs are the extra APKs' idsigs, in order (`--extra-idsig`); the extra
	// APKs come from the config's extra_apks, or at android15 with a binary name
	// from ExtraAPKs (`--extra-apk`).
	ExtraIdsigs, ExtraAPKs []string
	Debug                  string   // `--debug`: none, app_only or full; "" is the profile's default
	ApexDirs               []string // searched for <name>.apex, in order
	// ApexInfoList maps APEX names to files. "" means metadata.DefaultApexInfoList
	// when it exists; a list named here must exist.
	ApexInfoList string
	OSDir        string // holds <os.name>.json; "" means DefaultOSDir
	RandomGUIDs  bool   // fresh GUIDs, as Android does; default: derived from the inputs
	Files        *Files // the APK and idsig already open: read these, never open APK and Idsig
	// Instance is the instance image (`vm run-app <apk> <idsig> <instance>`, from
	// android13), Storage encrypted storage (`--storage`, from android14): writable
	// partitions of the VM's own (see PrepareState for missing ones). Without an
	// instance image only the payload disk is laid out, which Microdroid of Android
	// 13 and later refuses to boot. StorageSize is the size a missing storage is
	// made at (0: DefaultStateSize).
	Instance, Storage string
	StorageSize       int64
	// InstanceIDFile holds the VM's instance ID (`--instance-id-file`, android15):
	// made or checked by PrepareState; no VMM is given it (see the README).
	InstanceIDFile string
}

// ExtraAPKPaths are the extra APKs of spec's payload, as Resolve finds them: the
// payload config's extra_apks (read from the APK) or, with a binary name,
// ExtraAPKs; a service's client opens these and sends them (Files.ExtraAPKs).
// Its errors are of kind ErrInput.
func (s Spec) ExtraAPKPaths() ([]string, error) {
	apk, err := filepath.Abs(s.APK)
	if err != nil {
		return nil, WithKind(ErrInput, err)
	}
	var cfg *metadata.PayloadConfig
	if s.PayloadBinaryName == "" {
		if cfg, err = s.Profile.ReadPayloadConfig(apk, s.ConfigPath); err != nil {
			return nil, WithKind(ErrInput, err)
		}
	}
	paths, err := s.Profile.ExtraApks(apk, cfg, s.ExtraAPKs, len(s.ExtraIdsigs))
	return paths, WithKind(ErrInput, err)
}

// Payload is a Spec resolved: every input read and checked, every disk laid out,
// ready to mount. Paths are absolute.
type Payload struct {
	Profile                metadata.Profile
	APK, Idsig, ConfigPath string
	PayloadBinaryName      string
	ExtraAPKs, ExtraIdsigs []string
	Config                 *metadata.PayloadConfig // nil when a binary name names the payload
	OSConfigPath           string
	OSConfig               *metadata.VMConfig
	Metadata               *metadata.Metadata
	Apexes                 []metadata.ApexInfo // in partition order, ModulePath absolute
	Disk                   *layout.Disk
	OSDisks                map[int]*layout.Disk // the OS config's partitioned disks, by index
	// State are the VM's state files, in partition order; StateDisk holds them
	// when the profile gives them a disk of their own (android14+), else they are
	// on OSDisks[1] (android13).
	State     []StateFile
	StateDisk *layout.Disk
	files     *Files // Spec.Files
}

// Resolve reads and checks the inputs and lays out every disk, as
// virtualizationservice's load_app_config does. It keeps nothing open: whoever
// serves the disks opens and pins the sources. Its errors are of kind ErrInput;
// when ctx is done first (an input on a stuck filesystem), ctx's cause.
func Resolve(ctx context.Context, spec Spec) (*Payload, error) {
	var p *Payload
	err := interruptible(ctx, func() (err error) { p, err = resolve(spec); return WithKind(ErrInput, err) })
	return p, err
}

func resolve(spec Spec) (*Payload, error) {
	var err error
	p := &Payload{Profile: spec.Profile, ConfigPath: spec.ConfigPath, PayloadBinaryName: spec.PayloadBinaryName, ExtraIdsigs: spec.ExtraIdsigs, files: spec.Files}
	if p.APK, err = filepath.Abs(spec.APK); err != nil {
		return nil, err
	}
	if p.Idsig, err = filepath.Abs(spec.Idsig); err != nil {
		return nil, err
	}
	apk, idsig := spec.inputs(p.APK, p.Idsig)
	if err := parseIdsig(idsig); err != nil {
		return nil, err
	}
	osName := "microdroid" // with a binary name, as Android picks it
	if spec.PayloadBinaryName == "" {
		if p.Config, err = readPayloadConfig(p.Profile, apk, spec.ConfigPath); err != nil {
			return nil, err
		}
		osName = p.Config.OS.Name
	}
	osDir := spec.OSDir
	if osDir == "" {
		osDir = DefaultOSDir
	}
	if p.OSConfigPath, err = metadata.OSConfigPath(osDir, osName); err != nil {
		return nil, fmt.Errorf("payload config %s in %s: %w", inputfile.Quote(spec.ConfigPath), inputfile.Quote(spec.APK), err)
	}
	if p.OSConfig, err = metadata.LoadVMConfig(p.OSConfigPath); err != nil {
		return nil, err
	}
	if p.State, err = spec.stateFiles(); err != nil {
		return nil, err
	}
	for i := range p.State {
		if err := p.State[i].read(p.Profile); err != nil {
			return nil, err
		}
	}
	if err := p.layOutPayload(spec, apk, idsig); err != nil {
		return nil, err
	}
	if err := p.layOutOSDisks(spec.RandomGUIDs); err != nil {
		return nil, err
	}
	return p, p.layOutStateDisk(spec.RandomGUIDs)
}

// layOutPayload picks the APEXes and extra APKs as the profile's Android does,
// writes the metadata and lays out the payload disk.
func (p *Payload) layOutPayload(spec Spec, apk, idsig input) error {
	list := spec.ApexInfoList
	if list == "" {
		list = metadata.DefaultApexInfoList
	} else if _, err := inputfile.Stat(list); err != nil {
		// The resolver passes over a list that does not exist (the default one on a
		// host without /apex), so one that must exist is checked here.
		return &metadata.InputError{Kind: "apex info list", Err: err}
	}
	prof := p.Profile
	debug, err := prof.ParseDebugLevel(spec.Debug)
	if err != nil {
		return err
	}
	var names []string
	if p.Config != nil {
		for _, a := range p.Config.Apexes {
			names = append(names, a.Name)
		}
	}
	if p.ExtraAPKs, err = prof.ExtraApks(p.APK, p.Config, spec.ExtraAPKs, len(spec.ExtraIdsigs)); err != nil {
		return err
	}
	if p.files != nil && (len(p.files.ExtraAPKs) != len(p.ExtraAPKs) || len(p.files.ExtraIdsigs) != len(p.ExtraIdsigs)) {
		return fmt.Errorf("%d extra APKs and %d extra idsigs handed over open (Spec.Files), the payload has %d",
			len(p.files.ExtraAPKs), len(p.files.ExtraIdsigs), len(p.ExtraAPKs))
	}
	apexes, err := selectApexes(prof, metadata.ApexResolver{InfoList: list, Dirs: spec.ApexDirs}, names, debug)
	if err != nil {
		return err
	}
	if p.Metadata, err = prof.NewMetadata(metadata.PayloadSpec{ConfigPath: spec.ConfigPath, BinaryName: spec.PayloadBinaryName, Apexes: apexes, ExtraApks: len(p.ExtraAPKs)}); err != nil {
		return err
	}
	return p.layOutDisk(apexes, spec.RandomGUIDs, apk, idsig)
}

// selectApexes finds the APEXes of the payload. The mid-2021 host looks up each
// APEX the config names, in its order; from Android 13 a set is chosen from the
// apex-info-list by the profile's rules (required and debug APEXes, sorted).
func selectApexes(prof metadata.Profile, r metadata.ApexResolver, names []string, debug metadata.DebugLevel) ([]metadata.ApexInfo, error) {
	if prof == metadata.Android12 {
		var apexes []metadata.ApexInfo
		for _, name := range names {
			path, err := r.Resolve(name)
			if err != nil {
				return nil, err
			}
			apexes = append(apexes, metadata.ApexInfo{ModuleName: name, ModulePath: path, IsActive: true})
		}
		return apexes, nil
	}
	entries, err := r.Entries(prof.ApexNames(names, debug))
	if err != nil {
		return nil, err
	}
	return prof.SelectApexes(names, entries, debug)
}

// layOutDisk lays out the payload disk over the metadata and the chosen files.
func (p *Payload) layOutDisk(apexes []metadata.ApexInfo, randomGUIDs bool, apk, idsig input) error {
	lp := layout.PayloadParts{Format: layout.Format{MetadataLabel: p.Profile.MetadataLabel(), ZeroPadApexes: p.Profile.ZeroPadApexes()}}
	var err error
	if lp.Metadata, err = metadata.EncodeMetadata(p.Metadata); err != nil {
		return err
	}
	for _, a := range apexes {
		src, err := statSource(a.ModulePath)
		if err != nil {
			return fmt.Errorf("apex %s: %w", a.ModuleName, err)
		}
		a.ModulePath = src.Path
		p.Apexes = append(p.Apexes, a)
		lp.Apexes = append(lp.Apexes, src)
	}
	if lp.APK, err = apk.source(); err != nil {
		return err
	}
	if lp.Idsig, err = idsig.source(); err != nil {
		return err
	}
	for i, apk := range p.ExtraAPKs {
		a, id := input{name: apk, kind: "extra apk"}, input{name: p.ExtraIdsigs[i], kind: "extra idsig"}
		if p.files != nil {
			a.f, id.f = p.files.ExtraAPKs[i], p.files.ExtraIdsigs[i]
		}
		var e layout.ExtraAPK
		if e.APK, err = a.source(); err != nil {
			return err
		}
		if e.Idsig, err = id.source(); err != nil {
			return err
		}
		lp.Extra = append(lp.Extra, e)
	}
	partitions := len(lp.Apexes) + 3 + 2*len(lp.Extra)
	if p.Disk, err = layout.PayloadDisk(lp, guids(randomGUIDs, partitions)); err != nil {
		return fmt.Errorf("%s payload disk of %s: %w", p.Profile, inputfile.Quote(p.APK), err)
	}
	return nil
}

// stateOSDisk is the OS config's disk Android 13 appends vm-instance to
// (virtualizationservice's `vm_config.disks[1]`).
const stateOSDisk = 1

// layOutOSDisks lays out the OS config's partitioned disks, with the state
// partitions on disk 1 when the profile puts them there.
func (p *Payload) layOutOSDisks(randomGUIDs bool) error {
	p.OSDisks = map[int]*layout.Disk{}
	onOS := p.Profile.State() == metadata.StateOnOSDisk && len(p.State) > 0
	if onOS && (len(p.OSConfig.Disks) <= stateOSDisk || len(p.OSConfig.Disks[stateOSDisk].Partitions) == 0) {
		return fmt.Errorf("vm config %s: %s puts %s on the config's disk %d, as Microdroid's config has it, but it has no partitioned disk %d",
			p.OSConfigPath, p.Profile, metadata.InstanceLabel, stateOSDisk, stateOSDisk)
	}
	for i, d := range p.OSConfig.Disks {
		if len(d.Partitions) == 0 {
			continue
		}
		var parts []layout.FilePart
		for _, part := range d.Partitions {
			src, err := statSource(part.Path)
			if err != nil {
				return fmt.Errorf("vm config %s: %w", p.OSConfigPath, err)
			}
			parts = append(parts, layout.FilePart{Label: part.Label, Source: src, Writable: part.Writable})
		}
		if onOS && i == stateOSDisk {
			for _, s := range p.State {
				parts = append(parts, s.part())
			}
		}
		var err error
		if p.OSDisks[i], err = layout.FilesDisk(parts, guids(randomGUIDs, len(parts))); err != nil {
			return fmt.Errorf("vm config %s: disk %d: %w", p.OSConfigPath, i, err)
		}
	}
	return nil
}

// layOutStateDisk lays out the disk of the state partitions, when there are
// some and the profile gives them a disk.
func (p *Payload) layOutStateDisk(randomGUIDs bool) error {
	if p.Profile.State() != metadata.StateDiskFirst || len(p.State) == 0 {
		return nil
	}
	parts := make([]layout.FilePart, len(p.State))
	for i, s := range p.State {
		parts[i] = s.part()
	}
	var err error
	if p.StateDisk, err = layout.FilesDisk(parts, guids(randomGUIDs, len(parts))); err != nil {
		return fmt.Errorf("%s state disk: %w", p.Profile, err)
	}
	return nil
}

// stateDiskIndex is the state disk's place in the VM config: after the OS
// config's disks, before the payload disk.
func (p *Payload) stateDiskIndex() int { return len(p.OSConfig.Disks) }

// ApexPaths are the APEX files, in partition order.
func (p *Payload) ApexPaths() []string {
	paths := make([]string, len(p.Apexes))
	for i, a := range p.Apexes {
		paths[i] = a.ModulePath
	}
	return paths
}

// MetadataBlob is the metadata partition's content before its zero padding.
func (p *Payload) MetadataBlob() []byte { return p.Disk.Partitions[0].Extents[0].Data }

// osDiskDir is where the OS config's i-th disk appears in a mount.
func osDiskDir(i int) string { return fmt.Sprintf("disks/%d", i) }

// Disks lists the disks to serve: the payload at the root, the OS config's
// partitioned disks under disks/<i>, and the state disk under disks/<n> (n: the
// OS config's disk count, its index in the VM config), in that order.
func (p *Payload) Disks() []fusedisk.Disk {
	ds := []fusedisk.Disk{{Disk: p.Disk}}
	for i := range p.OSConfig.Disks {
		if d := p.OSDisks[i]; d != nil {
			ds = append(ds, fusedisk.Disk{Dir: osDiskDir(i), Disk: d})
		}
	}
	if p.StateDisk != nil {
		ds = append(ds, fusedisk.Disk{Dir: osDiskDir(p.stateDiskIndex()), Disk: p.StateDisk})
	}
	return ds
}

// VMConfig is the VM config to launch from a mount at dir: the OS config with its
// partitioned disks replaced by their composites in the mount, then the state
// disk (android14+) and the payload disk appended, as virtualizationservice does.
func (p *Payload) VMConfig(dir string) *metadata.VMConfig {
	c := *p.OSConfig
	c.Disks = nil
	for i, d := range p.OSConfig.Disks {
		if p.OSDisks[i] != nil {
			d = metadata.DiskImage{Image: fusedisk.Disk{Dir: osDiskDir(i)}.Paths(dir).Composite, Writable: d.Writable}
		}
		if p.Profile.State() == metadata.StateOnOSDisk && i == stateOSDisk {
			d.Writable = true // crosvm opens a composite read-write only for a writable disk
		}
		c.Disks = append(c.Disks, d)
	}
	if p.StateDisk != nil {
		c.Disks = append(c.Disks, metadata.DiskImage{Image: fusedisk.Disk{Dir: osDiskDir(p.stateDiskIndex())}.Paths(dir).Composite, Writable: true})
	}
	c.Disks = append(c.Disks, metadata.DiskImage{Image: fusedisk.Disk{}.Paths(dir).Composite})
	return &c
}

// MetadataJSON is the metadata partition decoded, for people.
func (p *Payload) MetadataJSON() ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.Metadata)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = json.Indent(&out, b, "", "  ")
	return append(out.Bytes(), '\n'), err
}

// guids returns layout options with random GUIDs for n partitions when asked for.
func guids(random bool, n int) layout.Options {
	if !random {
		return layout.Options{}
	}
	g := make([]uuid.UUID, n+1)
	for i := range g {
		g[i] = uuid.New()
	}
	return layout.Options{GUIDs: g}
}

func statSource(path string) (layout.Source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return layout.Source{}, err
	}
	st, err := inputfile.Stat(abs)
	if err != nil {
		return layout.Source{}, err
	}
	return layout.Source{Path: abs, Size: st.Size()}, nil
}
