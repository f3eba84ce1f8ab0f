package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/metadata"
	"vmfs/testdata"
)

// apexPayload is an app whose config names APEXes written for the test.
type apexPayload struct {
	apk    string
	idsig  string   // a copy of the fixture's: every source is the test's own
	apexes []string // the APEX files, in config order
	flags  []string // vmfs flags that find them
}

// newApexPayload writes APEXes of random bytes and the given sizes into an APEX
// directory, an APK whose config names them, and copies of the fixture idsig and OS
// directory, all of it world-readable in a directory every user may search (the
// checkout may be under a 0700 home).
func newApexPayload(t *testing.T, sizes ...int64) *apexPayload {
	t.Helper()
	b := badInputs{t, testdata.PublicDir(t)}
	p := &apexPayload{}
	r := rand.New(rand.NewPCG(uint64(len(sizes)), uint64(sizes[0])))
	var names []string
	for i, size := range sizes {
		name := fmt.Sprintf("com.vmfs.g%d", i)
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		p.apexes = append(p.apexes, b.file(filepath.Join("apex", name+".apex"), data))
		names = append(names, fmt.Sprintf(`{"name":%q}`, name))
	}
	p.apk = b.configAPK("app.apk", `{"os":{"name":"microdroid"},"apexes":[`+strings.Join(names, ",")+`]}`)
	p.idsig = copyFile(t, testdata.IdsigPath(), filepath.Join(b.dir, "app.apk.idsig"), 0o644)
	// An empty list keeps the machine's own /apex/apex-info-list.xml out.
	emptyList := b.file("empty-list.xml", []byte("<apex-info-list/>"))
	// The OS config's disk images are sources of the mount too.
	osDir := filepath.Join(b.dir, "os")
	entries, err := os.ReadDir(testdata.OSDir())
	if err == nil {
		err = os.Mkdir(osDir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(t, filepath.Join(testdata.OSDir(), e.Name()), filepath.Join(osDir, e.Name()), 0o644)
	}
	p.flags = []string{"--apex-dir", filepath.Join(b.dir, "apex"), "--apex-info-list", emptyList, "--os-dir", osDir}
	return p
}

// mount serves p at a fresh mountpoint that every user may reach, with the extra
// flags; it is unmounted at cleanup.
func (p *apexPayload) mount(t *testing.T, extra ...string) string {
	t.Helper()
	mnt := filepath.Join(testdata.PublicDir(t), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(append(append([]string{"mount"}, extra...), p.flags...), p.apk, p.idsig, testdata.ConfigPath, mnt)
	if r := runVmfs(t, "", args...); r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
	return mnt
}

// wantDisk is the payload disk built by hand: the GPT header, metadata partition
// and footer as the mount serves them (synthesized, each one piece), then every
// source file padded as the layout says.
func (p *apexPayload) wantDisk(t *testing.T, mnt string) []byte {
	t.Helper()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pad := func(b []byte) []byte { return append(b, make([]byte, (4096-len(b)%4096)%4096)...) }
	disk := append(read(filepath.Join(mnt, "header.img")), read(filepath.Join(mnt, "partitions", metadata.Android12.MetadataLabel()))...)
	for _, a := range p.apexes {
		b := read(a)
		part := pad(append(b, 0, 0, 0, 0))
		binary.BigEndian.PutUint32(part[len(part)-4:], uint32(len(b)))
		disk = append(disk, part...)
	}
	disk = append(disk, pad(read(p.apk))...)
	disk = append(disk, pad(read(p.idsig))...)
	return append(disk, read(filepath.Join(mnt, "footer.img"))...)
}

// TestGuaranteeWholeRead: cat of payload.img gives as many bytes as stat says, and
// the right ones, for payloads of small odd-sized APEXes. Their partitions take
// more splice pipe buffers than pages; a reply that did not fit came back short,
// which the kernel took for the end of the file.
func TestGuaranteeWholeRead(t *testing.T) {
	testdata.RequireFUSE(t)
	cat := testdata.RequireTool(t, "cat")
	// Layouts whose cat came back short every time on a fresh server.
	for _, sizes := range [][]int64{
		{12290, 8189, 12287},
		{8193, 4097, 4100, 8196},
		{4097, 8197, 12286, 8196},
		{4093, 8187, 4093, 8187, 12290},
	} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			p := newApexPayload(t, sizes...)
			mnt := p.mount(t)
			img := filepath.Join(mnt, "payload.img")
			st, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(cat, img).Output()
			if err != nil {
				t.Fatalf("cat: %v", err)
			}
			if int64(len(out)) != st.Size() {
				t.Fatalf("cat gave %d bytes; stat says %d", len(out), st.Size())
			}
			if !bytes.Equal(out, p.wantDisk(t, mnt)) {
				t.Fatal("cat gave other bytes than the sources laid out")
			}
		})
	}
}

// TestGuaranteeChangeNoticedByRead: the apex-info-list maps two APEX names to one
// file. After the file changes, by write(2) or through a shared mapping (each on a
// fresh mount), reads through the mount fail with EIO, and at once: a read that
// was first to notice the change used to deadlock in the kernel.
func TestGuaranteeChangeNoticedByRead(t *testing.T) {
	testdata.RequireFUSE(t)
	for name, edit := range testdata.Edits {
		t.Run(name, func(t *testing.T) {
			b := badInputs{t, t.TempDir()}
			apex := b.file("shared.apex", bytes.Repeat([]byte("apex"), 2500))
			var entries, names []string
			for _, name := range []string{"com.vmfs.a", "com.vmfs.b"} {
				entries = append(entries, fmt.Sprintf(`<apex-info moduleName=%q modulePath=%q preinstalledModulePath=%[2]q versionCode="1" versionName="" isFactory="true" isActive="true" lastUpdateMillis="0" provideSharedApexLibs="false"></apex-info>`, name, apex))
				names = append(names, fmt.Sprintf(`{"name":%q}`, name))
			}
			list := b.file("apex-info-list.xml", []byte("<apex-info-list>"+strings.Join(entries, "\n")+"</apex-info-list>\n"))
			apk := b.configAPK("app.apk", `{"os":{"name":"microdroid"},"apexes":[`+strings.Join(names, ",")+`]}`)
			mnt := t.TempDir()
			if r := runVmfs(t, "", "mount", "--apex-info-list", list, "--os-dir", testdata.OSDir(), apk, testdata.IdsigPath(), testdata.ConfigPath, mnt); r.code != 0 {
				t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
			}
			t.Cleanup(func() { runVmfs(t, "", "unmount", mnt) })
			if err := edit(apex); err != nil {
				t.Fatal(err)
			}
			testdata.WithinOrAbort(t, mnt, 10*time.Second, func() {
				for _, f := range []string{"partitions/" + metadata.ApexLabel(0), "partitions/" + metadata.ApexLabel(1), "payload.img"} {
					if _, err := os.ReadFile(filepath.Join(mnt, f)); !errors.Is(err, syscall.EIO) {
						t.Errorf("%s after the change: %v, want EIO", f, err)
					}
				}
			})
		})
	}
}

// TestGuaranteeSourceSwappedForFIFO: an APEX swapped for a FIFO after the server
// resolved the payload fails the mount at once, with one line naming it, and
// leaves nothing behind; the server used to wait on the FIFO for a writer, until
// vmfs gave up on it after a minute and left it there. The swap is made while a
// fanotify permission event holds the server's open of the first APEX, which only
// the server opens (the resolver stats them), just before it opens the second.
func TestGuaranteeSourceSwappedForFIFO(t *testing.T) {
	testdata.RequireFUSE(t)
	testdata.RequireRoot(t) // fanotify permission events
	p := newApexPayload(t, 5000, 6000)
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		testdata.Missing(t, "fanotify: %v", err)
	}
	fan := os.NewFile(uintptr(fd), "fanotify")
	defer fan.Close() // lets any open still held through
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_OPEN_PERM, unix.AT_FDCWD, p.apexes[0]); err != nil {
		t.Fatal(err)
	}
	swapped := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for first := true; ; first = false {
			n, err := fan.Read(buf)
			if err != nil {
				return
			}
			if first {
				os.Remove(p.apexes[1])
				swapped <- unix.Mkfifo(p.apexes[1], 0o644)
			}
			for off := 0; off < n; {
				ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
				resp := unix.FanotifyResponse{Fd: ev.Fd, Response: unix.FAN_ALLOW}
				fan.Write((*[unsafe.Sizeof(resp)]byte)(unsafe.Pointer(&resp))[:])
				unix.Close(int(ev.Fd))
				off += int(ev.Event_len)
			}
		}
	}()

	tmp := t.TempDir()
	cmd := exec.Command(vmfsBin, append(append([]string{"mount"}, p.flags...), p.apk, p.idsig, testdata.ConfigPath, t.TempDir())...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Error("vmfs mount still running after 20 s")
		if f, err := os.OpenFile(p.apexes[1], os.O_RDWR, 0); err == nil { // frees a reader waiting on the FIFO
			defer f.Close()
		}
		<-exited
	}
	select {
	case err := <-swapped:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("the server never opened the first APEX: nothing was swapped")
	}
	t.Logf("exit %d: %s", cmd.ProcessState.ExitCode(), strings.TrimSpace(stderr.String()))
	if code := cmd.ProcessState.ExitCode(); code != exitInput {
		t.Errorf("exit %d, want %d (bad input)", code, exitInput)
	}
	want := p.apexes[1] + ": " + inputfile.Kind(os.ModeNamedPipe)
	if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, want) {
		t.Errorf("want one error line saying %q, got %q", want, msg)
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestGuaranteePermissions: with --allow-other, another user reads only what the
// sources would let them read. One APEX is 0600 and one a symlink to a root-only
// file: their partitions and payload.img are closed to nobody, while a partition
// of world-readable sources still reads; a payload of world-readable sources stays
// readable whole.
func TestGuaranteePermissions(t *testing.T) {
	testdata.RequireFUSE(t)
	testdata.RequireRoot(t) // to mount for other users and to read as one
	open := newApexPayload(t, 5000, 6000, 7000)
	mnt := open.mount(t, "--allow-other")
	for _, f := range []string{"payload.img", "vm.json", "partitions/" + metadata.ApexLabel(0)} {
		if _, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(mnt, f)); err != nil {
			t.Errorf("world-readable payload: %s as nobody: %v", f, err)
		}
	}

	p := newApexPayload(t, 5000, 6000, 7000)
	if err := os.Chmod(p.apexes[0], 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(testdata.PublicDir(t), "root-only.apex")
	if err := os.Rename(p.apexes[1], secret); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, p.apexes[1]); err != nil {
		t.Fatal(err)
	}
	mnt = p.mount(t, "--allow-other")
	for f, readable := range map[string]bool{
		"partitions/" + metadata.ApexLabel(0): false,
		"partitions/" + metadata.ApexLabel(1): false,
		"payload.img":                         false,
		"partitions/" + metadata.ApexLabel(2): true,
		"partitions/" + metadata.APKLabel:     true,
	} {
		_, err := testdata.ReadAs(t, testdata.Nobody, filepath.Join(mnt, f))
		if readable && err != nil {
			t.Errorf("%s as nobody: %v", f, err)
		}
		if !readable && !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s as nobody: %v, want permission denied", f, err)
		}
	}
}
