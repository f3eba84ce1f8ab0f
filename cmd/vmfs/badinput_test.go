package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/metadata"
	"vmfs/testdata"
)

// badInputs builds the inputs of TestBadInput in dir.
type badInputs struct {
	t   *testing.T
	dir string
}

func (b badInputs) file(name string, data []byte) string {
	p := filepath.Join(b.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// fifo makes a named pipe. Opening one for reading waits for a writer: an input
// opened that way would hang vmfs.
func (b badInputs) fifo(name string) string {
	p := filepath.Join(b.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// apk writes a zip holding the given entries (a name ending in / is a directory).
func (b badInputs) apk(name string, entries map[string]string) string {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for n, data := range entries {
		w, err := zw.Create(n)
		if err != nil {
			b.t.Fatal(err)
		}
		w.Write([]byte(data))
	}
	if err := zw.Close(); err != nil {
		b.t.Fatal(err)
	}
	return b.file(name, buf.Bytes())
}

// configAPK is an APK whose payload config is cfg.
func (b badInputs) configAPK(name, cfg string) string {
	return b.apk(name, map[string]string{testdata.ConfigPath: cfg})
}

// osDir writes microdroid.json (or another OS's config) into a fresh directory.
func (b badInputs) osDir(name, json string) string {
	d := filepath.Join(b.dir, "os-"+name)
	b.file(filepath.Join("os-"+name, "microdroid.json"), []byte(json))
	os.WriteFile(filepath.Join(d, "kernel"), []byte("k"), 0o644)
	return d
}

// idsig returns a copy of the fixture idsig with fix applied to its bytes.
func (b badInputs) idsig(name string, fix func([]byte) []byte) string {
	data, err := os.ReadFile(testdata.IdsigPath())
	if err != nil {
		b.t.Fatal(err)
	}
	return b.file(name, fix(data))
}

// TestBadInput: every bad input makes vmfs exit non-zero with one line naming the
// file and the problem, and leaves no mount, process or temporary file behind.
func TestBadInput(t *testing.T) {
	testdata.RequireFUSE(t)
	b := badInputs{t, t.TempDir()}
	apk, idsig, cfg := testdata.APKPath(), testdata.IdsigPath(), testdata.ConfigPath
	good := []string{apk, idsig, cfg}
	sig, err := metadata.OpenIdsig(idsig)
	if err != nil {
		t.Fatal(err)
	}
	apkBytes, _ := os.ReadFile(apk)
	apexes := fixtureFlags()
	// onlyDir finds APEXes in d alone: the list it names exists and is empty.
	emptyList := b.file("empty-list.xml", []byte("<apex-info-list/>"))
	onlyDir := func(d string) []string {
		return []string{"--apex-dir", d, "--os-dir", testdata.OSDir(), "--apex-info-list", emptyList}
	}
	cfgWith := func(apexNames ...string) string {
		var list []string
		for _, n := range apexNames {
			list = append(list, fmt.Sprintf(`{"name":%q}`, n))
		}
		return `{"os":{"name":"microdroid"},"apexes":[` + strings.Join(list, ",") + `]}`
	}

	// Inputs that need more than one line to make.
	manyDir := filepath.Join(b.dir, "many")
	var many []string
	for i := 0; i < 126; i++ { // + metadata, apk, idsig = 129 partitions
		name := fmt.Sprintf("com.vmfs.n%d", i)
		b.file(filepath.Join("many", name+".apex"), []byte("x"))
		many = append(many, name)
	}
	bigDir := filepath.Join(b.dir, "big")
	os.MkdirAll(bigDir, 0o755)
	if err := os.WriteFile(filepath.Join(bigDir, "com.vmfs.big.apex"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(filepath.Join(bigDir, "com.vmfs.big.apex"), 2<<30) // sparse
	emptyDir := filepath.Join(b.dir, "empty")
	b.file(filepath.Join("empty", "com.vmfs.empty.apex"), nil)
	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "x"), nil, 0o644)
	busy := t.TempDir()
	if r := runVmfs(t, "", append(append([]string{"mount"}, apexes...), append(good, busy)...)...); r.code != 0 {
		t.Fatalf("mount: %s", r.stderr)
	}
	t.Cleanup(func() { runVmfs(t, "", "unmount", busy) })

	const fresh = "" // a fresh empty mountpoint
	type tc struct {
		name string
		args []string // the command and its arguments; a last "" becomes a fresh mountpoint
		code int
		want []string // substrings of the one error line
	}
	mount := func(name string, flags []string, a, i, c, mnt string, code int, want ...string) tc {
		return tc{name, append(append([]string{"mount"}, flags...), a, i, c, mnt), code, want}
	}
	// inspectMount checks that inspect and mount refuse the same inputs alike.
	inspectMount := func(name string, flags []string, a, i, c string, code int, want ...string) []tc {
		return []tc{
			{"inspect " + name, append(append([]string{"inspect"}, flags...), a, i, c), code, want},
			mount("mount "+name, flags, a, i, c, fresh, code, want...),
		}
	}
	verify := func(name, a, i string, code int, want ...string) tc {
		return tc{"verify " + name, []string{"verify", a, i}, code, want}
	}
	cases := []tc{
		// The APK.
		mount("apk missing", apexes, filepath.Join(b.dir, "none.apk"), idsig, cfg, fresh, exitInput, "none.apk", "no such file"),
		mount("apk a directory", apexes, b.dir, idsig, cfg, fresh, exitInput, b.dir),
		mount("apk not a zip", apexes, b.file("notzip.apk", []byte("hello")), idsig, cfg, fresh, exitInput, "notzip.apk", "zip"),
		mount("apk truncated", apexes, b.file("trunc.apk", apkBytes[:len(apkBytes)/2]), idsig, cfg, fresh, exitInput, "trunc.apk"),
		mount("config entry huge", apexes, b.configAPK("huge.apk", `{"os":{"name":"microdroid"}`+strings.Repeat(" ", 2<<20)+`}`), idsig, cfg, fresh, exitInput, "huge.apk", cfg),
		// The config path.
		mount("config absent", apexes, apk, idsig, "assets/none.json", fresh, exitInput, "assets/none.json", "not found"),
		mount("config a directory", apexes, b.apk("dir.apk", map[string]string{"assets/": "", cfg: "{}"}), idsig, "assets", fresh, exitInput, "dir.apk", "assets"),
		mount("config absolute", apexes, apk, idsig, "/"+cfg, fresh, exitInput, "/"+cfg),
		mount("config with ..", apexes, apk, idsig, "assets/../../etc/passwd", fresh, exitInput, "assets/../../etc/passwd"),
		// The payload config.
		mount("config not json", apexes, b.configAPK("badjson.apk", `{"os":`), idsig, cfg, fresh, exitInput, "badjson.apk", cfg),
		mount("config wrong types", apexes, b.configAPK("types.apk", `{"apexes":"com.android.adbd"}`), idsig, cfg, fresh, exitInput, "types.apk", "apexes"),
		mount("task without command", apexes, b.configAPK("task.apk", `{"task":{"type":"executable"}}`), idsig, cfg, fresh, exitInput, "task.apk", "command"),
		mount("os unknown", apexes, b.configAPK("osx.apk", `{"os":{"name":"nosuchos"}}`), idsig, cfg, fresh, exitInput, "nosuchos.json"),
		mount("os name with /", apexes, b.configAPK("osslash.apk", `{"os":{"name":"a/b"}}`), idsig, cfg, fresh, exitInput, "a/b"),
		mount("os name ..", apexes, b.configAPK("osdots.apk", `{"os":{"name":".."}}`), idsig, cfg, fresh, exitInput, `".."`),
		// The OS config.
		mount("os config missing", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", b.dir}, apk, idsig, cfg, fresh, exitInput, filepath.Join(b.dir, "microdroid.json")),
		mount("os config invalid", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", b.osDir("invalid", `{"kernel":`)}, apk, idsig, cfg, fresh, exitInput, "os-invalid/microdroid.json"),
		mount("os config kernel and bootloader", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", b.osDir("both", `{"kernel":"kernel","bootloader":"kernel","disks":[]}`)}, apk, idsig, cfg, fresh, exitInput, "os-both/microdroid.json", "both"),
		mount("os config neither", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", b.osDir("neither", `{"disks":[]}`)}, apk, idsig, cfg, fresh, exitInput, "os-neither/microdroid.json", "kernel"),
		// The APEXes.
		mount("apex not found", onlyDir(b.dir), apk, idsig, cfg, fresh, exitInput, "com.android.adbd", "not found"),
		mount("apex name with /", onlyDir(b.dir), b.configAPK("apexslash.apk", cfgWith("../etc/passwd")), idsig, cfg, fresh, exitInput, "../etc/passwd"),
		mount("apex name ..", onlyDir(b.dir), b.configAPK("apexdots.apk", cfgWith("..")), idsig, cfg, fresh, exitInput, `".."`),
		mount("apex empty", onlyDir(emptyDir), b.configAPK("apexempty.apk", cfgWith("com.vmfs.empty")), idsig, cfg, fresh, exitInput, "com.vmfs.empty.apex", "empty"),
		mount("apex 2 GiB", onlyDir(bigDir), b.configAPK("apexbig.apk", cfgWith("com.vmfs.big")), idsig, cfg, fresh, exitInput, "com.vmfs.big.apex", "too large"),
		mount("apex named twice", apexes, b.configAPK("twice.apk", cfgWith("com.android.adbd", "com.android.adbd")), idsig, cfg, fresh, exitInput, "twice.apk", "com.android.adbd"),
		mount("129 partitions", onlyDir(manyDir), b.configAPK("many.apk", cfgWith(many...)), idsig, cfg, fresh, exitInput, "many.apk", "129 partitions"),
		mount("apex-info-list malformed", []string{"--apex-info-list", b.file("bad.xml", []byte("<apex-info-list><apex-info moduleName=")), "--os-dir", testdata.OSDir()}, apk, idsig, cfg, fresh, exitInput, "bad.xml"),
		// The idsig.
		mount("idsig missing", apexes, apk, filepath.Join(b.dir, "none.idsig"), cfg, fresh, exitInput, "none.idsig"),
		mount("idsig wrong version", apexes, apk, b.idsig("v3.idsig", func(d []byte) []byte { d[0] = 3; return d }), cfg, fresh, exitInput, "v3.idsig", "version"),
		mount("idsig truncated", apexes, apk, b.idsig("short.idsig", func(d []byte) []byte { return d[:100] }), cfg, fresh, exitInput, "short.idsig"),
		mount("idsig tree larger than file", apexes, apk, b.idsig("tree.idsig", func(d []byte) []byte {
			binary.LittleEndian.PutUint32(d[sig.TreeOffset-4:], uint32(sig.TreeSize+4096))
			return d
		}), cfg, fresh, exitInput, "tree.idsig", "tree"),
		// The mountpoint and FUSE.
		mount("mountpoint missing", apexes, apk, idsig, cfg, filepath.Join(b.dir, "nodir"), exitMount, "nodir", "no such file"),
		mount("mountpoint a file", apexes, apk, idsig, cfg, apk, exitMount, apk, "not a directory"),
		mount("mountpoint not empty", apexes, apk, idsig, cfg, notEmpty, exitMount, notEmpty, "not empty"),
		mount("mountpoint already a vmfs mount", apexes, apk, idsig, cfg, busy, exitMount, busy, "already a vmfs mount"),
	}

	// Inputs that are not regular files: refused at once, by what they are.
	const isFIFO = "a FIFO (named pipe), not a regular file"
	fifoAPK, fifoIdsig := b.fifo("fifo/app.apk"), b.fifo("fifo/app.apk.idsig")
	fifoList := b.fifo("fifo/apex-info-list.xml")
	fifoOS := filepath.Dir(b.fifo("fifo/os/microdroid.json"))
	cases = append(cases,
		verify("apk a FIFO", fifoAPK, idsig, exitInput, fifoAPK, isFIFO),
		verify("idsig a FIFO", apk, fifoIdsig, exitInput, fifoIdsig, isFIFO),
		verify("apk missing", filepath.Join(b.dir, "none.apk"), idsig, exitInput, "none.apk", "no such file"),
		verify("apk not the signed one", b.file("other.apk", append(bytes.Clone(apkBytes), 1)), idsig, exitFailure, "other.apk", "merkle tree"),
	)
	cases = append(cases, inspectMount("apk a FIFO", apexes, fifoAPK, idsig, cfg, exitInput, fifoAPK, isFIFO)...)
	cases = append(cases, inspectMount("idsig a FIFO", apexes, apk, fifoIdsig, cfg, exitInput, fifoIdsig, isFIFO)...)
	cases = append(cases, inspectMount("apex-info-list a FIFO", []string{"--apex-info-list", fifoList, "--os-dir", testdata.OSDir()}, apk, idsig, cfg, exitInput, fifoList, isFIFO)...)
	cases = append(cases, inspectMount("os config a FIFO", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", fifoOS}, apk, idsig, cfg, exitInput, filepath.Join(fifoOS, "microdroid.json"), isFIFO)...)

	// APEXes that are there but not regular files, found through --apex-dir or the list
	// (whose relative modulePaths resolve against its own directory).
	apexDir := filepath.Join(b.dir, "apexes")
	apexList := b.file("apexes/apex-info-list.xml", []byte(`<apex-info-list>
		<apex-info moduleName="com.vmfs.fifo" modulePath="com.vmfs.fifo.apex" isActive="true"/>
		<apex-info moduleName="com.vmfs.dir" modulePath="com.vmfs.dir.apex" isActive="true"/>
		<apex-info moduleName="com.vmfs.dangling" modulePath="com.vmfs.dangling.apex" isActive="true"/>
		</apex-info-list>`))
	fifoApex := b.fifo("apexes/com.vmfs.fifo.apex")
	dirApex := filepath.Join(apexDir, "com.vmfs.dir.apex")
	if err := os.Mkdir(dirApex, 0o755); err != nil {
		t.Fatal(err)
	}
	danglingApex := filepath.Join(apexDir, "com.vmfs.dangling.apex")
	if err := os.Symlink(filepath.Join(apexDir, "gone"), danglingApex); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ name, path, say string }{
		{"com.vmfs.fifo", fifoApex, isFIFO},
		{"com.vmfs.dir", dirApex, "a directory, not a regular file"},
		{"com.vmfs.dangling", danglingApex, "dangling symlink to " + filepath.Join(apexDir, "gone")},
	} {
		app := b.configAPK(a.name+".apk", cfgWith(a.name))
		cases = append(cases, inspectMount("apex "+a.name+" via --apex-dir", onlyDir(apexDir), app, idsig, cfg, exitInput, "apex "+a.name, a.path, a.say)...)
		cases = append(cases, inspectMount("apex "+a.name+" via apex-info-list", []string{"--apex-info-list", apexList, "--os-dir", testdata.OSDir()}, app, idsig, cfg, exitInput, "apex "+a.name, apexList, a.path, a.say)...)
	}

	// A list named on the command line must exist, though --apex-dir would do.
	noList := filepath.Join(b.dir, "none.xml")
	cases = append(cases, inspectMount("apex-info-list named but missing", []string{"--apex-info-list", noList, "--apex-dir", testdata.Path("apex"), "--os-dir", testdata.OSDir()}, apk, idsig, cfg, exitInput, "apex info list", noList, "no such file")...)

	// A key given twice: AVF's serde refuses it, encoding/json would keep the last.
	dupCfg := b.configAPK("dupkey.apk", `{"os":{"name":"microdroid"},"os":{"name":"microdroid"}}`)
	cases = append(cases, inspectMount("config key twice", apexes, dupCfg, idsig, cfg, exitInput, "dupkey.apk", cfg, `duplicate key "os"`)...)
	dupOS := b.osDir("dupkey", `{"kernel":"kernel","disks":[{"image":"kernel","writable":false,"writable":true}]}`)
	cases = append(cases, inspectMount("os config key twice", []string{"--apex-info-list", testdata.APEXInfoListPath(), "--os-dir", dupOS}, apk, idsig, cfg, exitInput,
		filepath.Join(dupOS, "microdroid.json"), `duplicate key "writable" in disks[0]`)...)

	// Strings from input files are repeated in errors cut (checkBad bounds every line).
	// The modulePath fills the list up to its 4 MiB cap.
	longPath := "/" + strings.Repeat("p", 4<<20-200)
	longList := b.file("long-list.xml", []byte(`<apex-info-list><apex-info moduleName="com.android.adbd" modulePath="`+longPath+`" isActive="true"/></apex-info-list>`))
	cases = append(cases, inspectMount("4 MiB modulePath", []string{"--apex-info-list", longList, "--os-dir", testdata.OSDir()}, apk, idsig, cfg, exitInput, "com.android.adbd", "long-list.xml", "file name too long", fmt.Sprintf("(%d bytes)", len(longPath)))...)
	longName := strings.Repeat("n", 512<<10)
	cases = append(cases, inspectMount("512 KiB apex name", apexes, b.configAPK("longname.apk", cfgWith(longName)), idsig, cfg, exitInput, "longname.apk", "invalid apex name", fmt.Sprintf("(%d bytes)", len(longName)))...)

	rootFlipped := b.idsig("root.idsig", func(d []byte) []byte {
		// the raw root hash ends the hashing info, just before the signing info's length
		d[sig.TreeOffset-4-int64(len(sig.SigningInfo))-4-1] ^= 1
		return d
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{}, c.args...)
			if args[len(args)-1] == fresh {
				args[len(args)-1] = t.TempDir()
			}
			checkBad(t, args, nil, c.code, c.want, busy)
		})
	}
	t.Run("root mismatch (run-app)", func(t *testing.T) {
		checkBad(t, append(append([]string{"run-app"}, apexes...), apk, rootFlipped, cfg), nil, exitFailure, []string{"pre-flight", "root.idsig"}, busy)
	})
	t.Run("/dev/fuse unusable", func(t *testing.T) {
		testdata.RequireRoot(t)
		unshare := testdata.RequireTool(t, "unshare")
		// A private mount namespace whose /dev has no fuse device.
		wrap := []string{unshare, "--mount", "sh", "-c", `mount -t tmpfs none /dev && exec "$0" "$@"`, vmfsBin}
		checkBad(t, append(append([]string{"mount"}, apexes...), apk, idsig, cfg, t.TempDir()), wrap, exitMount, []string{"/dev/fuse"}, busy)
	})
}

// badDeadline bounds one run of vmfs on a bad input, so that a vmfs blocked on an
// input (a FIFO) fails the test instead of hanging it.
const badDeadline = 20 * time.Second

// checkBad runs vmfs (under wrap, which ends with the binary, when given) and checks
// the failure.
func checkBad(t *testing.T, args, wrap []string, code int, want []string, keep string) {
	t.Helper()
	tmp := t.TempDir()
	argv := append(append([]string{}, wrap...), args...)
	if wrap == nil {
		argv = append([]string{vmfsBin}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), badDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Errorf("still running after %v: killed", badDeadline)
	case err != nil && !errors.As(err, &ee):
		t.Fatalf("run vmfs: %v", err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
	t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if r.code != code {
		t.Errorf("exit %d, want %d: %s", r.code, code, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "vmfs: ") || len(r.stderr) > 1024 {
		t.Errorf("want one error line of at most 1 KiB, got %d bytes: %.1024q", len(r.stderr), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("error %q does not say %q", r.stderr, w)
		}
	}
	if left := leftovers(t, tmp, keep); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// snapshotDir says what each entry of dir is, to see that a refused run changed none
// of them.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		var st unix.Stat_t
		p := filepath.Join(dir, e.Name())
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		target, _ := os.Readlink(p)
		m[e.Name()] = fmt.Sprintf("ino %d mode %o rdev %d size %d mtime %d -> %q", st.Ino, st.Mode, st.Rdev, st.Size, st.Mtim.Nano(), target)
	}
	return m
}

// TestCreateIdsigOutput: create-idsig refuses, at once, with one line naming it
// (exit 3), an output that is the APK (by its own name, a hard link or a
// symlink), that is not a regular file (a device, a FIFO, a directory, a socket,
// or a symlink to one) or a dangling symlink; and leaves each untouched, with no
// temporary file beside it. It writes a new file, replaces a regular file, and
// writes through a symlink to a regular file, which stays a symlink.
func TestCreateIdsigOutput(t *testing.T) {
	testdata.RequireRoot(t) // mknod
	dir := t.TempDir()
	apk := copyFile(t, testdata.APKPath(), filepath.Join(dir, "app.apk"), 0o644)
	orig, _ := os.ReadFile(apk)
	var null unix.Stat_t
	if err := unix.Stat("/dev/null", &null); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(dir, "null")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(null.Rdev)); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	link := func(p string, make func(string, string) error, target string) string {
		t.Helper()
		if err := make(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hard := link(filepath.Join(dir, "hard.idsig"), os.Link, apk)
	symAPK := link(filepath.Join(dir, "sym.idsig"), os.Symlink, apk)
	symDev := link(filepath.Join(dir, "symnull.idsig"), os.Symlink, dev)
	dangling := link(filepath.Join(dir, "dangling.idsig"), os.Symlink, filepath.Join(dir, "gone"))

	before := snapshotDir(t, dir)
	sameAsAPK := "the same file as the apk " + apk
	for _, c := range []struct{ name, out, want string }{
		{"the APK itself", apk, sameAsAPK},
		{"a hard link to the APK", hard, sameAsAPK},
		{"a symlink to the APK", symAPK, sameAsAPK},
		{"a character device", dev, "a character device, not a regular file"},
		{"a symlink to a character device", symDev, "a character device, not a regular file"},
		{"a FIFO", fifo, "a FIFO (named pipe), not a regular file"},
		{"a directory", sub, "a directory, not a regular file"},
		{"a socket", filepath.Join(dir, "sock"), "a socket, not a regular file"},
		{"a dangling symlink", dangling, "dangling symlink to " + filepath.Join(dir, "gone")},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkBad(t, []string{"create-idsig", apk, c.out}, nil, exitInput, []string{"idsig", c.out, c.want}, "")
			if after := snapshotDir(t, dir); !maps.Equal(after, before) {
				t.Errorf("%s changed:\nbefore %v\nafter  %v", dir, before, after)
			}
		})
	}
	if got, _ := os.ReadFile(apk); !bytes.Equal(got, orig) {
		t.Fatal("the APK changed")
	}

	out := t.TempDir()
	regular := copyFile(t, testdata.IdsigPath(), filepath.Join(out, "old.idsig"), 0o644)
	target := copyFile(t, testdata.IdsigPath(), filepath.Join(out, "target.idsig"), 0o644)
	symlink := link(filepath.Join(out, "link.idsig"), os.Symlink, target)
	var targetBefore unix.Stat_t
	unix.Stat(target, &targetBefore)
	for _, p := range []string{filepath.Join(out, "new.idsig"), regular, symlink} {
		if r := runVmfs(t, "", "create-idsig", apk, p); r.code != 0 {
			t.Errorf("create-idsig into %s: exit %d: %s", p, r.code, r.stderr)
		}
		if r := runVmfs(t, "", "verify", apk, p); r.code != 0 {
			t.Errorf("verify %s: exit %d: %s", p, r.code, r.stderr)
		}
	}
	var targetAfter unix.Stat_t
	if err := unix.Stat(target, &targetAfter); err != nil || targetAfter.Ino != targetBefore.Ino {
		t.Errorf("the symlink's target was replaced, not written through: %v", err)
	}
	if got, err := os.Readlink(symlink); err != nil || got != target {
		t.Errorf("the symlink is no more: %q %v", got, err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 4 {
		t.Errorf("%d entries in %s, want 4 (no temporary file left)", len(entries), out)
	}
}
