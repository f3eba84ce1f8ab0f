package testdata

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// StateOSDir writes to dir an OS config (microdroid.json) that is osDir's with a
// partitioned disk 1, as Microdroid's own config has it for Android 13 to put
// vm-instance on: every disk up to 1 that has no partitions gets one of 4 KiB of
// zeros (os-<i>, in dir). Relative paths are made absolute, so that the rest of
// the config still names osDir's files. `make demo PROFILE=android13` runs it
// through ./stateos.
func StateOSDir(osDir, dir string) error {
	b, err := os.ReadFile(filepath.Join(osDir, "microdroid.json"))
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(osDir, "microdroid.json"), err)
	}
	if osDir, err = filepath.Abs(osDir); err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	abs := func(m map[string]any, key string) {
		if p, ok := m[key].(string); ok && p != "" && !filepath.IsAbs(p) {
			m[key] = filepath.Join(osDir, p)
		}
	}
	for _, key := range []string{"kernel", "initrd", "bootloader"} {
		abs(cfg, key)
	}
	disks, _ := cfg["disks"].([]any)
	for len(disks) < 2 {
		disks = append(disks, map[string]any{})
	}
	for i, d := range disks {
		disk, _ := d.(map[string]any)
		abs(disk, "image")
		parts, _ := disk["partitions"].([]any)
		for _, p := range parts {
			if part, ok := p.(map[string]any); ok {
				abs(part, "path")
			}
		}
		if i > 1 || len(parts) > 0 {
			continue
		}
		zeros := filepath.Join(dir, fmt.Sprintf("zeros%d.img", i))
		if err := os.WriteFile(zeros, make([]byte, 4096), 0o644); err != nil {
			return err
		}
		disks[i] = map[string]any{"writable": false, "partitions": []any{map[string]any{"label": fmt.Sprintf("os-%d", i), "path": zeros}}}
	}
	cfg["disks"] = disks
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "microdroid.json"), append(b, '\n'), 0o644)
}
