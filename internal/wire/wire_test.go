package wire

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/testdata"
)

// pair is a connected pair of Conns over a real socketpair.
func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *Conn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return New(c.(*net.UnixConn))
	}
	return conn(fds[0]), conn(fds[1])
}

type msg struct {
	Op   string `json:"op"`
	Name string `json:"name,omitempty"`
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestRoundTrip: a message and its files arrive whole; the received files are
// the same files, and the peer's credentials are this process's.
func TestRoundTrip(t *testing.T) {
	a, b := pair(t)
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.Send(msg{Op: "add", Name: strings.Repeat("x", MaxMessage-40)}, []*os.File{f, f}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var got msg
	files, err := b.Receive(&got, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer inputfile.CloseAll(files...)
	var want, have unix.Stat_t
	unix.Fstat(int(f.Fd()), &want)
	if len(files) != 2 || unix.Fstat(int(files[1].Fd()), &have) != nil || have.Ino != want.Ino || got.Op != "add" {
		t.Errorf("received %q with %d files", got.Op, len(files))
	}
	if fl, _ := unix.FcntlInt(files[0].Fd(), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Error("a received file would leak into children: no FD_CLOEXEC")
	}
	cred, err := b.Peer()
	if err != nil || int(cred.Uid) != os.Getuid() || int(cred.Pid) != os.Getpid() {
		t.Errorf("peer %+v, %v", cred, err)
	}
}

// TestRefused: what a peer may not send is refused with an error, closing any
// file it sent, and never allocated for: a length over the limit, too many
// files, an unknown field, a key that names a field only by its case, a key
// twice, trailing data, a message that never comes.
func TestRefused(t *testing.T) {
	// raw sends a length, body and files as given; length 0 means the body's.
	raw := func(c *Conn, body []byte, length uint32, fds ...int) {
		t.Helper()
		if length == 0 {
			length = uint32(len(body))
		}
		b := binary.BigEndian.AppendUint32(nil, length)
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if _, _, err := c.c.WriteMsgUnix(append(b, body...), oob, nil); err != nil {
			t.Fatal(err)
		}
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	many := make([]int, MaxFiles+1)
	for i := range many {
		many[i] = int(null.Fd())
	}
	for name, tc := range map[string]struct {
		send func(c *Conn)
		want string
	}{
		"too large":     {func(c *Conn) { raw(c, nil, 1<<30) }, "too large"},
		"too many":      {func(c *Conn) { raw(c, []byte(`{"op":"x"}`), 0, many...) }, "more than"},
		"unknown field": {func(c *Conn) { raw(c, []byte(`{"op":"x","path":"/etc/shadow"}`), 0, int(null.Fd())) }, "unknown field"},
		"trailing":      {func(c *Conn) { raw(c, []byte(`{"op":"x"}{}`), 0) }, "after the JSON"},
		"key by case":   {func(c *Conn) { raw(c, []byte(`{"OP":"x"}`), 0, int(null.Fd())) }, `unknown field "OP"`},
		"repeated key":  {func(c *Conn) { raw(c, []byte(`{"op":"list","op":"stop"}`), 0) }, `duplicate key "op"`},
		"silent":        {func(c *Conn) {}, "timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := pair(t)
			before := openFDs(t)
			tc.send(a)
			var m msg
			files, err := b.Receive(&m, 100*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tc.want) || files != nil {
				t.Errorf("received %d files, error %v; want one saying %q", len(files), err, tc.want)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d descriptors open after the refusal, %d before", after, before)
			}
		})
	}
	a, _ := pair(t)
	if err := a.Send(msg{Name: strings.Repeat("x", MaxMessage)}, nil, time.Minute); !errors.Is(err, ErrTooLarge) {
		t.Errorf("sending an oversized message: %v", err)
	}
}

// peerDialEnv, set, makes the test binary dial the socket it names and wait
// for the peer to close (TestPeerGroups runs it under other groups).
const peerDialEnv = "VMFS_WIRE_TEST_DIAL"

func TestMain(m *testing.M) {
	if sock := os.Getenv(peerDialEnv); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(1)
		}
		c.Read(make([]byte, 1))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPeerGroups: the groups of a peer running with supplementary groups set by
// setpriv, gids with zero bytes among them, are read whole.
func TestPeerGroups(t *testing.T) {
	testdata.RequireRoot(t)
	setpriv := testdata.RequireTool(t, "setpriv")
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{4, 256, 65536, 4000000000}
	cmd := exec.Command(setpriv, "--groups=4,256,65536,4000000000", self)
	cmd.Env = append(os.Environ(), peerDialEnv+"="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	conn := New(c)
	defer conn.Close()
	got, err := conn.PeerGroups()
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("peer groups %v, %v; want %v", got, err, want)
	}
}
