package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"

	"vmfs"
	"vmfs/layout"
	"vmfs/metadata"
	"vmfs/testdata"
)

// payloadConfig is the APK's payload config: the sample's three APEXes, so the disk has
// every kind of partition (metadata, APEXes with size trailers, APK, idsig).
const payloadConfig = `{"os":{"name":"microdroid"},"apexes":[{"name":"com.android.adbd"},{"name":"com.android.os.statsd"},{"name":"com.vmfs.edge"}]}`

// writeRandomAPK writes a zip of exactly size bytes at path: the payload config at
// testdata.ConfigPath and one stored entry of pseudo-random bytes, so no reader is
// flattered by holes or compression. A size that is a 4 KiB multiple gives an APK
// partition that is the file itself (what passthrough needs).
func writeRandomAPK(path string, size int64, seed uint64) error {
	// The zip's own bytes do not depend on the entry's length below 4 GiB (no zip64),
	// so an empty dry run tells how long the entry must be.
	var over countWriter
	if err := writeAPK(&over, 0, seed); err != nil {
		return err
	}
	n := size - int64(over)
	if n < 0 || n >= 1<<32-1 {
		return fmt.Errorf("apk %s: size %d outside [%d, 4 GiB)", path, size, int64(over))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeAPK(f, n, seed); err != nil {
		return fmt.Errorf("write apk %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("apk %s: wrote %d bytes, wanted %d", path, st.Size(), size)
	}
	return nil
}

func writeAPK(w io.Writer, n int64, seed uint64) error {
	zw := zip.NewWriter(w)
	cw, err := zw.Create(testdata.ConfigPath)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(cw, payloadConfig); err != nil {
		return err
	}
	if err := addRandomEntry(zw, n, seed); err != nil {
		return err
	}
	return zw.Close()
}

// addRandomEntry adds assets/random.bin, n stored pseudo-random bytes.
func addRandomEntry(zw *zip.Writer, n int64, seed uint64) error {
	ew, err := zw.CreateHeader(&zip.FileHeader{Name: "assets/random.bin", Method: zip.Store})
	if err != nil {
		return err
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	buf := make([]byte, 1<<20)
	rng := rand.NewChaCha8(key)
	for n > 0 {
		b := buf[:min(n, int64(len(buf)))]
		rng.Read(b)
		if _, err := ew.Write(b); err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

// writeSignedAPK writes dir/boot.apk and its idsig: the signed sample APK's entries
// plus n random bytes, signed v2 + v4 with the sample's throwaway key, so that the
// test guest's dm-verity check of the APK passes.
func writeSignedAPK(dir string, n int64) (apk, idsig string, err error) {
	zr, err := zip.OpenReader(testdata.APKPath())
	if err != nil {
		return "", "", err
	}
	defer zr.Close()
	unsigned := filepath.Join(dir, "boot-unsigned.apk")
	f, err := os.Create(unsigned)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, e := range zr.File {
		if err := zw.Copy(e); err != nil {
			return "", "", fmt.Errorf("copy %s of %s: %w", e.Name, testdata.APKPath(), err)
		}
	}
	if err := addRandomEntry(zw, n, 99); err != nil {
		return "", "", err
	}
	if err := zw.Close(); err != nil {
		return "", "", err
	}
	if err := f.Close(); err != nil {
		return "", "", err
	}
	apk = filepath.Join(dir, "boot.apk")
	out, err := exec.Command("apksigner", "sign",
		"--key", testdata.Path("app", "key.pk8"), "--cert", testdata.CertPath(),
		"--v1-signing-enabled", "false", "--v2-signing-enabled", "true",
		"--v3-signing-enabled", "false", "--v4-signing-enabled", "true",
		"--out", apk, unsigned).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("apksigner sign %s: %w: %s", unsigned, err, bytes.TrimSpace(out))
	}
	return apk, apk + ".idsig", os.Remove(unsigned)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// inputs are the files every method starts from.
type inputs struct {
	apk, idsig   string
	apexInfoList string
	osDir        string
}

// plan is what a method that does not go through vmfs has to work out first, the
// same way vmfs does: read the payload config from the APK, parse the idsig, resolve
// the APEXes and the OS config, and lay out the disk.
type plan struct {
	disk     *layout.Disk
	metadata []byte // the metadata partition's bytes, unpadded
}

func resolve(in inputs) (*plan, error) {
	p, err := vmfs.Resolve(context.Background(), vmfs.Spec{
		APK: in.apk, Idsig: in.idsig, ConfigPath: testdata.ConfigPath,
		ApexInfoList: in.apexInfoList, OSDir: in.osDir,
	})
	if err != nil {
		return nil, err
	}
	return &plan{disk: p.Disk, metadata: p.MetadataBlob()}, nil
}

// apk is the APK source of the disk.
func (p *plan) apk() layout.Source {
	part, _ := p.partition(metadata.APKLabel) // every payload disk has one
	return p.disk.Sources[part.Extents[0].Source]
}

// partition returns the partition labelled label.
func (p *plan) partition(label string) (*layout.Partition, error) {
	for i := range p.disk.Partitions {
		if p.disk.Partitions[i].Label == label {
			return &p.disk.Partitions[i], nil
		}
	}
	return nil, fmt.Errorf("payload disk: no partition %q", label)
}
