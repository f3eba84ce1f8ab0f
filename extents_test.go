package vmfs

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"vmfs/launcher"
	"vmfs/testdata"
)

// TestExtentsFallBack: an APK read through a FUSE loopback of its directory
// gets no extent descriptors; the mount warns, and run-app hands QEMU the flat
// image, while a payload of local files goes through its VMDK.
func TestExtentsFallBack(t *testing.T) {
	testdata.RequireFUSE(t)
	testdata.RequireRoot(t) // go-fuse mounts directly
	ctx := context.Background()
	root, err := fs.NewLoopbackRoot(filepath.Dir(testdata.APKPath()))
	if err != nil {
		t.Fatal(err)
	}
	loop := t.TempDir()
	srv, err := fs.Mount(loop, root, &fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount() })

	for _, tc := range []struct {
		name, apk string
		drive     string // the payload's drive in QEMU's command line
	}{
		{"local", testdata.APKPath(), "/payload.vmdk,format=vmdk,"},
		{"on FUSE", filepath.Join(loop, filepath.Base(testdata.APKPath())), "/payload.img,format=raw,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{APK: tc.apk, Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath,
				ApexInfoList: testdata.APEXInfoListPath(), OSDir: testdata.OSDir()}
			core, logs := observer.New(zap.WarnLevel)
			var cmdline strings.Builder
			err := RunApp(ctx, RunOptions{Spec: spec, VM: launcher.Options{VMM: launcher.VMMQemu}, DryRun: &cmdline, Logger: zap.New(core)})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(cmdline.String(), tc.drive) {
				t.Errorf("QEMU's payload drive is not %q: %s", tc.drive, cmdline.String())
			}
			warned := logs.FilterMessageSnippet("no extent descriptors").Len() > 0
			if want := tc.name != "local"; warned != want {
				t.Errorf("warned %t, want %t: %v", warned, want, logs.All())
			}
		})
	}
}
