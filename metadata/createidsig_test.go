package metadata

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vmfs/testdata"
)

// unsignedSigningInfo is the signing info `vm create-idsig` writes (Android 13 libs/idsig
// SigningInfo::default): four empty byte fields, algorithm id 0x0301, an empty signature.
var unsignedSigningInfo = []byte{
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0x01, 0x03, 0, 0,
	0, 0, 0, 0,
}

// checkCreatedIdsig makes an idsig for apk with CreateIdsig and compares it with want,
// apksigner's idsig for the same APK: the merkle tree and the hashing info (algorithm,
// block size, salt, root hash) must be the same bytes. The signing info legitimately
// differs: apksigner signs (APK digest, certificate, key, signature), vm create-idsig
// does not.
func checkCreatedIdsig(t *testing.T, apk, want string) {
	t.Helper()
	got := filepath.Join(t.TempDir(), "created.idsig")
	if err := CreateIdsig(apk, got); err != nil {
		t.Fatal(err)
	}
	gotSig, err := OpenIdsig(got)
	if err != nil {
		t.Fatal(err)
	}
	wantSig, err := OpenIdsig(want)
	if err != nil {
		t.Fatal(err)
	}
	if gotSig.Version != wantSig.Version || gotSig.HashAlgorithm != wantSig.HashAlgorithm ||
		gotSig.Log2BlockSize != wantSig.Log2BlockSize || !bytes.Equal(gotSig.Salt, wantSig.Salt) ||
		!bytes.Equal(gotSig.RootHash, wantSig.RootHash) {
		t.Errorf("hashing info %+v differs from apksigner's %+v", gotSig, wantSig)
	}
	gotBytes, _ := os.ReadFile(got)
	wantBytes, _ := os.ReadFile(want)
	if !bytes.Equal(gotBytes[gotSig.TreeOffset:], wantBytes[wantSig.TreeOffset:]) {
		t.Errorf("merkle tree (%d bytes) differs from apksigner's (%d bytes)", gotSig.TreeSize, wantSig.TreeSize)
	}
	// version, hashing info (4 + 45), signing info (4 + 24), tree size: AVF's offset 85.
	if !bytes.Equal(gotSig.SigningInfo, unsignedSigningInfo) || gotSig.TreeOffset != 85 {
		t.Errorf("signing info %x, tree at %d; want %x at 85", gotSig.SigningInfo, gotSig.TreeOffset, unsignedSigningInfo)
	}
	if len(wantSig.SigningInfo) == 0 {
		t.Errorf("apksigner's idsig %s has no signing info", want)
	}
	if err := VerifyFiles(apk, got); err != nil {
		t.Errorf("VerifyFiles refuses the created idsig: %v", err)
	}
}

func TestCreateIdsig(t *testing.T) {
	t.Run("committed fixtures", func(t *testing.T) {
		checkCreatedIdsig(t, testdata.APKPath(), testdata.IdsigPath())
		checkCreatedIdsig(t, filepath.Join("testdata", "small.apk"), filepath.Join("testdata", "small.apk.idsig"))
		// Signed v3, whose digest apksigner puts in the signing info.
		checkCreatedIdsig(t, testdata.LaterAPKPath(), testdata.LaterIdsigPath())
		for _, e := range testdata.LaterExtraAPKs() {
			checkCreatedIdsig(t, e.APK, e.Idsig)
		}
	})
	cfg := zipEntry{name: "assets/vm_config.json", data: []byte(`{}`)}
	for _, tc := range []struct {
		name    string
		entries []zipEntry
	}{
		{"one level", []zipEntry{cfg}},
		// 600 KiB of incompressible data: two tree levels.
		{"two levels", []zipEntry{cfg, {name: "assets/blob", data: randomBytes(2, 600<<10)}}},
	} {
		t.Run("apksigner now/"+tc.name, func(t *testing.T) {
			apk, idsig := signAPK(t, makeZip(t, tc.entries...), t.TempDir(), "app.apk")
			checkCreatedIdsig(t, apk, idsig)
		})
	}

	t.Run("replaces an existing file whole", func(t *testing.T) {
		dir := t.TempDir()
		idsig := writeFile(t, filepath.Join(dir, "app.apk.idsig"), bytes.Repeat([]byte("old"), 100000))
		if err := CreateIdsig(testdata.APKPath(), idsig); err != nil {
			t.Fatal(err)
		}
		if err := VerifyFiles(testdata.APKPath(), idsig); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("%d files in %s, want only the idsig", len(entries), dir)
		}
	})
	t.Run("one block is refused", func(t *testing.T) {
		apk := writeFile(t, filepath.Join(t.TempDir(), "tiny.apk"), make([]byte, 4096))
		idsig := apk + ".idsig"
		if err := CreateIdsig(apk, idsig); err == nil {
			t.Fatal("no error for a 4096-byte apk")
		}
		if _, err := os.Stat(idsig); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("an idsig was written: %v", err)
		}
	})
	t.Run("missing apk", func(t *testing.T) {
		var ie *InputError
		if err := CreateIdsig(filepath.Join(t.TempDir(), "none.apk"), filepath.Join(t.TempDir(), "x")); !errors.As(err, &ie) {
			t.Errorf("error %v is not an *InputError", err)
		}
	})
	t.Run("unwritable idsig", func(t *testing.T) {
		if err := CreateIdsig(testdata.APKPath(), filepath.Join(t.TempDir(), "no", "dir", "x.idsig")); err == nil {
			t.Error("no error writing into a missing directory")
		}
	})
}
