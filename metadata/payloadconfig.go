package metadata

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"

	"vmfs/internal/inputfile"
)

// maxPayloadConfigSize caps the payload config read from the APK; real ones are a few hundred bytes.
const maxPayloadConfigSize = 1 << 20

// Task types of the payload config (`task.type`).
const (
	TaskExecutable         = "executable"
	TaskMicrodroidLauncher = "microdroid_launcher"
	DefaultOSName          = "microdroid"
)

// PayloadConfig is the VM payload config JSON stored inside the APK (AVF's VmPayloadConfig).
type PayloadConfig struct {
	OS           OSConfig     `json:"os"`
	Task         *Task        `json:"task,omitempty"`
	Apexes       []ApexConfig `json:"apexes,omitempty"`
	ExtraApks    []ApkConfig  `json:"extra_apks,omitempty"`
	PreferStaged bool         `json:"prefer_staged,omitempty"`
}

// OSConfig names the guest OS; its VM config is `<os-dir>/<Name>.json`.
type OSConfig struct {
	Name string `json:"name"`
}

// Task is what the guest runs: an executable path, or a .so started by microdroid_launcher.
type Task struct {
	Type    string `json:"type"`
	Command string `json:"command"`
}

// ApexConfig names one APEX the payload needs.
type ApexConfig struct {
	Name string `json:"name"`
}

// ApkConfig names one extra APK (a path on the device).
type ApkConfig struct {
	Path string `json:"path"`
}

// rawPayloadConfig mirrors PayloadConfig with pointers so absent keys can be told from
// empty ones, as serde does for required fields. The keys only some releases know stay
// raw until the profile says how to read them.
type rawPayloadConfig struct {
	OS *struct {
		Name *string `json:"name"`
	} `json:"os"`
	Task *struct {
		Type    *string         `json:"type"`
		Command *string         `json:"command"`
		Args    json.RawMessage `json:"args"`
	} `json:"task"`
	Apexes []struct {
		Name *string `json:"name"`
	} `json:"apexes"`
	ExtraApks []struct {
		Path *string `json:"path"`
	} `json:"extra_apks"`
	PreferStaged     bool            `json:"prefer_staged"`
	ExportTombstones json.RawMessage `json:"export_tombstones"`
	EnableAuthfs     json.RawMessage `json:"enable_authfs"`
	Hugepages        json.RawMessage `json:"hugepages"`
}

// ParsePayloadConfig parses and validates a payload config at android12 (the default);
// see Profile.ParsePayloadConfig.
func ParsePayloadConfig(name string, data []byte) (*PayloadConfig, error) {
	return Android12.ParsePayloadConfig(name, data)
}

// ParsePayloadConfig parses and validates a payload config as profile p's
// virtualizationservice reads it; name is used in errors, each of which names the key.
// Unknown keys are ignored, as AVF does, and a key repeated in one object is refused;
// task.type defaults to "executable" and os.name to "microdroid". What depends on p:
//
//   - os.name: any valid name at android12 (vmfs loads <os-dir>/<name>.json); only
//     "microdroid" at android13 and android14; deprecated at android15, where it may only
//     be "" or "microdroid" (the OS is chosen on the command line).
//   - task.args: a list of strings up to android13, then an unknown key.
//   - export_tombstones: a boolean, required at android13 and optional since.
//   - enable_authfs (android14+) and hugepages (android15): booleans.
//
// vmfs reads these last keys only to refuse what AVF refuses: none of them changes the disk.
func (p Profile) ParsePayloadConfig(name string, data []byte) (*PayloadConfig, error) {
	var raw rawPayloadConfig
	if err := unmarshalConfig("payload config "+name, data, &raw); err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("payload config %s: %s", name, fmt.Sprintf(format, args...))
	}
	schema := p.facts().schema
	cfg := &PayloadConfig{OS: OSConfig{Name: DefaultOSName}, PreferStaged: raw.PreferStaged}
	if raw.OS != nil {
		if raw.OS.Name == nil {
			return nil, bad("os.name is required when os is present")
		}
		if err := schema.checkOS(p, *raw.OS.Name); err != nil {
			return nil, bad("%v", err)
		}
		if *raw.OS.Name != "" {
			cfg.OS.Name = *raw.OS.Name
		}
	}
	if raw.Task != nil {
		t := &Task{Type: TaskExecutable}
		if raw.Task.Type != nil {
			t.Type = *raw.Task.Type
		}
		if t.Type != TaskExecutable && t.Type != TaskMicrodroidLauncher {
			return nil, bad("task.type %q is not %q or %q", inputfile.Quote(t.Type), TaskExecutable, TaskMicrodroidLauncher)
		}
		if raw.Task.Command == nil || *raw.Task.Command == "" {
			return nil, bad("task.command is required")
		}
		t.Command = *raw.Task.Command
		if err := checkKey(p, "task.args", raw.Task.Args, schema.taskArgs, new([]string), "a list of strings"); err != nil {
			return nil, bad("%v", err)
		}
		cfg.Task = t
	}
	seen := make(map[string]bool, len(raw.Apexes))
	for i, a := range raw.Apexes {
		if a.Name == nil {
			return nil, bad("apexes[%d].name is required", i)
		}
		if err := ValidName("apex", *a.Name); err != nil {
			return nil, bad("apexes[%d]: %v", i, err)
		}
		if seen[*a.Name] {
			return nil, bad("apex %q listed twice", *a.Name)
		}
		seen[*a.Name] = true
		cfg.Apexes = append(cfg.Apexes, ApexConfig{Name: *a.Name})
	}
	for i, a := range raw.ExtraApks {
		if a.Path == nil || *a.Path == "" {
			return nil, bad("extra_apks[%d].path is required", i)
		}
		cfg.ExtraApks = append(cfg.ExtraApks, ApkConfig{Path: *a.Path})
	}
	for _, k := range []struct {
		key string
		raw json.RawMessage
		how presence
	}{
		{"export_tombstones", raw.ExportTombstones, schema.exportTombstones},
		{"enable_authfs", raw.EnableAuthfs, schema.enableAuthfs},
		{"hugepages", raw.Hugepages, schema.hugepages},
	} {
		if err := checkKey(p, k.key, k.raw, k.how, new(bool), "true or false"); err != nil {
			return nil, bad("%v", err)
		}
	}
	return cfg, nil
}

// checkOS checks os.name against the profile's rule.
func (s configSchema) checkOS(p Profile, name string) error {
	switch {
	case s.osName == osAny:
		return ValidName("os", name)
	case name == DefaultOSName, name == "" && s.osName == osDeprecated:
		return nil
	case s.osName == osDeprecated:
		return fmt.Errorf("os is deprecated at %s: os.name %q may only be \"\" or %q",
			p, inputfile.Quote(name), DefaultOSName)
	}
	return fmt.Errorf("unknown os.name %q: %s runs only %q", inputfile.Quote(name), p, DefaultOSName)
}

// checkKey decodes the value of key into v (a pointer to the type serde wants, described
// by want) when the profile knows the key. As serde does, it takes null only for an
// Option and insists on a required key.
func checkKey(p Profile, key string, raw json.RawMessage, how presence, v any, want string) error {
	switch {
	case how == keyUnknown:
		return nil
	case raw == nil && how == keyRequired:
		return fmt.Errorf("%s is required at %s", key, p)
	case raw == nil, string(raw) == "null" && how == keyOption:
		return nil
	}
	// The whole config has been decoded once already, so only the type can be wrong.
	if err := json.Unmarshal(raw, v); err != nil || string(raw) == "null" {
		return fmt.Errorf("%s is %s, want %s", key, inputfile.Quote(string(raw)), want)
	}
	return nil
}

// ReadPayloadConfig is Android12.ReadPayloadConfig, the default.
func ReadPayloadConfig(apkPath, configPath string) (*PayloadConfig, error) {
	return Android12.ReadPayloadConfig(apkPath, configPath)
}

// ReadPayloadConfig reads the payload config at configPath inside the APK (a zip) and
// parses it at profile p. configPath must be a clean relative path naming a file entry,
// such as "assets/vm_config.json". A missing entry gives an error wrapping ErrNotFound.
func (p Profile) ReadPayloadConfig(apkPath, configPath string) (*PayloadConfig, error) {
	if err := checkConfigPath(apkPath, configPath); err != nil {
		return nil, err
	}
	f, size, err := openRegular(apkPath, "apk")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return p.ReadPayloadConfigFrom(apkPath, f, size, configPath)
}

// checkConfigPath refuses a config path that is not a clean relative path. It is
// repeated in errors cut: it may come from an input file (the guest reads it from
// the payload metadata).
func checkConfigPath(apkPath, configPath string) error {
	if !fs.ValidPath(configPath) || configPath == "." {
		return fmt.Errorf("apk %s: config path %q must be a clean relative path without '..'", apkPath, inputfile.Quote(configPath))
	}
	return nil
}

// ReadPayloadConfigFrom is ReadPayloadConfig for an APK already open: r, of size
// bytes, which apkPath names in errors.
func (p Profile) ReadPayloadConfigFrom(apkPath string, r io.ReaderAt, size int64, configPath string) (*PayloadConfig, error) {
	if err := checkConfigPath(apkPath, configPath); err != nil {
		return nil, err
	}
	cp := inputfile.Quote(configPath)
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("open apk %s: %w", apkPath, err)
	}
	var entry *zip.File
	for _, zf := range zr.File {
		if zf.Name != configPath {
			continue
		}
		// Two entries with one name would let different readers see different configs.
		if entry != nil {
			return nil, fmt.Errorf("apk %s: entry %s appears twice", apkPath, cp)
		}
		entry = zf
	}
	if entry == nil {
		return nil, fmt.Errorf("apk %s: payload config %s: %w", apkPath, cp, ErrNotFound)
	}
	if entry.Mode().IsDir() {
		return nil, fmt.Errorf("apk %s: payload config %s is a directory", apkPath, cp)
	}
	if entry.UncompressedSize64 > maxPayloadConfigSize {
		return nil, fmt.Errorf("apk %s: payload config %s is %d bytes, more than the %d allowed",
			apkPath, cp, entry.UncompressedSize64, maxPayloadConfigSize)
	}
	rc, err := entry.Open()
	if err != nil {
		return nil, fmt.Errorf("apk %s: open %s: %w", apkPath, cp, err)
	}
	defer rc.Close()
	// The header's size may lie; never read more than the cap allows.
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rc, maxPayloadConfigSize+1)); err != nil {
		return nil, fmt.Errorf("apk %s: read %s: %w", apkPath, cp, err)
	}
	if buf.Len() > maxPayloadConfigSize {
		return nil, fmt.Errorf("apk %s: payload config %s is larger than the %d bytes allowed",
			apkPath, cp, maxPayloadConfigSize)
	}
	return p.ParsePayloadConfig(apkPath+"!"+cp, buf.Bytes())
}
