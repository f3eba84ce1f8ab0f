package launcher

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	// Two PATH directories: one with both VMM names, one with QEMU only.
	both, qemuOnly, empty := t.TempDir(), t.TempDir(), t.TempDir()
	for _, p := range []string{
		filepath.Join(both, CrosvmBinary), filepath.Join(both, QemuBinary), filepath.Join(qemuOnly, QemuBinary),
	} {
		if err := os.Symlink("/bin/true", p); err != nil {
			t.Fatal(err)
		}
	}
	notExec := writeFile(t, filepath.Join(empty, "crosvm-notexec"), []byte("#!/bin/sh\n"))
	for _, tc := range []struct {
		name     string
		path     string
		o        Options
		vmm, bin string
	}{
		{"auto prefers crosvm", both, Options{}, VMMCrosvm, filepath.Join(both, CrosvmBinary)},
		{"auto word", both, Options{VMM: VMMAuto}, VMMCrosvm, filepath.Join(both, CrosvmBinary)},
		{"auto falls back to qemu", qemuOnly, Options{}, VMMQemu, filepath.Join(qemuOnly, QemuBinary)},
		{"auto explicit crosvm", qemuOnly, Options{Crosvm: "/bin/true"}, VMMCrosvm, "/bin/true"},
		{"auto explicit qemu", empty, Options{Qemu: "/bin/true"}, VMMQemu, "/bin/true"},
		{"qemu asked", both, Options{VMM: VMMQemu}, VMMQemu, filepath.Join(both, QemuBinary)},
		{"crosvm by name in PATH", both, Options{VMM: VMMCrosvm, Crosvm: QemuBinary}, VMMCrosvm, filepath.Join(both, QemuBinary)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			vmm, bin, err := Resolve(tc.o)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if vmm != tc.vmm || bin != tc.bin {
				t.Errorf("Resolve = %q, %q; want %q, %q", vmm, bin, tc.vmm, tc.bin)
			}
		})
	}
	for _, tc := range []struct {
		name string
		path string
		o    Options
		is   error
	}{
		{"auto with nothing", empty, Options{}, exec.ErrNotFound},
		{"auto explicit crosvm missing", both, Options{Crosvm: filepath.Join(empty, "crosvm")}, fs.ErrNotExist},
		{"crosvm missing", qemuOnly, Options{VMM: VMMCrosvm}, exec.ErrNotFound},
		{"qemu missing", empty, Options{VMM: VMMQemu}, exec.ErrNotFound},
		{"not executable", both, Options{VMM: VMMCrosvm, Crosvm: notExec}, fs.ErrPermission},
		{"unknown vmm", both, Options{VMM: "firecracker"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			vmm, bin, err := Resolve(tc.o)
			if err == nil {
				t.Fatalf("Resolve = %q, %q; want an error", vmm, bin)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Resolve error %q, want errors.Is %v", err, tc.is)
			}
			t.Log(err)
		})
	}
}
