// Package wire frames the messages of vmfs's control socket, a Unix stream
// socket: each message is a 4-byte big-endian length and that many bytes of
// JSON, and open files ride along with a message's first byte as SCM_RIGHTS, as
// Android's binder hands over ParcelFileDescriptors.
//
// It bounds what a peer can make the other side do: a message is at most
// MaxMessage bytes and carries at most MaxFiles files (a longer one is refused
// before its body is read, more files are refused and closed), a message must
// decode into the type asked for with no unknown field, every key spelled
// exactly as its field and none repeated (see strictjson), and every read and
// write has a deadline. It owns only the framing; the messages are its callers'.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/internal/strictjson"
)

const (
	MaxMessage = 64 << 10 // bytes of JSON in one message
	MaxFiles   = 16       // files attached to one message
)

// ErrTooLarge reports a message longer than MaxMessage, sent or received.
var ErrTooLarge = errors.New("message too large")

// Conn is one end of a control connection. Send may be called from many
// goroutines; Receive from one at a time.
type Conn struct {
	c *net.UnixConn
	// wmu keeps the messages of concurrent Sends whole.
	wmu sync.Mutex
}

func New(c *net.UnixConn) *Conn { return &Conn{c: c} }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// CloseWrite tells the peer no more messages come.
func (c *Conn) CloseWrite() error { return c.c.CloseWrite() }

// Peer returns the credentials of the process at the other end, as the kernel
// recorded them when it connected.
func (c *Conn) Peer() (*unix.Ucred, error) {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

// PeerGroups returns the supplementary groups of the process at the other end,
// as the kernel recorded them when it connected (SO_PEERGROUPS).
func (c *Conn) PeerGroups() ([]uint32, error) {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var groups []uint32
	var gerr error
	if err := raw.Control(func(fd uintptr) { groups, gerr = peerGroups(fd) }); err != nil {
		return nil, err
	}
	return groups, gerr
}

// peerGroups reads SO_PEERGROUPS, which x/sys has no getter for: a gid_t array
// whose size the kernel tells with ERANGE when the buffer is too small.
func peerGroups(fd uintptr) ([]uint32, error) {
	groups := make([]uint32, 64)
	for {
		size := uint32(4 * len(groups))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&groups[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && int(size/4) > len(groups):
			groups = make([]uint32, size/4)
		case errno != 0:
			return nil, os.NewSyscallError("getsockopt SO_PEERGROUPS", errno)
		default:
			return groups[:size/4], nil
		}
	}
}

// Send writes v as one message with files attached, giving up after timeout.
// The files stay the caller's: the peer gets duplicates.
func (c *Conn) Send(v any, files []*os.File, timeout time.Duration) error {
	if len(files) > MaxFiles {
		return fmt.Errorf("send: %d files, at most %d go in one message", len(files), MaxFiles)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > MaxMessage {
		return fmt.Errorf("send: %w: %d bytes, at most %d", ErrTooLarge, len(body), MaxMessage)
	}
	msg := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	msg = append(msg, body...)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	n, _, err := c.c.WriteMsgUnix(msg, oob, nil)
	if err == nil && n < len(msg) {
		_, err = c.c.Write(msg[n:])
	}
	return err
}

// Receive reads one message into v and returns the files that came with it,
// giving up after timeout (0: never, for a peer whose going away is awaited).
// On an error no file is returned: those received are closed.
func (c *Conn) Receive(v any, timeout time.Duration) ([]*os.File, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := c.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	var hdr [4]byte
	oob := make([]byte, unix.CmsgSpace(MaxFiles*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(hdr[:], oob)
	files, ferr := filesOf(oob[:oobn])
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err == nil {
		err = ferr
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = fmt.Errorf("receive: more than %d files in one message", MaxFiles)
	}
	if err == nil && n < len(hdr) {
		// Files the peer attached to a later byte are dropped by the kernel.
		_, err = io.ReadFull(c.c, hdr[n:])
	}
	if err == nil {
		err = c.body(binary.BigEndian.Uint32(hdr[:]), v)
	}
	if err != nil {
		inputfile.CloseAll(files...)
		return nil, err
	}
	return files, nil
}

// body reads size bytes of JSON into v, refusing unknown fields, keys that
// match a field only by case, repeated keys and trailing data: the message means
// one thing, whoever reads it.
func (c *Conn) body(size uint32, v any) error {
	if size > MaxMessage {
		return fmt.Errorf("receive: %w: %d bytes, at most %d", ErrTooLarge, size, MaxMessage)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(c.c, b); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("receive: malformed message: %w", err)
	}
	if dec.More() {
		return errors.New("receive: malformed message: data after the JSON value")
	}
	if err := strictjson.Keys(b, v); err != nil {
		return fmt.Errorf("receive: malformed message: %w", err)
	}
	return nil
}

// filesOf turns the SCM_RIGHTS of a message's control data into files; any
// other control message is an error, its descriptors closed all the same.
func filesOf(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("receive: control data: %w", err)
	}
	var files []*os.File
	var errs []error
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			errs = append(errs, fmt.Errorf("receive: control data: %w", err))
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd)))
		}
	}
	return files, errors.Join(errs...)
}
