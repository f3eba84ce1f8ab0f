package metadata

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"unicode/utf16"

	"vmfs/internal/inputfile"
)

// VMConfig is the VM config JSON (`<os-dir>/<os.name>.json`, AVF's VmConfig).
// After LoadVMConfig every path in it is absolute.
type VMConfig struct {
	Kernel     string      `json:"kernel,omitempty"`
	Initrd     string      `json:"initrd,omitempty"`
	Params     string      `json:"params,omitempty"`
	Bootloader string      `json:"bootloader,omitempty"`
	Disks      []DiskImage `json:"disks"`
	Protected  bool        `json:"protected,omitempty"`
	MemoryMiB  uint32      `json:"memory_mib,omitempty"`
}

// DiskImage is one VM disk: either a whole image file or partitions to assemble.
type DiskImage struct {
	Image      string      `json:"image,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
	Writable   bool        `json:"writable"`
}

// Partition is one partition of an assembled disk.
type Partition struct {
	Label    string `json:"label"`
	Path     string `json:"path"`
	Writable bool   `json:"writable,omitempty"`
}

// maxVMConfigSize caps the VM config JSON; AVF's microdroid.json is about 1 KiB.
const maxVMConfigSize = 1 << 20

// maxLabelUnits is the GPT partition name size in UTF-16 code units.
const maxLabelUnits = 36

// rawVMConfig mirrors VMConfig with pointers so absent keys can be told from zero values.
// Keys it does not list (platform_version, name, cpu_topology, ...) are ignored, as AVF
// ignores keys newer than the reader.
type rawVMConfig struct {
	Kernel     *string        `json:"kernel"`
	Initrd     *string        `json:"initrd"`
	Params     *string        `json:"params"`
	Bootloader *string        `json:"bootloader"`
	Disks      []rawDiskImage `json:"disks"`
	Protected  bool           `json:"protected"`
	MemoryMiB  *uint32        `json:"memory_mib"`
}

type rawDiskImage struct {
	Image      *string     `json:"image"`
	Partitions []Partition `json:"partitions"`
	Writable   *bool       `json:"writable"`
}

// LoadVMConfig reads and validates a VM config JSON file (AVF's VmConfig): exactly one of
// kernel and bootloader, no initrd with a bootloader, each disk exactly one of image and
// partitions and an explicit "writable", partition labels non-empty, unique within their
// disk and at most 36 UTF-16 code units, memory_mib non-zero when present, no key
// repeated in one object (AVF's serde refuses a repeated field). Relative paths
// are resolved against the directory of the JSON file; every path in the result is
// absolute and clean.
func LoadVMConfig(path string) (*VMConfig, error) {
	f, _, err := openRegular(path, "vm config")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxVMConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read vm config %s: %w", path, err)
	}
	if len(data) > maxVMConfigSize {
		return nil, fmt.Errorf("vm config %s: larger than %d bytes", path, maxVMConfigSize)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("vm config %s: %w", path, err)
	}
	return parseVMConfig(path, dir, data)
}

// parseVMConfig does LoadVMConfig's work on data read from name, resolving relative paths
// against the absolute directory dir.
func parseVMConfig(name, dir string, data []byte) (*VMConfig, error) {
	var raw rawVMConfig
	if err := unmarshalConfig("vm config "+name, data, &raw); err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("vm config %s: %s", name, fmt.Sprintf(format, args...))
	}
	if raw.Bootloader == nil && raw.Kernel == nil {
		return nil, bad("VM must have either a bootloader or a kernel image.")
	}
	if raw.Bootloader != nil && (raw.Kernel != nil || raw.Initrd != nil) {
		return nil, bad("Can't have both bootloader and kernel/initrd image.")
	}
	if raw.MemoryMiB != nil && *raw.MemoryMiB == 0 {
		return nil, bad("memory_mib must not be 0")
	}
	resolve := func(key string, p *string) (string, error) {
		if p == nil {
			return "", nil
		}
		if *p == "" {
			return "", bad("%s: empty path", key)
		}
		if filepath.IsAbs(*p) {
			return filepath.Clean(*p), nil
		}
		return filepath.Join(dir, *p), nil
	}
	cfg := &VMConfig{Protected: raw.Protected}
	var err error
	if cfg.Kernel, err = resolve("kernel", raw.Kernel); err != nil {
		return nil, err
	}
	if cfg.Initrd, err = resolve("initrd", raw.Initrd); err != nil {
		return nil, err
	}
	if cfg.Bootloader, err = resolve("bootloader", raw.Bootloader); err != nil {
		return nil, err
	}
	if raw.Params != nil {
		cfg.Params = *raw.Params
	}
	if raw.MemoryMiB != nil {
		cfg.MemoryMiB = *raw.MemoryMiB
	}
	for i, rd := range raw.Disks {
		if (rd.Image == nil) == (len(rd.Partitions) == 0) {
			return nil, bad("disks[%d]: Exactly one of image and partitions must be specified.", i)
		}
		if rd.Writable == nil {
			return nil, bad("disks[%d]: writable is required", i)
		}
		d := DiskImage{Writable: *rd.Writable}
		if d.Image, err = resolve(fmt.Sprintf("disks[%d].image", i), rd.Image); err != nil {
			return nil, err
		}
		seen := make(map[string]bool, len(rd.Partitions))
		for j, p := range rd.Partitions {
			key := fmt.Sprintf("disks[%d].partitions[%d]", i, j)
			if err := checkLabel(p.Label); err != nil {
				return nil, bad("%s: %v", key, err)
			}
			if seen[p.Label] {
				return nil, bad("%s: label %q used twice in one disk", key, p.Label)
			}
			seen[p.Label] = true
			path := p.Path
			if p.Path, err = resolve(key+".path", &path); err != nil {
				return nil, err
			}
			d.Partitions = append(d.Partitions, p)
		}
		cfg.Disks = append(cfg.Disks, d)
	}
	return cfg, nil
}

// checkLabel enforces what a GPT partition name can hold.
func checkLabel(label string) error {
	if label == "" {
		return errors.New("label is required")
	}
	units := 0
	for _, r := range label {
		n := utf16.RuneLen(r)
		if n < 0 {
			return fmt.Errorf("label %q holds a rune UTF-16 cannot encode", inputfile.Quote(label))
		}
		units += n
	}
	if units > maxLabelUnits {
		return fmt.Errorf("label %q is %d UTF-16 code units, more than %d", inputfile.Quote(label), units, maxLabelUnits)
	}
	return nil
}

// OSConfigPath returns the VM config path of the guest OS osName: `<osDir>/<osName>.json`.
func OSConfigPath(osDir, osName string) (string, error) {
	if err := ValidName("os", osName); err != nil {
		return "", err
	}
	return filepath.Join(osDir, osName+".json"), nil
}
