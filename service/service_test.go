package service

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/internal/wire"
	"vmfs/launcher"
	"vmfs/metadata"
	"vmfs/testdata"
)

// startService runs a service over the fixtures' APEXes and OS config in
// directories of the test's own, until the test ends; Serve's result comes on
// the channel.
func startService(t *testing.T) (*Service, *Client, <-chan error) {
	t.Helper()
	testdata.RequireRoot(t) // a service mounts for every user
	dir := t.TempDir()
	s, err := New(Options{
		Dir: filepath.Join(dir, "mnt"), Socket: filepath.Join(dir, "vmfs.sock"),
		ApexInfoList: testdata.APEXInfoListPath(), OSDir: testdata.OSDir(),
		VM: launcher.Options{CIDDir: filepath.Join(dir, "cids")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	c, err := Dial(ctx, s.o.Socket)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, served
}

func fixturePayload() vmfs.Spec {
	return vmfs.Spec{APK: testdata.APKPath(), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath}
}

// TestServiceAddRemove adds a payload through the socket, reads it from the
// service's mount, lists it and removes it, which the kernel sees at once.
func TestServiceAddRemove(t *testing.T) {
	s, c, _ := startService(t)
	ctx := context.Background()
	p, err := c.Add(ctx, "app", fixturePayload(), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Dir != filepath.Join(s.Dir(), "app") || p.APK != testdata.APKPath() || !p.Kept {
		t.Errorf("added %+v", p)
	}
	got, err := os.ReadFile(filepath.Join(p.Dir, "partitions", metadata.APKLabel))
	want, _ := os.ReadFile(testdata.APKPath())
	if err != nil || !bytes.HasPrefix(got, want) {
		t.Errorf("the APK partition: %v", err)
	}
	m, err := vmfs.ReadManifest(p.Dir)
	if err != nil || m.Inputs.APK != testdata.APKPath() || m.Server.Pid != os.Getpid() || m.Server.Kind != "serve" {
		t.Errorf("manifest %+v, %v", m, err)
	}
	if _, err := c.Add(ctx, "app", fixturePayload(), ""); !errors.Is(err, ErrRequest) {
		t.Errorf("a second payload named app: %v, want a bad request", err)
	}
	if st, err := c.List(ctx); err != nil || len(st.Payloads) != 1 || st.Payloads[0].Name != "app" {
		t.Errorf("list: %+v, %v", st, err)
	}
	if err := c.Remove(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after remove: %v", p.Dir, err)
	}
	if err := c.Remove(ctx, "app"); err == nil {
		t.Error("removed app twice")
	}
}

// TestServiceLifecycle: cancelling Serve removes every payload, unmounts and
// removes the socket; a second service on the same socket is refused while the
// first runs.
func TestServiceLifecycle(t *testing.T) {
	testdata.RequireRoot(t)
	dir := t.TempDir()
	o := Options{Dir: filepath.Join(dir, "mnt"), Socket: filepath.Join(dir, "vmfs.sock"), ApexInfoList: testdata.APEXInfoListPath(), OSDir: testdata.OSDir(), VM: launcher.Options{CIDDir: filepath.Join(dir, "cids")}}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	if _, err := New(o); !errors.Is(err, vmfs.ErrMount) {
		t.Errorf("a second service on the socket: %v", err)
	}
	c := &Client{Socket: o.Socket}
	for _, name := range []string{"a", "b"} {
		if _, err := c.Add(ctx, name, fixturePayload(), ""); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if m, _ := fusedisk.MountAt(s.Dir()); m != nil {
		t.Errorf("still mounted at %s: %+v", s.Dir(), m)
	}
	if _, err := os.Lstat(o.Socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left: %v", err)
	}
	if _, err := Dial(context.Background(), o.Socket); !errors.Is(err, ErrNoService) {
		t.Errorf("dial a stopped service: %v", err)
	}
}

// TestServiceRefuses sends what a client may not: each gets an error reply
// naming the problem, no path is opened for a client, and the service goes on.
func TestServiceRefuses(t *testing.T) {
	s, c, _ := startService(t)
	dial := func() *wire.Conn {
		nc, err := net.Dial("unix", s.o.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return wire.New(nc.(*net.UnixConn))
	}
	ask := func(req *request, files ...*os.File) *replyErr {
		t.Helper()
		conn := dial()
		if err := conn.Send(req, files, time.Minute); err != nil {
			t.Fatal(err)
		}
		var rep reply
		if _, err := conn.Receive(&rep, time.Minute); err != nil {
			t.Fatal(err)
		}
		return rep.Error
	}
	opath, err := unix.Open(testdata.APKPath(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	pathOnly := os.NewFile(uintptr(opath), "opath")
	defer pathOnly.Close()
	idsig, err := os.Open(testdata.IdsigPath())
	if err != nil {
		t.Fatal(err)
	}
	defer idsig.Close()
	for name, tc := range map[string]struct {
		req   *request
		files []*os.File
		want  string
	}{
		"unknown op":      {&request{Op: "format"}, nil, "unknown request"},
		"paths, no files": {&request{Op: opAdd, APK: testdata.APKPath(), Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath}, nil, "opens no path"},
		"O_PATH apk":      {&request{Op: opAdd, Files: []string{fileAPK, fileIdsig}, ConfigPath: testdata.ConfigPath}, []*os.File{pathOnly, idsig}, "not open for reading"},
		"files unnamed":   {&request{Op: opAdd}, []*os.File{idsig}, "1 files sent, 0 named"},
		"two apks":        {&request{Op: opAdd, Files: []string{fileAPK, fileAPK}}, []*os.File{idsig, idsig}, "at most 1"},
		"bad name":        {&request{Op: opAdd, Name: "../etc"}, nil, `name "../etc": want`},
		"number name":     {&request{Op: opAdd, Name: "10"}, nil, "take for a CID"},
		"client binaries": {&request{Op: opRunApp, Run: &runRequest{VMM: "/tmp/evil"}}, nil, "vmm"},
	} {
		rerr := ask(tc.req, tc.files...)
		if rerr == nil || !strings.Contains(rerr.Message, tc.want) {
			t.Errorf("%s: %+v, want an error saying %q", name, rerr, tc.want)
		}
	}
	// A file of the service's own mount would have it wait on itself.
	p, err := c.Add(context.Background(), "app", fixturePayload(), "")
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.Open(filepath.Join(p.Dir, "payload.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if rerr := ask(&request{Op: opAdd, Files: []string{fileAPK, fileIdsig}, ConfigPath: testdata.ConfigPath}, own, idsig); rerr == nil || !strings.Contains(rerr.Message, "service's own mount") {
		t.Errorf("a file of the service's mount as the APK: %+v", rerr)
	}
	// A length over the limit is refused before anything is read or allocated.
	nc, err := net.Dial("unix", s.o.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(binary.BigEndian.AppendUint32(nil, 1<<31)); err != nil {
		t.Fatal(err)
	}
	var rep reply
	if _, err := wire.New(nc.(*net.UnixConn)).Receive(&rep, time.Minute); err != nil || rep.Error == nil || !strings.Contains(rep.Error.Message, "too large") {
		t.Errorf("oversized request: %+v, %v", rep, err)
	}
	if _, err := c.List(context.Background()); err != nil {
		t.Errorf("the service after the refusals: %v", err)
	}
}

// TestServiceVerifies: a run whose APK does not match its idsig is refused
// before anything boots, whether the client sends the payload or added it by
// mount; the payload made for the run goes, the one added stays.
func TestServiceVerifies(t *testing.T) {
	_, c, _ := startService(t)
	ctx := context.Background()
	b, err := os.ReadFile(testdata.APKPath())
	if err != nil {
		t.Fatal(err)
	}
	b[300000] ^= 0xFF // inside the stored native library
	flipped := filepath.Join(t.TempDir(), "flipped.apk")
	if err := os.WriteFile(flipped, b, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := vmfs.Spec{APK: flipped, Idsig: testdata.IdsigPath(), ConfigPath: testdata.ConfigPath}
	if _, err := c.RunApp(ctx, vmfs.RunOptions{Spec: spec}, "", false); err == nil || !strings.Contains(err.Error(), "pre-flight") {
		t.Errorf("run of a flipped APK: %v, want a pre-flight failure", err)
	}
	if _, err := c.Add(ctx, "flipped", spec, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunApp(ctx, vmfs.RunOptions{Mount: "flipped"}, "", false); err == nil || !strings.Contains(err.Error(), "pre-flight") {
		t.Errorf("run of a flipped APK added by mount: %v, want a pre-flight failure", err)
	}
	st, err := c.List(ctx)
	if err != nil || len(st.Payloads) != 1 || st.Payloads[0].Name != "flipped" || len(st.VMs) != 0 {
		t.Errorf("after the refused runs: %+v, %v", st, err)
	}
}
