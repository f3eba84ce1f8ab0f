package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vmfs/testdata"
)

// unitPath is the systemd unit of `vmfs serve` the project ships.
const unitPath = "../../contrib/systemd/vmfs.service"

// unitHardening are settings the unit must have, with their values.
var unitHardening = map[string]string{
	"NoNewPrivileges":         "yes",
	"DevicePolicy":            "closed",
	"RestrictAddressFamilies": "AF_UNIX",
	"IPAddressDeny":           "any",
	"RestrictNamespaces":      "yes",
	"LockPersonality":         "yes",
	"RestrictRealtime":        "yes",
	"RestrictSUIDSGID":        "yes",
	"ProtectClock":            "yes",
	"UMask":                   "0077",
	"SystemCallArchitectures": "native",
	"SystemCallFilter":        "~@cpu-emulation @debug @module @obsolete @raw-io @reboot @swap",
	"SystemCallErrorNumber":   "EPERM",
	"KillMode":                "mixed", // SIGTERM to vmfs alone: it stops its VMs itself
}

// unitCapabilities and unitDevices are all the service may have.
var (
	unitCapabilities = []string{"CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_ADMIN"}
	unitDevices      = []string{"/dev/fuse rw", "/dev/kvm rw", "/dev/vhost-vsock rw"}
)

// unitNoMountNamespace are settings that give a service a mount namespace of its
// own, whose / systemd makes a slave first: the service's mount and the payload
// mounts it moves onto clients' mountpoints would never reach the host.
var unitNoMountNamespace = []string{
	"ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
	"ExecPaths", "NoExecPaths", "BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem", "PrivateDevices",
	"PrivateNetwork", "PrivateMounts", "PrivateIPC", "ProtectKernelTunables", "ProtectKernelModules",
	"ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset", "MountFlags",
	"RootDirectory", "RootImage", "NetworkNamespacePath", "IPCNamespacePath",
}

// TestSystemdUnit: the service's unit passes systemd-analyze verify (pointed at
// the built binary: verify checks the commands exist) without a word about it,
// has its hardening, exactly its capabilities and devices, and nothing that would
// give it a mount namespace of its own.
func TestSystemdUnit(t *testing.T) {
	analyze := testdata.RequireTool(t, "systemd-analyze")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	for k, want := range unitHardening {
		if got := settings[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %s=%s", k, got, k, want)
		}
	}
	var caps []string
	for _, v := range settings["CapabilityBoundingSet"] {
		caps = append(caps, strings.Fields(v)...)
	}
	slices.Sort(caps)
	if !slices.Equal(caps, unitCapabilities) {
		t.Errorf("CapabilityBoundingSet %v, want %v", caps, unitCapabilities)
	}
	devices := slices.Sorted(slices.Values(settings["DeviceAllow"]))
	if !slices.Equal(devices, unitDevices) {
		t.Errorf("DeviceAllow %q, want %q", devices, unitDevices)
	}
	for _, k := range unitNoMountNamespace {
		if v, ok := settings[k]; ok {
			t.Errorf("%s=%s: a mount namespace of the service's own would keep its mounts from the host", k, v)
		}
	}

	path := filepath.Join(t.TempDir(), "vmfs.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/vmfs", vmfsBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	// An unknown or misspelt setting is only a warning (exit 0): any line about
	// the unit fails the test.
	var said []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "vmfs.service") {
			said = append(said, line)
		}
	}
	if err != nil || len(said) > 0 {
		t.Errorf("systemd-analyze verify: %v:\n%s", err, out)
	}
}
