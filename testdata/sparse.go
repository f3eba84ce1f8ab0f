package testdata

import (
	"archive/zip"
	"io"
	"os"
)

// WriteLargeAPK writes a zip at path that holds the sample payload config at
// ConfigPath and one stored entry of zeros, so that the file is a little over size
// bytes. The zeros are holes: a multi-GiB payload costs no disk and little time.
// Such an APK has no signature; it is for mount and benchmark tests.
func WriteLargeAPK(path string, size int64, config []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(&holeWriter{f: f})
	w, err := zw.Create(ConfigPath)
	if err != nil {
		return err
	}
	if _, err := w.Write(config); err != nil {
		return err
	}
	w, err = zw.CreateHeader(&zip.FileHeader{Name: "assets/zeros.bin", Method: zip.Store})
	if err != nil {
		return err
	}
	if _, err := io.CopyN(w, zeroReader{}, size); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// holeWriter seeks over all-zero writes instead of writing them.
type holeWriter struct {
	f   *os.File
	off int64
}

func (h *holeWriter) Write(p []byte) (int, error) {
	zero := true
	for _, b := range p {
		if b != 0 {
			zero = false
			break
		}
	}
	if zero {
		h.off += int64(len(p))
		return len(p), h.f.Truncate(h.off)
	}
	n, err := h.f.WriteAt(p, h.off)
	h.off += int64(n)
	return n, err
}
