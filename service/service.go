package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/internal/confine"
	"vmfs/internal/inputfile"
	"vmfs/internal/jsonfmt"
	"vmfs/internal/wire"
	"vmfs/launcher"
)

// Where a service lives unless told otherwise; clients look for it at DefaultSocket.
const (
	DefaultDir    = "/run/vmfs"
	DefaultSocket = "/run/vmfs.sock"
)

// Bounds on what a client can make a service wait for or hold.
const (
	requestTimeout     = 3 * time.Second  // to send its whole request once connected
	replyTimeout       = 30 * time.Second // to take one reply off the socket
	maxConnsPerUser    = 16               // open at once, for a user other than root
	maxClients         = 256              // open at once for all users but root together, and for root
	maxPayloadsPerUser = 1024             // for a user other than root
	maxVMsPerUser      = 8                // running at once, for a user other than root
	handlerGrace       = 2 * time.Second  // at shutdown, for the requests under way to end
)

// Options configure a Service.
type Options struct {
	Dir    string // the mount holding one directory per payload; "" means DefaultDir
	Socket string // the control socket; "" means DefaultSocket
	// Group, a group name or id, may use the socket too (mode 0660); "" leaves
	// it root's (0600).
	Group string
	// The service's own sources of APEXes and OS configs, as in vmfs.Spec: clients
	// send their APK and idsig, never these.
	ApexDirs     []string
	ApexInfoList string
	OSDir        string
	// VM are the VMM defaults and binaries; a client picks only the VMM, the
	// accelerator, memory and CPUs. VM.CIDDir locks the CIDs of the VMs.
	VM     launcher.Options
	Logger *zap.Logger
	// Confine has New confine this process, and the VMMs it starts, with
	// Landlock to the service's own files (see rules), for good: for a process
	// that is the service alone, as `vmfs serve`.
	Confine bool
}

// Service is vmfs as a service, as virtualizationservice is: one process and
// one FUSE mount serving many payloads, each a directory of the mount added and
// removed at run time, and the VMs that boot them. Clients talk to it over a
// Unix socket (see Client); the uid the kernel gives for a client owns what it
// creates.
type Service struct {
	o      Options
	dir    string // absolute
	dev    uint64 // its mount's device: files on it are the service's own
	fsName string
	log    *zap.Logger
	pool   *fusedisk.Pool
	forest *fusedisk.Forest
	srv    *fusedisk.Server
	ln     *net.UnixListener
	lock   *os.File // held while the service owns its socket
	// mounter changes the mount table and removes the socket and its lock,
	// which a confined process may not: once confined, through its helper.
	mounter *confine.Helper
	// vmCtx bounds every VM: Serve cancels it to stop them all.
	vmCtx    context.Context
	stopVMs  context.CancelCauseFunc
	vms      sync.WaitGroup // the VMs' supervisors
	handlers sync.WaitGroup
	// mu guards the fields below.
	mu sync.Mutex
	// payloads holds every name in use, payloads' and VMs': nil for a name being
	// set up or a raw VM's (runConfig).
	payloads map[string]*served
	running  map[int]*runningVM  // by CID
	conns    map[*wire.Conn]bool // open connections, closed at shutdown
	connsOf  map[uint32]int      // open connections by uid
	vmsOf    map[uint32]int      // VMs by uid, from their request to their end
	seq      int
	closing  bool
}

// errShutdown is why the VMs stop when the service does.
var errShutdown = errors.New("the vmfs service is stopping")

// New mounts the service's directory, takes its socket (removing one a
// killed service left) and returns once clients can connect; Serve answers
// them. Another live service on the socket is an vmfs.ErrMount error, as is a
// directory that is not empty or still holds a killed service's mount
// (`vmfs unmount --dir` recovers it).
func New(o Options) (*Service, error) {
	s := &Service{o: o, fsName: vmfs.FSName(os.Getpid()), log: o.Logger,
		payloads: map[string]*served{}, running: map[int]*runningVM{}, conns: map[*wire.Conn]bool{},
		connsOf: map[uint32]int{}, vmsOf: map[uint32]int{}, mounter: &confine.Helper{}}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.o.Dir, s.o.Socket = orDefault(o.Dir, DefaultDir), orDefault(o.Socket, DefaultSocket)
	var err error
	if s.dir, err = filepath.Abs(s.o.Dir); err != nil {
		return nil, err
	}
	if err := s.checkCIDDir(); err != nil {
		return nil, err
	}
	if s.lock, err = lockSocket(s.o.Socket); err != nil {
		return nil, err
	}
	if err := s.mount(); err != nil {
		s.unlockSocket()
		return nil, err
	}
	if s.ln, err = s.listen(); err != nil {
		s.unmount()
		s.unlockSocket()
		return nil, err
	}
	if o.Confine {
		if err := s.confine(); err != nil {
			s.ln.Close()
			return nil, errors.Join(err, s.mounter.Remove(s.o.Socket), s.unmount(), s.unlockSocket(), s.mounter.Close())
		}
	}
	s.vmCtx, s.stopVMs = context.WithCancelCause(context.Background())
	return s, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Dir is where the service's mount is: each payload is a directory in it.
func (s *Service) Dir() string { return s.dir }

// checkCIDDir refuses a CID lock directory inside the mount, where no lock file
// can be made.
func (s *Service) checkCIDDir() error {
	cids, err := filepath.Abs(orDefault(s.o.VM.CIDDir, launcher.DefaultCIDDir))
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(s.dir, cids); err == nil && filepath.IsLocal(rel) || cids == s.dir {
		return vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("cid lock directory %s is inside the service's mount %s", cids, s.dir))
	}
	return nil
}

// lockSocket takes <socket>.lock for the service's life (Service.unlockSocket
// gives it up). Holding it, a service knows no other one owns the socket, so one that
// is there was left by a killed service and may be removed.
func lockSocket(socket string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, err)
	}
	path := socket + ".lock"
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, vmfs.WithKind(vmfs.ErrMount, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				err = errors.New("another vmfs service serves there")
			}
			return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("socket %s: %w", socket, err))
		}
		// The service that held it may have removed it before letting it go:
		// a lock on a file no longer there locks no one else out.
		var held, now unix.Stat_t
		unix.Fstat(int(f.Fd()), &held)
		err = unix.Stat(path, &now)
		if err == nil && held.Dev == now.Dev && held.Ino == now.Ino {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, vmfs.WithKind(vmfs.ErrMount, &os.PathError{Op: "stat", Path: path, Err: err})
		}
	}
}

// unlockSocket removes the lock file while it still holds it, then lets it go.
func (s *Service) unlockSocket() error {
	return errors.Join(s.mounter.Remove(s.lock.Name()), s.lock.Close())
}

// mount mounts an empty forest at the service's directory, made if need be.
func (s *Service) mount() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	if _, err := vmfs.CheckMountpoint(s.dir, false); err != nil {
		return fmt.Errorf("%w (a killed service's mount: vmfs unmount --dir %s)", err, s.dir)
	}
	manifest, err := jsonfmt.Indent(&vmfs.Manifest{Schema: vmfs.ManifestSchema, Dir: s.dir, Server: vmfs.ManifestServer{Pid: os.Getpid(), Kind: "serve"}})
	if err != nil {
		return err
	}
	if s.pool, err = fusedisk.NewPool(s.log); err != nil {
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	s.forest = fusedisk.NewForest(map[string][]byte{vmfs.ManifestName: manifest})
	// Clients are other users: they read through allow_other what their own
	// directories and their sources let them. Only root may mount so directly.
	// Read-write for the payloads' state files: every other file stays
	// read-only (fusedisk.MountOptions.Writable).
	s.srv, err = fusedisk.Mount(s.dir, s.forest, fusedisk.MountOptions{FsName: s.fsName, AllowOther: os.Geteuid() == 0, Writable: true, Logger: s.log, Mounter: s.mounter})
	if err != nil {
		s.pool.Close()
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(s.dir, &st); err != nil {
		s.unmount()
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	s.dev = st.Dev
	return nil
}

// unmount ends the service's mount, in a bounded time whatever any user holds
// (see fusedisk.Server.Stop), and closes the pool once it is gone.
func (s *Service) unmount() error {
	if err := s.srv.Stop(); err != nil {
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	return s.pool.Close()
}

// listen makes the socket, removing a stale one, open to root or the group only.
func (s *Service) listen() (*net.UnixListener, error) {
	path := s.o.Socket
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("socket %s: exists and is not a socket", path))
		}
		s.log.Info("removing the socket a killed service left", zap.String("socket", path))
		os.Remove(path)
	}
	gid := -1
	if s.o.Group != "" {
		var err error
		if gid, err = lookupGroup(s.o.Group); err != nil {
			return nil, vmfs.WithKind(ErrRequest, err)
		}
	}
	// The socket is made 0600, never briefly more open: umask is the process's,
	// and nothing else runs yet.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, err)
	}
	ln.SetUnlinkOnClose(false) // Serve removes it itself, before the mount
	if gid >= 0 {
		err := os.Chown(path, -1, gid)
		if err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			ln.Close()
			os.Remove(path)
			return nil, vmfs.WithKind(vmfs.ErrMount, err)
		}
	}
	return ln, nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

// Serve answers clients until ctx is done or the service's mount is taken away.
// Then it stops taking clients, stops every VM, removes every payload,
// unmounts, and removes the socket. It returns nil when ctx ended it.
func (s *Service) Serve(ctx context.Context) error {
	s.log.Info("serving", zap.String("dir", s.dir), zap.String("socket", s.o.Socket))
	go s.accept()
	gone := make(chan struct{})
	go func() { s.srv.Wait(); close(gone) }()
	var err error
	select {
	case <-ctx.Done():
	case <-gone:
		err = vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("the service's mount at %s was taken away", s.dir))
	}
	return errors.Join(err, s.shutdown())
}

// shutdown ends the service in order: no new clients, the VMs (whose
// supervisors remove their payloads), the other payloads, the connections left,
// the mount, the socket.
func (s *Service) shutdown() error {
	s.log.Info("stopping: every VM, every payload, the mount")
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.ln.Close()
	if err := s.mounter.Remove(s.o.Socket); err != nil {
		s.log.Error("remove the socket", zap.Error(err))
	}
	s.stopVMs(errShutdown)
	s.vms.Wait()
	// The attached clients get their runs' outcomes; a client that is still
	// to send its request is cut off.
	handled := make(chan struct{})
	go func() { s.handlers.Wait(); close(handled) }()
	select {
	case <-handled:
	case <-time.After(handlerGrace):
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-handled
	}
	var errs []error
	s.mu.Lock()
	left := maps.Clone(s.payloads)
	s.mu.Unlock()
	for _, p := range left {
		if p != nil {
			errs = append(errs, s.drop(p))
		}
	}
	errs = append(errs, s.unmount(), s.unlockSocket(), s.mounter.Close())
	return errors.Join(errs...)
}

func (s *Service) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed by shutdown
		}
		conn := wire.New(c)
		cred, err := conn.Peer()
		if err == nil {
			err = s.admit(conn, cred.Uid)
		}
		if err != nil {
			go func() {
				conn.Send(reply{Event: replyError, Error: toReplyErr(err)}, nil, time.Second)
				conn.Close()
			}()
			continue
		}
		go func() {
			defer s.leave(conn, cred.Uid)
			s.handle(conn, cred)
		}()
	}
}

// admit counts conn, of the user uid, against that user's share of the
// connections, before reading anything from it: maxConnsPerUser for a user
// other than root, and maxClients for all of them together; root has maxClients
// of its own, so that no other user's connections can turn it away.
func (s *Service) admit(conn *wire.Conn, uid uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, others := s.connsOf[uid], len(s.conns)-s.connsOf[0]
	switch {
	case s.closing:
		return errShutdown
	case uid == 0 && n >= maxClients:
		return fmt.Errorf("root has %d connections open already; try again", n)
	case uid != 0 && n >= maxConnsPerUser:
		return requestf("uid %d has %d connections open already, the most one user may; try again once one ends", uid, n)
	case uid != 0 && others >= maxClients:
		return fmt.Errorf("the service serves %d clients already; try again", others)
	}
	s.connsOf[uid]++
	s.conns[conn] = true
	s.handlers.Add(1)
	return nil
}

// leave closes conn, admitted for uid, and frees its place.
func (s *Service) leave(conn *wire.Conn, uid uint32) {
	s.mu.Lock()
	delete(s.conns, conn)
	if s.connsOf[uid]--; s.connsOf[uid] == 0 {
		delete(s.connsOf, uid)
	}
	s.mu.Unlock()
	conn.Close()
	s.handlers.Done()
}

// client is the peer of a connection, as the kernel tells it (SO_PEERCRED).
type client struct {
	conn     *wire.Conn
	uid, gid uint32
	pid      int32
}

func (c *client) root() bool { return c.uid == 0 }

// credential is what c's VMs run as: c's uid, gid and groups, with no
// capabilities; nil (this process's) for root, whose VMs may do what it may.
func (c *client) credential() (*syscall.Credential, error) {
	if c.root() {
		return nil, nil
	}
	groups, err := c.conn.PeerGroups()
	if err != nil {
		return nil, fmt.Errorf("the groups of uid %d: %w", c.uid, err)
	}
	return &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: groups}, nil
}

// may reports whether c may see and act on what owner made.
func (c *client) may(owner uint32) bool { return c.root() || c.uid == owner }

// handle answers one request of the peer cred. Whatever the request, a failure
// is a reply to this client, never the service's: each handler runs on its own
// and returns. A client's text is logged quoted (inputfile.Quote).
func (s *Service) handle(conn *wire.Conn, cred *unix.Ucred) {
	c := &client{conn: conn, uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}
	log := s.log.With(zap.Uint32("uid", c.uid), zap.Int32("pid", c.pid))
	var req request
	files, err := conn.Receive(&req, requestTimeout)
	switch {
	case errors.Is(err, io.EOF):
		return // a client checking that the service answers
	case errors.Is(err, os.ErrDeadlineExceeded):
		// An idle connection holds a place of its user's: it goes early.
		err = fmt.Errorf("no whole request within %v; connection closed", requestTimeout)
	case err == nil:
		if err = req.check(); err != nil {
			inputfile.CloseAll(files...)
		}
	}
	if err != nil {
		log.Info("bad request", zap.Error(err))
		s.reply(c, nil, vmfs.WithKind(ErrRequest, err))
		return
	}
	snt, err := sortFiles(req.Files, files)
	if err != nil {
		s.reply(c, nil, err)
		return
	}
	defer snt.close()
	log.Debug("request", zap.String("op", inputfile.Quote(req.Op)), zap.String("name", inputfile.Quote(req.Name)),
		zap.String("apk", inputfile.Quote(req.APK)), zap.Strings("files", req.Files))
	var rep *reply
	switch req.Op {
	case opAdd:
		rep, err = s.add(c, &req, snt)
	case opRemove:
		err = s.remove(c, req.Name)
	case opList:
		rep, err = s.list(c)
	case opStop:
		rep, err = s.stop(c, req.Name)
	case opRunApp:
		rep, err = s.runApp(c, &req, snt)
	case opRun:
		rep, err = s.runConfig(c, &req, snt)
	default:
		err = requestf("unknown request %q", inputfile.Quote(req.Op))
	}
	if err != nil {
		log.Info("request failed", zap.String("op", req.Op), zap.Error(err))
	}
	s.reply(c, rep, err)
}

// reply sends rep as the final reply ("ok"), or err's. A final reply always
// goes: one too large for a message is sent as an error saying so.
func (s *Service) reply(c *client, rep *reply, err error) {
	if rep == nil {
		rep = &reply{}
	}
	rep.Event = replyOK
	if err != nil {
		rep = &reply{Event: replyError, Error: toReplyErr(err)}
	}
	err = c.conn.Send(rep, nil, replyTimeout)
	if errors.Is(err, wire.ErrTooLarge) {
		err = c.conn.Send(reply{Event: replyError, Error: toReplyErr(err)}, nil, replyTimeout)
	}
	if err != nil {
		s.log.Debug("reply not delivered", zap.Error(err))
	}
}

// list sends c what it may see of the service, a payload or VM a reply, so
// that no count of them can make a reply too large; the final one has the rest.
func (s *Service) list(c *client) (*reply, error) {
	st := s.status(c)
	for i := range st.Payloads {
		if err := c.conn.Send(reply{Event: replyListed, Payload: &st.Payloads[i]}, nil, replyTimeout); err != nil {
			return nil, err
		}
	}
	for i := range st.VMs {
		if err := c.conn.Send(reply{Event: replyListed, VM: &st.VMs[i]}, nil, replyTimeout); err != nil {
			return nil, err
		}
	}
	st.Payloads, st.VMs = []PayloadStatus{}, []VMStatus{}
	return &reply{Status: st}, nil
}

// status is what c may see of the service.
func (s *Service) status(c *client) *Status {
	st := &Status{Pid: os.Getpid(), Dir: s.dir, Payloads: []PayloadStatus{}, VMs: []VMStatus{}}
	ms, _ := fusedisk.Mounts()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.payloads {
		if p != nil && c.may(p.owner.UID) {
			st.Payloads = append(st.Payloads, p.status(ms))
		}
	}
	for _, vm := range s.running {
		if c.may(vm.owner) {
			st.VMs = append(st.VMs, vm.status())
		}
	}
	return st
}
