package metadata

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"vmfs/testdata"
)

var update = flag.Bool("update", false, "regenerate testdata/small.apk and its .idsig with apksigner")

// apksigJar is Debian's libapksig-java, the library inside apksigner.
const apksigJar = "/usr/share/java/apksig.jar"

// le32 returns v as 4 little-endian bytes.
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// lp returns b as a v4 "bytes" field: u32 length then the data.
func lp(b []byte) []byte { return append(le32(uint32(len(b))), b...) }

func hashingInfo(alg uint32, log2 byte, salt, root []byte) []byte {
	b := append(le32(alg), log2)
	b = append(b, lp(salt)...)
	return append(b, lp(root)...)
}

// buildIdsig assembles an idsig from its fields, as V4Signature.writeTo plus the tree.
func buildIdsig(version uint32, hashingInfo, signingInfo, tree []byte) []byte {
	b := le32(version)
	b = append(b, lp(hashingInfo)...)
	b = append(b, lp(signingInfo)...)
	return append(b, lp(tree)...)
}

// apksigTrees builds the merkle tree of each data file with apksig's VerityTreeBuilder
// (testdata/VerityTree.java) and returns the trees and root hashes.
func apksigTrees(t *testing.T, salt []byte, data ...string) (trees, roots [][]byte) {
	t.Helper()
	testdata.RequireTool(t, "java")
	testdata.RequireTool(t, "javac") // java runs a source file only with the JDK's compiler module
	requireFile(t, apksigJar)
	saltArg := "-"
	if salt != nil {
		saltArg = hex.EncodeToString(salt)
	}
	args := []string{"-cp", apksigJar, "testdata/VerityTree.java", saltArg}
	for i, d := range data {
		args = append(args, d, filepath.Join(t.TempDir(), "tree"+string(rune('a'+i))))
	}
	lines := strings.Fields(string(run(t, "java", args...)))
	if len(lines) != len(data) {
		t.Fatalf("VerityTree.java printed %d roots for %d files", len(lines), len(data))
	}
	for i, l := range lines {
		root, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := os.ReadFile(args[5+2*i])
		if err != nil {
			t.Fatal(err)
		}
		trees, roots = append(trees, tree), append(roots, root)
	}
	return trees, roots
}

// testKey writes a throwaway RSA key (PKCS#8 DER) and self-signed certificate (DER) for apksigner.
func testKey(t *testing.T, dir string) (key, cert string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vmfs test key, never trust"},
		NotBefore:    time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(dir, "key.pk8"), pk8), writeFile(t, filepath.Join(dir, "cert.der"), der)
}

// signAPK signs the zip at unsigned with apksigner (v2, v3 and v4) into dir/name and
// returns the APK and .idsig paths. --min-sdk-version stands in for a binary
// AndroidManifest.xml, which a test zip does not have.
func signAPK(t *testing.T, unsigned, dir, name string) (apk, idsig string) {
	t.Helper()
	testdata.RequireTool(t, "apksigner")
	key, cert := testKey(t, t.TempDir())
	apk = filepath.Join(dir, name)
	run(t, "apksigner", "sign", "--key", key, "--cert", cert, "--min-sdk-version", "30",
		"--v4-signing-enabled", "true", "--out", apk, unsigned)
	return apk, apk + ".idsig"
}

// apksignerVerify is the oracle: apksigner's own v4 check of apk against idsig. An SDK
// range of N..N_MR1 checks v2 and v4 without reading AndroidManifest.xml. apksigner 31
// still exits 0 when only the v4 check fails (it reports "v4 scheme ...: false"), so the
// verbose report is read too.
func apksignerVerify(apk, idsig string) error {
	out, err := exec.Command("apksigner", "verify", "-v", "--min-sdk-version", "24", "--max-sdk-version", "25",
		"--v4-signature-file", idsig, apk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	if !bytes.Contains(out, []byte("Verified using v4 scheme (APK Signature Scheme v4): true")) {
		return fmt.Errorf("v4 not verified: %s", bytes.TrimSpace(out))
	}
	return nil
}

func randomBytes(seed uint64, n int) []byte {
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

func treeSize(apkSize int64) int64 {
	var total int64
	for _, s := range treeLevels(apkSize) {
		total += s
	}
	return total
}

func TestIdsigApksigner(t *testing.T) {
	testdata.RequireTool(t, "apksigner")
	cfg := zipEntry{name: "assets/vm_config.json", data: []byte(`{"os": {"name": "microdroid"}, "task": {"type": "microdroid_launcher", "command": "MyPayload.so"}}`)}
	for _, tc := range []struct {
		name     string
		entries  []zipEntry
		treeSize int64
	}{
		{"small", []zipEntry{cfg}, 4096},
		// 600 KiB of incompressible data: 150+ data blocks, so two tree levels.
		{"two levels", []zipEntry{cfg, {name: "assets/blob", data: randomBytes(1, 600<<10)}}, 8192 + 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			apk, idsig := signAPK(t, makeZip(t, tc.entries...), dir, "app.apk")
			sig, err := OpenIdsig(idsig)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(apk)
			if err != nil {
				t.Fatal(err)
			}
			if sig.Version != 2 || sig.HashAlgorithm != 1 || sig.Log2BlockSize != 12 || len(sig.Salt) != 0 ||
				len(sig.RootHash) != 32 || len(sig.SigningInfo) == 0 || sig.TreeOffset+sig.TreeSize != sig.Size {
				t.Errorf("unexpected fields %+v", sig)
			}
			if sig.TreeSize != tc.treeSize || sig.TreeSize != treeSize(st.Size()) {
				t.Errorf("tree size %d, want %d (apk %d bytes)", sig.TreeSize, tc.treeSize, st.Size())
			}
			if err := VerifyFiles(apk, idsig); err != nil {
				t.Fatal(err)
			}
			if err := apksignerVerify(apk, idsig); err != nil {
				t.Fatalf("apksigner rejects what VerifyFiles accepts: %v", err)
			}
			apkBytes, err := os.ReadFile(apk)
			if err != nil {
				t.Fatal(err)
			}
			idsigBytes, err := os.ReadFile(idsig)
			if err != nil {
				t.Fatal(err)
			}
			flip := func(b []byte, i int64) []byte {
				b = bytes.Clone(b)
				b[i] ^= 0x01
				return b
			}
			last := int64(len(apkBytes) - 1)
			// Zero bytes cut from the end inside the last block leave the zero-padded data,
			// hence the tree, unchanged; the guest sees the same partition bytes. Only the
			// v4 signature binds the exact size, and apksigner checks it.
			if apkBytes[last] == 0 {
				d := t.TempDir()
				a := writeFile(t, filepath.Join(d, "app.apk"), apkBytes[:last])
				s := writeFile(t, filepath.Join(d, "app.apk.idsig"), idsigBytes)
				if err := VerifyFiles(a, s); err != nil {
					t.Errorf("trailing zero cut: %v", err)
				}
				if err := apksignerVerify(a, s); err == nil {
					t.Error("apksigner accepts an apk whose size differs from the signed one")
				}
			}
			for _, m := range []struct {
				name       string
				apk, idsig []byte
			}{
				{"apk byte 100 flipped", flip(apkBytes, 100), idsigBytes},
				{"apk last byte flipped", flip(apkBytes, last), idsigBytes},
				{"apk without its EOCD", apkBytes[:len(apkBytes)-22], idsigBytes},
				{"apk extended by a zero block", append(bytes.Clone(apkBytes), make([]byte, 4096)...), idsigBytes},
				{"tree top block flipped", apkBytes, flip(idsigBytes, sig.TreeOffset)},
				{"tree last byte flipped", apkBytes, flip(idsigBytes, sig.Size-1)},
				{"root hash flipped", apkBytes, flip(idsigBytes, 21)},
			} {
				t.Run(m.name, func(t *testing.T) {
					d := t.TempDir()
					a := writeFile(t, filepath.Join(d, "app.apk"), m.apk)
					s := writeFile(t, filepath.Join(d, "app.apk.idsig"), m.idsig)
					err := VerifyFiles(a, s)
					if !errors.Is(err, ErrMismatch) {
						t.Errorf("VerifyFiles = %v, want ErrMismatch", err)
					}
					t.Log(err)
					if err := apksignerVerify(a, s); err == nil {
						t.Error("apksigner accepts what VerifyFiles rejects")
					}
				})
			}
		})
	}
}

// TestVerifyAPKSizes checks APK sizes around block and level boundaries against trees
// built by apksig itself.
func TestVerifyAPKSizes(t *testing.T) {
	sizes := []int{1, 4095, 4096, 4097, 128 * 4096, 128*4096 + 1, 600 << 10}
	for _, salt := range [][]byte{nil, bytes.Repeat([]byte{0x5a}, 32)} {
		t.Run("salt "+hex.EncodeToString(salt), func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			for i, n := range sizes {
				files = append(files, writeFile(t, filepath.Join(dir, "data"+string(rune('a'+i))), randomBytes(uint64(n), n)))
			}
			trees, roots := apksigTrees(t, salt, files...)
			for i, n := range sizes {
				t.Run(string(rune('0'+i))+"_"+itoa(n), func(t *testing.T) {
					if int64(len(trees[i])) != treeSize(int64(n)) {
						t.Fatalf("apksig tree is %d bytes, treeLevels says %d", len(trees[i]), treeSize(int64(n)))
					}
					idsig := writeFile(t, files[i]+".idsig", buildIdsig(2, hashingInfo(1, 12, salt, roots[i]), nil, trees[i]))
					if err := VerifyFiles(files[i], idsig); err != nil {
						t.Fatal(err)
					}
					data, err := os.ReadFile(files[i])
					if err != nil {
						t.Fatal(err)
					}
					data[n/2] ^= 0x80
					bad := writeFile(t, filepath.Join(t.TempDir(), "bad"), data)
					err = VerifyFiles(bad, idsig)
					if !errors.Is(err, ErrMismatch) {
						t.Errorf("flipped byte %d: got %v, want ErrMismatch", n/2, err)
					}
					t.Log(err)
				})
			}
		})
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// A size that needs a different tree size is refused before any hashing.
func TestVerifyAPKTreeSizeMismatch(t *testing.T) {
	n := 128*4096 + 1 // two levels; one byte less needs one level
	dir := t.TempDir()
	data := randomBytes(7, n)
	file := writeFile(t, filepath.Join(dir, "data"), data)
	trees, roots := apksigTrees(t, nil, file)
	raw := buildIdsig(2, hashingInfo(1, 12, nil, roots[0]), nil, trees[0])
	sig, err := NewIdsig("data.idsig", bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
	}{{"truncated", int64(n - 1)}, {"extended", int64(n + 128*4096)}, {"empty", 0}, {"negative", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			apk := bytes.NewReader(append(data, make([]byte, max(0, tc.size-int64(n)))...))
			err := sig.VerifyAPK("data", apk, tc.size, bytes.NewReader(raw))
			if !errors.Is(err, ErrMismatch) {
				t.Errorf("got %v, want ErrMismatch", err)
			}
			t.Log(err)
		})
	}
}

// A 1 GiB sparse APK shows that verification streams: three tree levels, and the
// allocations while verifying stay far below the 8 MiB tree, let alone the data.
func TestVerifyAPKHuge(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under testing.Short(): hashes 1 GiB twice (apksig and VerifyAPK)")
	}
	const n = 1 << 30
	dir := t.TempDir()
	path := filepath.Join(dir, "huge.apk")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, n/2 + 5, n - 3} {
		if _, err := f.WriteAt([]byte("vmfs"), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	f.Close()
	trees, roots := apksigTrees(t, nil, path)
	if len(treeLevels(n)) != 3 {
		t.Fatalf("treeLevels(1 GiB) = %v, want 3 levels", treeLevels(n))
	}
	idsig := writeFile(t, path+".idsig", buildIdsig(2, hashingInfo(1, 12, nil, roots[0]), nil, trees[0]))
	trees = nil
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := VerifyFiles(path, idsig); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("VerifyFiles allocated %d bytes for a 1 GiB apk; want constant memory", alloc)
	}
}

// The committed fixture is real apksigner output (refresh with -update).
func TestIdsigFixture(t *testing.T) {
	apk, idsig := filepath.Join("testdata", "small.apk"), filepath.Join("testdata", "small.apk.idsig")
	if *update {
		cfg := zipEntry{name: "assets/vm_config.json", data: []byte(`{"os": {"name": "microdroid"}, "task": {"type": "microdroid_launcher", "command": "MyPayload.so"}}`)}
		dir := t.TempDir()
		a, s := signAPK(t, makeZip(t, cfg), dir, "small.apk")
		for _, p := range [][2]string{{a, apk}, {s, idsig}} {
			b, err := os.ReadFile(p[0])
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, p[1], b)
		}
	}
	if err := VerifyFiles(apk, idsig); err != nil {
		t.Fatal(err)
	}
	if cfg, err := ReadPayloadConfig(apk, "assets/vm_config.json"); err != nil || cfg.Task == nil {
		t.Errorf("payload config of the fixture: %+v, %v", cfg, err)
	}
}

// The shared sample app verifies against its apksigner-made idsig.
func TestIdsigSharedFixture(t *testing.T) {
	if err := VerifyFiles(testdata.APKPath(), testdata.IdsigPath()); err != nil {
		t.Fatal(err)
	}
}

func TestNewIdsigCorrupt(t *testing.T) {
	root := bytes.Repeat([]byte{0xaa}, 32)
	si := []byte("signing!!!")
	tree := make([]byte, 4096)
	good := buildIdsig(2, hashingInfo(1, 12, nil, root), si, tree)
	// Offsets in good: version 0, hashing info length 4, algorithm 8, log2 12, salt
	// length 13, root length 17, root 21, signing info length 53, signing info 57,
	// tree length 67, tree 71.
	set32 := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	setByte := func(off int, v byte) []byte {
		b := bytes.Clone(good)
		b[off] = v
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		off  int64
	}{
		{"empty", nil, 0},
		{"short version", good[:2], 0},
		{"version 1", set32(0, 1), 0},
		{"version 3", set32(0, 3), 0},
		{"no hashing info", good[:4], 4},
		{"hashing info too short", set32(4, 44), 4},
		{"hashing info too long", set32(4, 1000), 4},
		{"hashing info past end", good[:30], 8},
		{"hash algorithm 2", set32(8, 2), 8},
		{"log2 block size 13", setByte(12, 13), 12},
		{"salt longer than 32", set32(13, 33), 13},
		{"salt runs into root", set32(13, 4), 21},
		{"root hash 31 bytes", set32(17, 31), 17},
		{"hashing info with a trailing byte", buildIdsig(2, append(hashingInfo(1, 12, nil, root), 0), si, tree), 53},
		{"signing info over 64 KiB", set32(53, 64<<10+1), 53},
		{"signing info past end", set32(53, 60000), 57},
		{"no merkle tree", good[:67], 67},
		{"empty signing info at the end", buildIdsig(2, hashingInfo(1, 12, nil, root), nil, nil)[:57], 57},
		{"short tree size", good[:69], 67},
		{"tree size not a block multiple", set32(67, 4095), 67},
		{"tree past end", set32(67, 8192), 67},
		{"tree size 0 with data after it", set32(67, 0), 71},
		{"byte after the tree", append(bytes.Clone(good), 0), 71 + 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := NewIdsig("app.apk.idsig", bytes.NewReader(tc.data), int64(len(tc.data)))
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("got %+v, %v; want a *FormatError", sig, err)
			}
			if fe.File != "app.apk.idsig" || fe.Off != tc.off {
				t.Errorf("error %q: file %q offset %#x, want offset %#x", err, fe.File, fe.Off, tc.off)
			}
			t.Log(err)
		})
	}

	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"minimal", good},
		{"32-byte salt", buildIdsig(2, hashingInfo(1, 12, root, root), si, tree)},
		{"64 KiB signing info", buildIdsig(2, hashingInfo(1, 12, nil, root), make([]byte, 64<<10), tree)},
		{"empty tree", buildIdsig(2, hashingInfo(1, 12, nil, root), si, nil)},
	} {
		t.Run("ok "+tc.name, func(t *testing.T) {
			sig, err := NewIdsig("x.idsig", bytes.NewReader(tc.data), int64(len(tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			// The header re-encodes to the same bytes.
			head := buildIdsig(sig.Version, hashingInfo(sig.HashAlgorithm, sig.Log2BlockSize, sig.Salt, sig.RootHash), sig.SigningInfo, nil)
			if !bytes.Equal(head[:len(head)-4], tc.data[:sig.TreeOffset-4]) || sig.TreeOffset+sig.TreeSize != sig.Size {
				t.Errorf("fields %+v do not describe the input", sig)
			}
		})
	}

	t.Run("reader shorter than size", func(t *testing.T) {
		_, err := NewIdsig("x.idsig", bytes.NewReader(good[:60]), int64(len(good)))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
		}
	})
}

func TestOpenIdsigErrors(t *testing.T) {
	if _, err := OpenIdsig(filepath.Join(t.TempDir(), "missing.idsig")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want os.ErrNotExist", err)
	}
	if _, err := OpenIdsig(t.TempDir()); err == nil {
		t.Error("directory: no error")
	}
}
