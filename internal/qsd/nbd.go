package qsd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The NBD protocol, as much of it as a client of one export needs: the fixed
// newstyle handshake with NBD_OPT_GO, then simple replies to READ, WRITE,
// FLUSH and DISC (NBD's doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic    = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic    = 0x0003e889045565a9
	nbdReqMagic    = 0x25609513
	nbdSimpleMagic = 0x67446698

	nbdFixedNewstyle = 1 << 0 // handshake flag, echoed by the client
	nbdNoZeroes      = 1 << 1

	nbdOptGo   = 7
	nbdRepAck  = 1
	nbdRepInfo = 3
	nbdRepErr  = 1 << 31
	nbdInfoExp = 0 // NBD_INFO_EXPORT: size and transmission flags

	nbdFlagReadOnly  = 1 << 1
	nbdFlagSendFlush = 1 << 2

	nbdRead  = 0
	nbdWrite = 1
	nbdDisc  = 2
	nbdFlush = 3
)

// maxRequest bounds one READ or WRITE: QEMU takes up to 32 MiB.
const maxRequest = 4 << 20

// nbdConn is a connection to one export, in transmission once handshake is done.
type nbdConn struct {
	c       net.Conn
	timeout time.Duration
	size    int64
	cookie  uint64
}

// replyError is an error the server replied with: the request failed, the
// connection is still good.
type replyError struct {
	op    uint16
	errno uint32
}

func (e *replyError) Error() string {
	return fmt.Sprintf("NBD request %d failed: error %d", e.op, e.errno)
}

var be = binary.BigEndian

// handshake negotiates the export name with NBD_OPT_GO.
func (n *nbdConn) handshake(name string) error {
	n.c.SetDeadline(time.Now().Add(n.timeout))
	var hello [18]byte
	if _, err := io.ReadFull(n.c, hello[:]); err != nil {
		return fmt.Errorf("NBD greeting: %w", err)
	}
	if be.Uint64(hello[0:]) != nbdMagic || be.Uint64(hello[8:]) != nbdOptMagic {
		return errors.New("NBD greeting: not a newstyle server")
	}
	if flags := be.Uint16(hello[16:]); flags&(nbdFixedNewstyle|nbdNoZeroes) != nbdFixedNewstyle|nbdNoZeroes {
		return fmt.Errorf("NBD greeting: handshake flags %#x lack fixed newstyle or no zeroes", flags)
	}
	msg := be.AppendUint32(nil, nbdFixedNewstyle|nbdNoZeroes)
	msg = be.AppendUint64(msg, nbdOptMagic)
	msg = be.AppendUint32(msg, nbdOptGo)
	msg = be.AppendUint32(msg, uint32(4+len(name)+2))
	msg = be.AppendUint32(msg, uint32(len(name)))
	msg = append(msg, name...)
	msg = be.AppendUint16(msg, 0) // no information requests: the export's comes anyway
	if _, err := n.c.Write(msg); err != nil {
		return fmt.Errorf("NBD_OPT_GO: %w", err)
	}
	flags := uint16(0)
	for {
		var hdr [20]byte
		if _, err := io.ReadFull(n.c, hdr[:]); err != nil {
			return fmt.Errorf("NBD_OPT_GO reply: %w", err)
		}
		typ, size := be.Uint32(hdr[12:]), be.Uint32(hdr[16:])
		if be.Uint64(hdr[0:]) != nbdRepMagic || be.Uint32(hdr[8:]) != nbdOptGo || size > 64<<10 {
			return errors.New("NBD_OPT_GO reply: malformed")
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(n.c, data); err != nil {
			return fmt.Errorf("NBD_OPT_GO reply: %w", err)
		}
		switch {
		case typ&nbdRepErr != 0:
			return fmt.Errorf("NBD_OPT_GO: export %q refused (%#x): %s", name, typ, data)
		case typ == nbdRepInfo && len(data) >= 12 && be.Uint16(data) == nbdInfoExp:
			n.size, flags = int64(be.Uint64(data[2:])), be.Uint16(data[10:])
		case typ == nbdRepAck:
			if flags&nbdFlagReadOnly != 0 || flags&nbdFlagSendFlush == 0 {
				return fmt.Errorf("NBD export %q: read-only or without flush (flags %#x)", name, flags)
			}
			return nil
		}
	}
}

// request sends one request and reads its reply: into p for a read, from p for
// a write.
func (n *nbdConn) request(op uint16, off int64, p []byte) error {
	n.c.SetDeadline(time.Now().Add(n.timeout))
	n.cookie++
	var hdr [28]byte
	be.PutUint32(hdr[0:], nbdReqMagic)
	be.PutUint16(hdr[6:], op)
	be.PutUint64(hdr[8:], n.cookie)
	be.PutUint64(hdr[16:], uint64(off))
	be.PutUint32(hdr[24:], uint32(len(p)))
	// One writev, the data not copied.
	msg := net.Buffers{hdr[:]}
	if op == nbdWrite {
		msg = append(msg, p)
	}
	if _, err := msg.WriteTo(n.c); err != nil {
		return fmt.Errorf("NBD request: %w", err)
	}
	var r [16]byte
	if _, err := io.ReadFull(n.c, r[:]); err != nil {
		return fmt.Errorf("NBD reply: %w", err)
	}
	if be.Uint32(r[0:]) != nbdSimpleMagic || be.Uint64(r[8:]) != n.cookie {
		return errors.New("NBD reply: malformed")
	}
	if e := be.Uint32(r[4:]); e != 0 {
		return &replyError{op: op, errno: e}
	}
	if op == nbdRead {
		if _, err := io.ReadFull(n.c, p); err != nil {
			return fmt.Errorf("NBD read reply: %w", err)
		}
	}
	return nil
}

// disconnect asks the server to end the connection (it does not reply).
func (n *nbdConn) disconnect() {
	n.c.SetDeadline(time.Now().Add(n.timeout))
	msg := make([]byte, 28)
	be.PutUint32(msg[0:], nbdReqMagic)
	be.PutUint16(msg[6:], nbdDisc)
	n.c.Write(msg)
}

// The requests serveFile takes beyond the client's, and the NBD flags it sends.
const (
	nbdOptExportName = 1
	nbdOptAbort      = 2
	nbdOptInfo       = 6
	nbdRepErrUnsup   = nbdRepErr | 1
	nbdFlagHasFlags  = 1 << 0
	nbdEINVAL        = 22
	nbdEIO           = 5
	maxServed        = 32 << 20 // the largest request QEMU sends
)

// serveFile serves f over c as an NBD export of size bytes, for the daemon:
// past f's end it reads zeros and a write grows f. It returns when c fails or
// the daemon disconnects; a file error is the daemon's error reply.
func serveFile(c net.Conn, f *os.File, size int64) {
	defer c.Close()
	hello := be.AppendUint64(nil, nbdMagic)
	hello = be.AppendUint64(hello, nbdOptMagic)
	hello = be.AppendUint16(hello, nbdFixedNewstyle|nbdNoZeroes)
	if _, err := c.Write(hello); err != nil {
		return
	}
	var cflags [4]byte
	if _, err := io.ReadFull(c, cflags[:]); err != nil {
		return
	}
	reply := func(opt, typ uint32, data []byte) error {
		msg := be.AppendUint64(nil, nbdRepMagic)
		msg = be.AppendUint32(msg, opt)
		msg = be.AppendUint32(msg, typ)
		msg = be.AppendUint32(msg, uint32(len(data)))
		_, err := c.Write(append(msg, data...))
		return err
	}
	info := be.AppendUint16(nil, nbdInfoExp)
	info = be.AppendUint64(info, uint64(size))
	info = be.AppendUint16(info, nbdFlagHasFlags|nbdFlagSendFlush)
	for go_ := false; !go_; {
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		opt, n := be.Uint32(hdr[8:]), be.Uint32(hdr[12:])
		if be.Uint64(hdr[0:]) != nbdOptMagic || n > 4096 {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return
		}
		var err error
		switch opt {
		case nbdOptGo, nbdOptInfo:
			if err = reply(opt, nbdRepInfo, info); err == nil {
				err = reply(opt, nbdRepAck, nil)
			}
			go_ = opt == nbdOptGo
		case nbdOptExportName:
			_, err = c.Write(info[2:])
			go_ = true
		case nbdOptAbort:
			reply(opt, nbdRepAck, nil)
			return
		default:
			err = reply(opt, nbdRepErrUnsup, nil)
		}
		if err != nil {
			return
		}
	}
	var buf []byte
	for {
		var req [28]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		op, cookie, off, n := be.Uint16(req[6:]), be.Uint64(req[8:]), int64(be.Uint64(req[16:])), be.Uint32(req[24:])
		if be.Uint32(req[0:]) != nbdReqMagic || n > maxServed {
			return
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		p := buf[:n]
		errno := uint32(0)
		switch op {
		case nbdRead:
			m, err := f.ReadAt(p, off)
			if err != nil && err != io.EOF {
				errno = nbdEIO
			}
			clear(p[m:])
		case nbdWrite:
			if _, err := io.ReadFull(c, p); err != nil {
				return
			}
			if _, err := f.WriteAt(p, off); err != nil {
				errno = nbdEIO
			}
		case nbdFlush:
			if unix.Fdatasync(int(f.Fd())) != nil {
				errno = nbdEIO
			}
		case nbdDisc:
			return
		default:
			errno = nbdEINVAL
		}
		var hdr [16]byte
		be.PutUint32(hdr[0:], nbdSimpleMagic)
		be.PutUint32(hdr[4:], errno)
		be.PutUint64(hdr[8:], cookie)
		msg := net.Buffers{hdr[:]}
		if op == nbdRead && errno == 0 {
			msg = append(msg, p)
		}
		if _, err := msg.WriteTo(c); err != nil {
			return
		}
	}
}
