package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vmfs"
	"vmfs/internal/proc"
	"vmfs/metadata"
	"vmfs/testdata"
)

// alignZip pads the zip at path, which has no archive comment, to a multiple of
// 4 KiB with one: its partition is then the file itself.
func alignZip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pad := (4096 - len(b)%4096) % 4096
	binary.LittleEndian.PutUint16(b[len(b)-2:], uint16(pad)) // the end record's comment length
	if err := os.WriteFile(path, append(b, bytes.Repeat([]byte(" "), pad)...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// logLine is the first line of log that holds s, or "".
func logLine(log, s string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// TestPassthrough: as root, where the kernel has FUSE passthrough, `vmfs
// mount` passes through a partition that is exactly one file by default, and
// says so in its log: opened before its file is rewritten in place (same size,
// other bytes), the partition reads the new bytes, past the change guard, while
// payload.img fails with EIO, and it reads on once the server has exited. With
// --no-passthrough, or on a kernel without it, the partition fails too and the
// log says why; run-app takes the flag for its private mount.
func TestPassthrough(t *testing.T) {
	testdata.RequireFUSE(t)
	testdata.RequireRoot(t) // the kernel lets root alone hand it backing files
	kernel := testdata.KernelPassthrough()
	for _, tc := range []struct {
		flag   string
		passed bool
		log    string
	}{
		{"", kernel == nil, "passthrough: the kernel reads these files"},
		{"--no-passthrough", false, "turned off"},
	} {
		t.Run("flag="+tc.flag, func(t *testing.T) {
			if tc.flag == "" && kernel != nil {
				t.Logf("no passthrough expected: %v", kernel)
				tc.log = "this kernel has no FUSE passthrough"
			}
			p := newApexPayload(t, 5000) // android12: the APEX's partition ends in a size trailer
			alignZip(t, p.apk)
			log := filepath.Join(t.TempDir(), "log")
			flags := []string{"--log", log}
			if tc.flag != "" {
				flags = append(flags, tc.flag)
			}
			mnt := p.mount(t, flags...)
			b, _ := os.ReadFile(log)
			line := logLine(string(b), tc.log)
			if line == "" || tc.passed && (!strings.Contains(line, metadata.APKLabel) || strings.Contains(line, metadata.ApexLabel(0))) {
				t.Errorf("log: %s, want %q (with the APK partition, not the APEX's)", b, tc.log)
			}
			if tc.flag != "" {
				// run-app takes it for its private mount, not for one made already.
				if r := runVmfs(t, "", append(append([]string{"run-app", "--dry-run", "--vmm", "qemu", tc.flag}, p.flags...), p.apk, p.idsig, testdata.ConfigPath)...); r.code != 0 {
					t.Errorf("run-app %s: exit %d: %s", tc.flag, r.code, r.stderr)
				}
				if r := runVmfs(t, "", "run-app", "--dry-run", "--vmm", "qemu", tc.flag, "--mount", mnt); r.code != exitUsage || !strings.Contains(r.stderr, "--mount runs from a mount made already") {
					t.Errorf("run-app %s --mount: exit %d: %s", tc.flag, r.code, r.stderr)
				}
			}
			part, err := os.Open(filepath.Join(mnt, "partitions", metadata.APKLabel))
			if err != nil {
				t.Fatal(err)
			}
			defer part.Close()
			changed, err := testdata.Invert(p.apk)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(changed))
			_, err = part.ReadAt(got, 0)
			switch {
			case tc.passed && (err != nil || !bytes.Equal(got, changed)):
				t.Errorf("passed-through partition after its file changed: %v, or other bytes than the file's", err)
			case !tc.passed && !errors.Is(err, syscall.EIO):
				t.Errorf("partition after its file changed: %v, want EIO", err)
			}
			if _, err := os.ReadFile(filepath.Join(mnt, "payload.img")); !errors.Is(err, syscall.EIO) {
				t.Errorf("payload.img after the APK changed: %v, want EIO", err)
			}
			if !tc.passed {
				return
			}
			// The kernel reads the original: past the server's end too.
			m, err := vmfs.Status(context.Background(), mnt)
			if err != nil || m == nil {
				t.Fatalf("mount not in mountinfo: %v", err)
			}
			syscall.Kill(m.Pid, syscall.SIGTERM)
			if !proc.WaitExit(m.Pid, time.Minute) {
				t.Fatal("the server survived SIGTERM")
			}
			if _, err := part.ReadAt(got, 0); err != nil || !bytes.Equal(got, changed) {
				t.Errorf("passed-through partition after the server exited: %v, or other bytes than the file's", err)
			}
		})
	}
}
