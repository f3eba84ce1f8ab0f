package testdata

import (
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// QemuImgCheck fails the test unless `qemu-img check` finds the QCOW2 image at path
// clean: no corruption and no leaked cluster (its exit status 0).
func QemuImgCheck(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command(RequireTool(t, "qemu-img"), "check", "-f", "qcow2", path).CombinedOutput()
	if err != nil {
		t.Errorf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

// QemuImgInfo returns the format and the virtual size `qemu-img info` finds in the
// image at path (QEMU counts whole 512-byte sectors: a QCOW2 image's size rounded
// down, a raw file's rounded up).
func QemuImgInfo(t testing.TB, path string) (format string, size int64) {
	t.Helper()
	out, err := exec.Command(RequireTool(t, "qemu-img"), "info", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		Format string `json:"format"`
		Size   int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", path, err, out)
	}
	return info.Format, info.Size
}

// QemuIO runs qemu-io commands (`write -P 0x5a 1M 64k`, `read -P 0x5a 1M 64k`) on
// the image at path, of format "qcow2" or "raw", read-only unless write, and returns
// what it printed; a command that fails (a pattern that does not match) fails the
// test.
func QemuIO(t testing.TB, path, format string, write bool, cmds ...string) string {
	t.Helper()
	args := []string{"-f", format}
	if !write {
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command(RequireTool(t, "qemu-io"), append(args, path)...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io %s %q: %v\n%s", path, cmds, err, out)
	}
	return string(out)
}

// dumpLine is one line of qemu-io's `read -v` dump: the offset, then up to 16 bytes
// in hex, each followed by a space, then the bytes as text.
var dumpLine = regexp.MustCompile(`^[0-9a-f]{8}:  ((?:[0-9a-f]{2} ){1,16})`)

// QemuRead returns n bytes at offset off of the virtual disk of the image at path, as
// qemu-io reads them (`read -v`).
func QemuRead(t testing.TB, path, format string, off, n int64) []byte {
	t.Helper()
	out := QemuIO(t, path, format, false, "read -v "+strconv.FormatInt(off, 10)+" "+strconv.FormatInt(n, 10))
	var got []byte
	for _, line := range strings.Split(out, "\n") {
		m := dumpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		b, err := hex.DecodeString(strings.ReplaceAll(m[1], " ", ""))
		if err != nil {
			t.Fatalf("qemu-io dump line %q: %v", line, err)
		}
		got = append(got, b...)
	}
	if int64(len(got)) != n {
		t.Fatalf("qemu-io read -v %d %d on %s gave %d bytes:\n%s", off, n, path, len(got), out)
	}
	return got
}
