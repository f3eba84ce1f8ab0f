package vmfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vmfs/metadata"
	"vmfs/testdata"
)

// openedSpec is the fixture payload with its APK and idsig handed over open,
// under names that lead nowhere: only the files can be read.
func openedSpec(t *testing.T, apk, idsig *os.File) Spec {
	s := fixtureSpec()
	s.APK, s.Idsig = "/nonexistent/client/app.apk", "/nonexistent/client/app.apk.idsig"
	s.Files = &Files{APK: apk, Idsig: idsig}
	return s
}

func openFixture(t *testing.T, path string, flags int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestResolveOpened: a payload resolved from files opened by the caller reads
// them, never their names, mounts and verifies from them; a descriptor that
// reads nothing (O_PATH, write-only) or is no regular file is a bad input.
func TestResolveOpened(t *testing.T) {
	ctx := context.Background()
	apk, idsig := openFixture(t, testdata.APKPath(), os.O_RDONLY), openFixture(t, testdata.IdsigPath(), os.O_RDONLY)
	p, err := Resolve(ctx, openedSpec(t, apk, idsig))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx); err != nil {
		t.Errorf("verify from the opened files: %v", err)
	}
	for _, s := range p.Disk.Sources {
		if strings.HasPrefix(s.Path, "/nonexistent") {
			t.Errorf("the layout names %s, a path the caller chose", s.Path)
		}
	}
	testdata.RequireFUSE(t)
	srv, err := Mount(ctx, p, t.TempDir(), MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	got, err := os.ReadFile(filepath.Join(srv.Dir, "partitions", metadata.APKLabel))
	want, _ := os.ReadFile(testdata.APKPath())
	if err != nil || !bytes.HasPrefix(got, want) {
		t.Errorf("the APK partition of an opened APK: %v", err)
	}
	if srv.Manifest.Inputs.APK != "/nonexistent/client/app.apk" {
		t.Errorf("manifest names the APK %q, want the caller's name for it", srv.Manifest.Inputs.APK)
	}

	opath, err := unix.Open(testdata.APKPath(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := openFixture(t, testdata.Dir(), os.O_RDONLY)
	writeOnly := openFixture(t, filepath.Join(t.TempDir(), "w"), os.O_WRONLY|os.O_CREATE)
	for name, f := range map[string]*os.File{
		"O_PATH":     os.NewFile(uintptr(opath), "opath"),
		"write-only": writeOnly,
		"directory":  dir,
	} {
		_, err := Resolve(ctx, openedSpec(t, f, idsig))
		if !errors.Is(err, ErrInput) {
			t.Errorf("%s as the APK: %v, want a bad input", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
