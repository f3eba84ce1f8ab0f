package metadata

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
)

// APK Signature Scheme v4 constants (APKSIG V4Signature.java; formats.md section 7).
const (
	idsigVersion      = 2
	hashAlgSHA256     = 1
	log2BlockSize4096 = 12
	blockSize         = 1 << log2BlockSize4096
	maxSaltSize       = 32
	rootHashSize      = sha256.Size
	// maxSigningInfoSize bounds the signing info bytes. apksig writes at most 7168
	// (V4Signature.MAX_SIGNING_INFOS_SIZE, v4.1 blocks included); the slack allows
	// for newer signers.
	maxSigningInfoSize = 64 << 10
	// hashingInfoMin and hashingInfoMax: algorithm u32, log2 u8, salt (u32 + 0..32), root (u32 + 32).
	hashingInfoMin = 4 + 1 + 4 + 4 + rootHashSize
	hashingInfoMax = hashingInfoMin + maxSaltSize
	// verifyBufSize is how much APK is read per call while hashing.
	verifyBufSize = 64 << 10
)

// Idsig is a parsed APK Signature Scheme v4 signature file (.idsig). Layout, all integers
// little-endian, "bytes" = u32 length + data:
//
//	u32   version         (2)
//	bytes hashing_info    u32 hash algorithm (1 = SHA-256), u8 log2 block size (12),
//	                      bytes salt (<= 32), bytes raw root hash (32)
//	bytes signing_infos   the signer's signing info plus any v4.1 blocks (kept raw)
//	bytes merkle_tree     levels stored root-most first, each padded to 4096
//
// The merkle tree is not loaded: TreeOffset and TreeSize locate it in the file.
type Idsig struct {
	Version       uint32
	HashAlgorithm uint32
	Log2BlockSize uint8
	Salt          []byte
	RootHash      []byte
	SigningInfo   []byte // raw signing_infos field, not verified
	TreeSize      int64  // merkle tree bytes, a multiple of 4096
	TreeOffset    int64  // file offset of the first tree byte
	Size          int64  // idsig file size; TreeOffset + TreeSize == Size

	name string // file name for errors
}

// idsigReader reads little-endian fields at a moving offset, checking every length
// against the file size before it allocates.
type idsigReader struct {
	name string
	r    io.ReaderAt
	size int64
	off  int64
}

func (p *idsigReader) fail(off int64, format string, args ...any) error {
	return &FormatError{File: p.name, Off: off, Msg: fmt.Sprintf(format, args...)}
}

func (p *idsigReader) read(n int64, what string) ([]byte, error) {
	if n > p.size-p.off {
		return nil, p.fail(p.off, "truncated %s: need %d bytes, file has %d left", what, n, p.size-p.off)
	}
	b := make([]byte, n)
	if err := readFull(p.r, b, p.off); err != nil {
		return nil, fmt.Errorf("read idsig %s: %s at byte %#x: %w", p.name, what, p.off, err)
	}
	p.off += n
	return b, nil
}

func (p *idsigReader) u32(what string) (uint32, error) {
	b, err := p.read(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// lenPrefixed reads a u32 length, checks it against lo..hi and the file, and returns the data.
func (p *idsigReader) lenPrefixed(what string, lo, hi int64) ([]byte, error) {
	at := p.off
	n, err := p.u32(what + " length")
	if err != nil {
		return nil, err
	}
	if int64(n) < lo || int64(n) > hi {
		if lo == hi {
			return nil, p.fail(at, "%s length %d, want %d", what, n, lo)
		}
		return nil, p.fail(at, "%s length %d not in %d..%d", what, n, lo, hi)
	}
	return p.read(int64(n), what)
}

// NewIdsig parses the .idsig held in r, which is size bytes long; name is used in errors.
// A malformed field gives a *FormatError with its offset.
func NewIdsig(name string, r io.ReaderAt, size int64) (*Idsig, error) {
	p := &idsigReader{name: name, r: r, size: size}
	sig := &Idsig{name: name, Size: size}
	var err error
	if sig.Version, err = p.u32("version"); err != nil {
		return nil, err
	}
	if sig.Version != idsigVersion {
		return nil, p.fail(0, "bad version %d", sig.Version)
	}

	hiOff := p.off + 4
	hi, err := p.lenPrefixed("hashing info", hashingInfoMin, hashingInfoMax)
	if err != nil {
		return nil, err
	}
	h := &idsigReader{name: name, r: bytes.NewReader(hi), size: int64(len(hi))}
	// Offsets inside hashing info are reported as file offsets.
	fail := func(err error) error {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Off += hiOff
		}
		return err
	}
	if sig.HashAlgorithm, err = h.u32("hash algorithm"); err != nil {
		return nil, fail(err)
	}
	if sig.HashAlgorithm != hashAlgSHA256 {
		return nil, p.fail(hiOff, "unsupported hash algorithm %d (want 1, SHA-256)", sig.HashAlgorithm)
	}
	b, err := h.read(1, "log2 block size")
	if err != nil {
		return nil, fail(err)
	}
	if sig.Log2BlockSize = b[0]; sig.Log2BlockSize != log2BlockSize4096 {
		return nil, p.fail(hiOff+4, "unsupported log2 block size %d (want 12)", sig.Log2BlockSize)
	}
	if sig.Salt, err = h.lenPrefixed("salt", 0, maxSaltSize); err != nil {
		return nil, fail(err)
	}
	if sig.RootHash, err = h.lenPrefixed("root hash", rootHashSize, rootHashSize); err != nil {
		return nil, fail(err)
	}
	if h.off != h.size {
		return nil, p.fail(hiOff+h.off, "%d unexpected bytes at the end of hashing info", h.size-h.off)
	}

	if sig.SigningInfo, err = p.lenPrefixed("signing info", 0, maxSigningInfoSize); err != nil {
		return nil, err
	}

	// apksig appends v4.1 blocks inside signing_infos, so the tree always follows it.
	treeAt := p.off
	if p.off == size {
		return nil, p.fail(treeAt, "no merkle tree (vmfs needs it for dm-verity)")
	}
	n, err := p.u32("merkle tree size")
	if err != nil {
		return nil, err
	}
	sig.TreeSize, sig.TreeOffset = int64(n), p.off
	if sig.TreeSize%blockSize != 0 {
		return nil, p.fail(treeAt, "merkle tree size %d is not a multiple of %d", n, blockSize)
	}
	if sig.TreeSize > size-sig.TreeOffset {
		return nil, p.fail(treeAt, "merkle tree size %d runs past the end of the file (%d bytes left)",
			n, size-sig.TreeOffset)
	}
	if end := sig.TreeOffset + sig.TreeSize; end != size {
		return nil, p.fail(end, "%d unexpected bytes after the merkle tree", size-end)
	}
	return sig, nil
}

// OpenIdsig reads and parses the .idsig file at path. The file is closed on return.
func OpenIdsig(path string) (*Idsig, error) {
	f, size, err := openRegular(path, "idsig")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return NewIdsig(path, f, size)
}

// treeLevels returns the sizes of the merkle tree levels apksig builds over dataSize bytes
// (VerityTreeBuilder.calculateLevelOffset), bottom (data hashes) first. Data of at most
// one block still gets one 4096-byte level, unlike fs-verity.
func treeLevels(dataSize int64) []int64 {
	var levels []int64
	for {
		blocks := (dataSize + blockSize - 1) / blockSize
		hashBytes := blocks * sha256.Size
		levels = append(levels, (hashBytes+blockSize-1)/blockSize*blockSize)
		if hashBytes <= blockSize {
			return levels
		}
		dataSize = hashBytes
	}
}

// readFull reads len(p) bytes at off, treating a short read as io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if len(p) == 0 {
		return nil // a ReaderAt may report io.EOF for an empty read at its end
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// levelHasher hashes 4 KiB blocks and checks each completed 4 KiB block of hashes against
// the stored tree level it must equal. It holds two blocks, whatever the data size.
type levelHasher struct {
	salt     []byte
	h        hash.Hash
	stored   io.ReaderAt // the stored level the hashes must equal
	hashes   [blockSize]byte
	want     [blockSize]byte
	n        int   // bytes used in hashes
	outBlk   int64 // index of the hash block being filled
	inBlk    int64 // index of the next input block
	readErr  func(error) error
	mismatch func(inFirst, inLast, outBlk int64) error
}

func (l *levelHasher) add(block []byte) error {
	l.h.Reset()
	l.h.Write(l.salt)
	l.h.Write(block)
	l.h.Sum(l.hashes[l.n:l.n])
	l.n += sha256.Size
	l.inBlk++
	if l.n == blockSize {
		return l.flush()
	}
	return nil
}

// flush zero-pads the hash block being filled and compares it with the stored one.
func (l *levelHasher) flush() error {
	clear(l.hashes[l.n:])
	if err := readFull(l.stored, l.want[:], l.outBlk*blockSize); err != nil {
		return l.readErr(err)
	}
	if l.hashes != l.want {
		const perBlock = blockSize / sha256.Size
		return l.mismatch(l.outBlk*perBlock, l.inBlk-1, l.outBlk)
	}
	l.outBlk++
	l.n = 0
	return nil
}

// finish checks the last, partly filled block of hashes.
func (l *levelHasher) finish() error {
	if l.n == 0 {
		return nil
	}
	return l.flush()
}

// VerifyAPK checks that the APK in apk (apkSize bytes, named apkName in errors) matches the
// merkle tree held by idsigFile (the file sig was parsed from), and the tree its root hash.
// It runs in constant memory: each 4 KiB APK block (the last one zero-padded) is hashed and
// every completed block of hashes is compared with the stored bottom level as it goes;
// then each stored level is hashed and compared with the level above it; finally SHA-256
// of the first tree block must equal RootHash. A mismatch gives an error wrapping
// ErrMismatch that says which block of which level; read errors are wrapped as they are.
//
// The tree covers the APK zero-padded to 4 KiB, so zero bytes added or cut at the end
// inside the last block go unnoticed; the guest then sees the same partition bytes anyway.
// Only the v4 signature, which VerifyAPK does not check, binds the exact size.
func (sig *Idsig) VerifyAPK(apkName string, apk io.ReaderAt, apkSize int64, idsigFile io.ReaderAt) error {
	if apkSize <= 0 {
		// apksig cannot build a tree over no data either (there is no first block to hash).
		return fmt.Errorf("verify apk %s: apk is empty: %w", apkName, ErrMismatch)
	}
	levels := treeLevels(apkSize)
	var total int64
	for _, s := range levels {
		total += s
	}
	if total != sig.TreeSize {
		return fmt.Errorf("verify apk %s: a %d-byte apk needs a %d-byte merkle tree but idsig %s has %d "+
			"(apk truncated, extended or not the signed one): %w",
			apkName, apkSize, total, sig.name, sig.TreeSize, ErrMismatch)
	}
	// The top level is stored first: level i starts after all the levels above it.
	level := make([]*io.SectionReader, len(levels))
	end := sig.TreeOffset + sig.TreeSize
	for i, s := range levels {
		end -= s
		level[i] = io.NewSectionReader(idsigFile, end, s)
	}
	readErr := func(what string) func(error) error {
		return func(err error) error {
			return fmt.Errorf("verify apk %s: read %s: %w", apkName, what, err)
		}
	}

	h := sha256.New()
	bottom := &levelHasher{salt: sig.Salt, h: h, stored: level[0], readErr: readErr("idsig " + sig.name)}
	bottom.mismatch = func(first, last, outBlk int64) error {
		return fmt.Errorf("verify apk %s: apk blocks %d..%d (bytes %#x..%#x) do not match merkle tree level 0 block %d of idsig %s: %w",
			apkName, first, last, first*blockSize, min((last+1)*blockSize, apkSize)-1, outBlk, sig.name, ErrMismatch)
	}
	buf := make([]byte, verifyBufSize)
	for pos := int64(0); pos < apkSize; {
		n := int(min(int64(len(buf)), apkSize-pos))
		if err := readFull(apk, buf[:n], pos); err != nil {
			return readErr("apk")(err)
		}
		// The last block is zero-padded, as apksig does.
		padded := (n + blockSize - 1) / blockSize * blockSize
		clear(buf[n:padded])
		for b := 0; b < padded; b += blockSize {
			if err := bottom.add(buf[b : b+blockSize]); err != nil {
				return err
			}
		}
		pos += int64(n)
	}
	if err := bottom.finish(); err != nil {
		return err
	}

	for i := 0; i+1 < len(levels); i++ {
		up := &levelHasher{salt: sig.Salt, h: h, stored: level[i+1], readErr: readErr("idsig " + sig.name)}
		up.mismatch = func(first, last, outBlk int64) error {
			return fmt.Errorf("verify apk %s: idsig %s merkle tree level %d blocks %d..%d do not match level %d block %d: %w",
				apkName, sig.name, i, first, last, i+1, outBlk, ErrMismatch)
		}
		for b := int64(0); b < levels[i]; b += blockSize {
			if err := readFull(level[i], buf[:blockSize], b); err != nil {
				return readErr("idsig " + sig.name)(err)
			}
			if err := up.add(buf[:blockSize]); err != nil {
				return err
			}
		}
		if err := up.finish(); err != nil {
			return err
		}
	}

	if err := readFull(level[len(levels)-1], buf[:blockSize], 0); err != nil {
		return readErr("idsig " + sig.name)(err)
	}
	h.Reset()
	h.Write(sig.Salt)
	h.Write(buf[:blockSize])
	if root := h.Sum(nil); !bytes.Equal(root, sig.RootHash) {
		return fmt.Errorf("verify apk %s: idsig %s root hash %x does not match its merkle tree (%x): %w",
			apkName, sig.name, sig.RootHash, root, ErrMismatch)
	}
	return nil
}

// VerifyFiles parses the idsig at idsigPath and verifies the APK at apkPath against it
// (see VerifyAPK).
func VerifyFiles(apkPath, idsigPath string) error {
	idsigFile, size, err := openRegular(idsigPath, "idsig")
	if err != nil {
		return err
	}
	defer idsigFile.Close()
	sig, err := NewIdsig(idsigPath, idsigFile, size)
	if err != nil {
		return err
	}
	apk, apkSize, err := openRegular(apkPath, "apk")
	if err != nil {
		return err
	}
	defer apk.Close()
	return sig.VerifyAPK(apkPath, apk, apkSize, idsigFile)
}

// sigAlgDSASHA256 is the signature algorithm id of an unsigned idsig: the Rust default
// AVF's libs/idsig leaves in place (SignatureAlgorithmId::DSA_SHA2_256, 0x0301).
const sigAlgDSASHA256 = 0x0301

// CreateIdsig writes to idsigPath the v4 signature file that `vm create-idsig` (Android
// 13's virtualizationservice createOrUpdateIdsigFile, libs/idsig V4Signature::create)
// makes for the APK at apkPath: SHA-256 over 4 KiB blocks, no salt, the merkle tree and
// its root hash, and an empty signing info (no APK digest, certificate, key or
// signature; algorithm id 0x0301). It proves what the APK is, not who signed it, which
// is all the guest's dm-verity uses. The tree and root hash equal apksigner's for the
// same APK. The file is replaced whole (written aside, then renamed); an output that
// is the APK, a dangling symlink or not a regular file is refused before anything is
// read, and a symlink to a regular file is written through (openIdsigOutput).
//
// Android 14 and 15 also copy the APK digest of the APK's v3 signature into the signing
// info and fail on an APK without a v3 signature; vmfs does neither. An APK of at most
// one block (4096 bytes) is refused: AVF writes it no tree at all (the root is then the
// hash of the block, as in dm-verity), apksigner writes a one-block tree, and neither
// is what the other's readers take.
func CreateIdsig(apkPath, idsigPath string) error {
	f, size, err := openRegular(apkPath, "apk")
	if err != nil {
		return err
	}
	defer f.Close()
	apk, err := f.Stat()
	if err != nil {
		return &InputError{Kind: "apk", Err: err}
	}
	if size <= blockSize {
		return fmt.Errorf("create idsig for apk %s: %d bytes, at most one %d-byte block, which v4 signers do not agree on", apkPath, size, blockSize)
	}
	output, err := openIdsigOutput(idsigPath, apkPath, apk)
	if err != nil {
		return err
	}
	defer output.close()
	tree, root, err := merkleTree(f, size)
	if err != nil {
		return fmt.Errorf("create idsig for apk %s: %w", apkPath, err)
	}
	if int64(len(tree)) > int64(^uint32(0)) {
		return fmt.Errorf("create idsig for apk %s: a %d-byte merkle tree does not fit the v4 format", apkPath, len(tree))
	}
	lenPrefixed := func(b []byte, field []byte) []byte {
		return append(binary.LittleEndian.AppendUint32(b, uint32(len(field))), field...)
	}
	hashing := binary.LittleEndian.AppendUint32(nil, hashAlgSHA256)
	hashing = append(hashing, log2BlockSize4096)
	hashing = lenPrefixed(hashing, nil) // salt
	hashing = lenPrefixed(hashing, root)
	// apk digest, x509 certificate, additional data, public key: empty; then the
	// algorithm id and an empty signature.
	var signing []byte
	for range 4 {
		signing = lenPrefixed(signing, nil)
	}
	signing = binary.LittleEndian.AppendUint32(signing, sigAlgDSASHA256)
	signing = lenPrefixed(signing, nil)

	out := binary.LittleEndian.AppendUint32(nil, idsigVersion)
	out = lenPrefixed(out, hashing)
	out = lenPrefixed(out, signing)
	out = lenPrefixed(out, tree)
	return output.write(out)
}

// merkleTree builds the v4 merkle tree over the first size bytes of r (the last block
// zero-padded): the levels treeLevels gives, stored root-most first, and the root hash.
func merkleTree(r io.ReaderAt, size int64) (tree, root []byte, err error) {
	sizes := treeLevels(size)
	levels := make([][]byte, len(sizes))
	buf := make([]byte, verifyBufSize)
	for pos := int64(0); pos < size; {
		n := int(min(int64(len(buf)), size-pos))
		if err := readFull(r, buf[:n], pos); err != nil {
			return nil, nil, fmt.Errorf("read at byte %d: %w", pos, err)
		}
		padded := (n + blockSize - 1) / blockSize * blockSize
		clear(buf[n:padded])
		levels[0] = hashBlocks(levels[0], buf[:padded])
		pos += int64(n)
	}
	for i := range levels {
		levels[i] = append(levels[i], make([]byte, sizes[i]-int64(len(levels[i])))...)
		if i+1 < len(levels) {
			levels[i+1] = hashBlocks(nil, levels[i])
		}
	}
	for i := len(levels) - 1; i >= 0; i-- {
		tree = append(tree, levels[i]...)
	}
	sum := sha256.Sum256(tree[:blockSize])
	return tree, sum[:], nil
}

// hashBlocks appends the SHA-256 of each 4 KiB block of data to dst.
func hashBlocks(dst, data []byte) []byte {
	for b := 0; b < len(data); b += blockSize {
		sum := sha256.Sum256(data[b : b+blockSize])
		dst = append(dst, sum[:]...)
	}
	return dst
}

// idsigOutput is where CreateIdsig writes, checked before the APK is read.
type idsigOutput struct {
	path    string
	through *os.File // a symlink's target, open to be written in place; nil: renamed into place
}

// openIdsigOutput checks the output path of CreateIdsig, whose APK at apkPath is apk.
// It refuses the APK itself under any name (it would be lost), anything but a regular
// file (a rename would replace a device or a FIFO), and a dangling symlink (a file
// would be made where the command line never pointed). A new file or a regular file
// is written aside and renamed into place, so that a reader never sees half a file; a
// symlink to a regular file stays, and its target is written through the link, as by
// `vm create-idsig`, which opens the path.
func openIdsigOutput(path, apkPath string, apk os.FileInfo) (*idsigOutput, error) {
	wrap := func(err error) error { return fmt.Errorf("write idsig: %w", err) }
	st, err := inputfile.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, inputfile.ErrDangling) {
		return &idsigOutput{path: path}, nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	if os.SameFile(st, apk) {
		return nil, wrap(fmt.Errorf("%s: the same file as the apk %s", inputfile.Quote(path), inputfile.Quote(apkPath)))
	}
	lst, err := os.Lstat(path)
	if err != nil {
		return nil, wrap(err)
	}
	if lst.Mode()&fs.ModeSymlink == 0 {
		return &idsigOutput{path: path}, nil
	}
	// O_NONBLOCK: what the link points to may have become a FIFO since the stat.
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, wrap(err)
	}
	if fst, err := f.Stat(); err != nil || !os.SameFile(fst, st) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: replaced while it was checked", inputfile.Quote(path))
		}
		return nil, wrap(err)
	}
	return &idsigOutput{path: path, through: f}, nil
}

// close releases an output left unwritten.
func (o *idsigOutput) close() {
	if o.through != nil {
		o.through.Close()
	}
}

// write writes data to the output and closes it.
func (o *idsigOutput) write(data []byte) error {
	if o.through == nil {
		return writeReplacing(o.path, data)
	}
	f := o.through
	o.through = nil
	_, err := f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write idsig %s: %w", inputfile.Quote(o.path), err)
	}
	return nil
}

// writeReplacing writes data to a temporary file next to path and renames it over path,
// so that a reader never sees half a file.
func writeReplacing(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write idsig %s: %w", path, err)
	}
	return nil
}
