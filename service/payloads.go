package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/fusedisk"
	"vmfs/internal/inputfile"
	"vmfs/metadata"
)

// resolveTimeout bounds the reading of a client's payload: its files may sit
// on a stuck filesystem.
const resolveTimeout = time.Minute

// served is a payload the service serves: a directory of its mount, which only
// its owner (and root) may enter.
type served struct {
	name, dir string
	owner     fusedisk.Owner
	payload   *vmfs.Payload
	manifest  *vmfs.Manifest
	vmConfig  *metadata.VMConfig // to launch from dir
	tree      *vmfs.Tree         // its files: retired when it goes (sources, state files)
	kept      bool               // added by mount: it stays when a VM booting it ends
	exposed   *fusedisk.Exposed  // its mount at a directory of the client's, or nil
	added     time.Time
	vm        *runningVM // the VM that boots from it; guarded by Service.mu
}

// status is how p is, its mountpoint as the mounts ms tell.
func (p *served) status(ms []fusedisk.MountInfo) PayloadStatus {
	return PayloadStatus{Name: p.name, Dir: p.dir, Owner: int(p.owner.UID), APK: p.payload.APK, Instance: p.instance(), Mountpoint: p.mountpoint(ms), Kept: p.kept, Added: p.added}
}

// instance is p's instance image as its client named it, or "".
func (p *served) instance() string {
	for _, st := range p.payload.State {
		if st.Label == metadata.InstanceLabel {
			return st.Name
		}
	}
	return ""
}

// mountpoint is where p is exposed now, as the mounts ms tell, or "".
func (p *served) mountpoint(ms []fusedisk.MountInfo) string {
	if p.exposed == nil {
		return ""
	}
	return p.exposed.Point(ms)
}

// nameRE is what a payload or VM may be called: a directory name, never
// hidden, that needs no quoting.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// reserve claims name for a payload or a raw VM of c, or makes one up from
// prefix. Payloads and VMs share the names: one names one thing of one user
// (stop, unmount and run-app --mount act by name).
func (s *Service) reserve(c *client, name, prefix string) (string, error) {
	if name != "" && !nameRE.MatchString(name) {
		return "", requestf("name %q: want 1 to 64 letters, digits, '.', '_' or '-', not starting with a '.', '_' or '-'", inputfile.Quote(name))
	}
	if _, err := strconv.Atoi(name); err == nil {
		return "", requestf("name %q: a number, which vmfs stop would take for a CID", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return "", errShutdown
	}
	if !c.root() {
		n := 0
		for _, p := range s.payloads {
			if p != nil && p.owner.UID == c.uid {
				n++
			}
		}
		if n >= maxPayloadsPerUser {
			return "", requestf("uid %d serves %d payloads already, the most one user may", c.uid, n)
		}
	}
	for name == "" {
		s.seq++
		if _, taken := s.payloads[fmt.Sprintf("%s-%d", prefix, s.seq)]; !taken {
			name = fmt.Sprintf("%s-%d", prefix, s.seq)
		}
	}
	if _, taken := s.payloads[name]; taken {
		return "", requestf("name %q is taken (by a payload or VM of this service)", name)
	}
	s.payloads[name] = nil
	return name, nil
}

// unreserve frees a name claimed for a payload that did not come to be, or for
// a raw VM that ended.
func (s *Service) unreserve(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.payloads[name] == nil {
		delete(s.payloads, name)
	}
}

// prepare resolves the payload a request sends: its APK and idsig, and its state
// files, come open from the client, the APEXes and the OS config from the
// service's own sources. The payload holds the files from then on (Spec.Files).
func (s *Service) prepare(req *request, snt *sent) (*vmfs.Payload, error) {
	fs := &vmfs.Files{APK: snt.take(fileAPK), Idsig: snt.take(fileIdsig),
		Instance: snt.take(fileInstance), Storage: snt.take(fileStorage),
		ExtraAPKs: snt.takeAll(fileExtraAPK), ExtraIdsigs: snt.takeAll(fileExtraIdsig)}
	closeAll := func() {
		inputfile.CloseAll(fs.APK, fs.Idsig, fs.Instance, fs.Storage)
		inputfile.CloseAll(fs.ExtraAPKs...)
		inputfile.CloseAll(fs.ExtraIdsigs...)
	}
	if fs.APK == nil || fs.Idsig == nil {
		closeAll()
		return nil, requestf("send the APK and the idsig open: a service opens no path a client names")
	}
	prof, err := metadata.ParseProfile(orDefault(req.Profile, metadata.Android12.String()))
	if err != nil {
		closeAll()
		return nil, requestf("profile: %v", err)
	}
	if len(fs.ExtraAPKs) != len(req.ExtraAPKs) || len(fs.ExtraIdsigs) != len(req.ExtraIdsigs) {
		closeAll()
		return nil, requestf("%d extra APKs and %d extra idsigs sent, %d and %d named", len(fs.ExtraAPKs), len(fs.ExtraIdsigs), len(req.ExtraAPKs), len(req.ExtraIdsigs))
	}
	// Each file named must come open, and each file sent be named.
	type file struct {
		what, name string
		f          *os.File
		u          use
	}
	files := []file{
		{fileAPK, req.APK, fs.APK, useRead}, {fileIdsig, req.Idsig, fs.Idsig, useRead},
		{fileInstance, req.Instance, fs.Instance, useWrite}, {fileStorage, req.Storage, fs.Storage, useWrite},
	}
	for i, f := range fs.ExtraAPKs {
		files = append(files, file{fileExtraAPK, req.ExtraAPKs[i], f, useRead})
	}
	for i, f := range fs.ExtraIdsigs {
		files = append(files, file{fileExtraIdsig, req.ExtraIdsigs[i], f, useRead})
	}
	for _, f := range files {
		switch {
		case f.f == nil && f.name != "":
			err = errors.Join(err, requestf("%s: named but not sent open: a service opens no path a client names", named(f.what, f.name)))
		case f.f != nil && f.name == "" && f.what != fileAPK && f.what != fileIdsig && f.what != fileExtraAPK && f.what != fileExtraIdsig:
			err = errors.Join(err, requestf("%s: sent but not named", f.what))
		case f.f != nil:
			err = errors.Join(err, s.check(named(f.what, f.name), f.f, f.u))
		}
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	var extraAPKs []string // else the payload config names them
	if req.PayloadBinaryName != "" {
		extraAPKs = req.ExtraAPKs
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	p, err := vmfs.Resolve(ctx, vmfs.Spec{
		Profile: prof, APK: req.APK, Idsig: req.Idsig, ConfigPath: req.ConfigPath, PayloadBinaryName: req.PayloadBinaryName,
		ExtraAPKs: extraAPKs, ExtraIdsigs: req.ExtraIdsigs, Debug: req.Debug, RandomGUIDs: req.RandomGUIDs,
		Instance: req.Instance, Storage: req.Storage,
		ApexDirs: s.o.ApexDirs, ApexInfoList: s.o.ApexInfoList, OSDir: s.o.OSDir,
		Files: fs,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	return p, nil
}

// named is what a file sent is, with the client's name for it when it gave one.
func named(what, name string) string {
	if name == "" {
		return what
	}
	return what + " " + inputfile.Quote(name)
}

// graft serves p as the reserved name, c's alone, and exposes it at the
// directory mp as well when given. On failure the name is freed and p's files
// closed.
func (s *Service) graft(c *client, name string, p *vmfs.Payload, kept bool, mp *os.File) (*served, error) {
	sv, err := s.makeServed(c, name, p, kept)
	if err == nil && mp != nil {
		if sv.exposed, err = s.bind(sv.dir, mp, c); err != nil {
			s.forest.Remove(name)
			sv.tree.Retire()
		}
	}
	inputfile.CloseAll(mp)
	if err != nil {
		p.CloseFiles()
		s.unreserve(name)
		return nil, err
	}
	s.mu.Lock()
	s.payloads[name] = sv
	s.mu.Unlock()
	return sv, nil
}

// makeServed builds p's tree and adds it to the forest as name.
func (s *Service) makeServed(c *client, name string, p *vmfs.Payload, kept bool) (*served, error) {
	dir := filepath.Join(s.dir, name)
	sv := &served{name: name, dir: dir, owner: fusedisk.Owner{UID: c.uid, GID: c.gid}, payload: p, kept: kept, added: time.Now()}
	// The engines of its state files run as the client, as its VMM does.
	cred, err := c.credential()
	if err != nil {
		return nil, err
	}
	// No passthrough, though the descriptors are open read-only: the kernel
	// opens a passed-through file again at each open of its node, with the
	// credentials of the process that handed it over, this one, whose Landlock
	// rules grant no client's file; every such open would fail with EIO. And a
	// service's guard is what keeps a file one client changes from reaching the
	// VMs of the others that share it (the Pool).
	t, err := vmfs.NewTree(p, dir, s.pool, vmfs.TreeOptions{Kind: "serve", Owner: &sv.owner, NoPassthrough: true, Logger: s.log, Credential: cred})
	if err != nil {
		return nil, err
	}
	sv.manifest, sv.vmConfig, sv.tree = t.Manifest, t.VMConfig, t
	if !s.forest.Add(context.Background(), name, t.Root) {
		t.Close()
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("payload name %q is in the mount already", name))
	}
	return sv, nil
}

// bind exposes the payload directory dir at mp, a directory the client opened,
// and returns that mount. The client must own the directory (root any): the
// service mounts on exactly the directory opened, never on a path.
func (s *Service) bind(dir string, mp *os.File, c *client) (*fusedisk.Exposed, error) {
	if os.Geteuid() != 0 {
		return nil, vmfs.WithKind(vmfs.ErrMount, errors.New("mountpoint: only a service running as root can expose a payload at one"))
	}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", mp.Fd()))
	if err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint: %w", err))
	}
	var st, ours unix.Stat_t
	if err := unix.Fstat(int(mp.Fd()), &st); err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: %w", path, err))
	}
	if err := unix.Stat(s.dir, &ours); err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: not a directory", path))
	case !c.may(st.Uid):
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: owned by uid %d, not by the client", path, st.Uid))
	case st.Dev == ours.Dev:
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: inside the service's own mount", path))
	}
	if m, _ := fusedisk.MountAt(path); m != nil && m.FSType == fusedisk.FSType {
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: already a vmfs mount", path))
	}
	if names, err := mp.Readdirnames(1); len(names) > 0 || err != nil && !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("not empty")
		}
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: %w", path, err))
	}
	e, err := fusedisk.Expose(dir, mp, s.mounter)
	if err != nil {
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: %w", path, err))
	}
	return e, nil
}

// add serves the payload a client sends, as `vmfs mount` asks.
func (s *Service) add(c *client, req *request, snt *sent) (*reply, error) {
	name, err := s.reserve(c, req.Name, "payload")
	if err != nil {
		return nil, err
	}
	p, err := s.prepare(req, snt)
	if err != nil {
		s.unreserve(name)
		return nil, err
	}
	sv, err := s.graft(c, name, p, true, snt.take(fileMountpoint))
	if err != nil {
		return nil, err
	}
	ms, _ := fusedisk.Mounts()
	st := sv.status(ms)
	return &reply{Payload: &st}, nil
}

// find returns the payload named target, or exposed at target now, if c may
// see it. Preconditions: s.mu is held.
func (s *Service) find(c *client, target string) *served {
	var ms []fusedisk.MountInfo
	if strings.Contains(target, "/") { // a name never does
		ms, _ = fusedisk.Mounts()
	}
	for _, p := range s.payloads {
		if p != nil && (p.name == target || ms != nil && p.mountpoint(ms) == target) && c.may(p.owner.UID) {
			return p
		}
	}
	return nil
}

// remove stops serving the payload target names for c, as `vmfs unmount` asks.
// A payload a VM boots from stays until the VM ends.
func (s *Service) remove(c *client, target string) error {
	s.mu.Lock()
	p := s.find(c, target)
	switch {
	case p == nil:
		s.mu.Unlock()
		return fmt.Errorf("%s: no payload of uid %d by that name or mountpoint", inputfile.Quote(target), c.uid)
	case p.vm != nil:
		s.mu.Unlock()
		return vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("%s: VM %d boots from it; vmfs stop %d first", inputfile.Quote(target), p.vm.cid, p.vm.cid))
	}
	delete(s.payloads, p.name)
	s.mu.Unlock()
	if err := s.drop(p); err != nil {
		s.mu.Lock()
		s.payloads[p.name] = p
		s.mu.Unlock()
		return err
	}
	return nil
}

// drop takes p, no longer among the payloads, out of the mount: its mountpoint
// first (a mount covering it refuses, and p stays), then its directory; its
// sources close once no file of it is open, its state files at once (synced and
// unlocked: see vmfs.Tree.Retire).
func (s *Service) drop(p *served) error {
	if p.exposed != nil {
		if err := p.exposed.Unmount(); err != nil && !errors.Is(err, fusedisk.ErrNotMounted) {
			return vmfs.WithKind(vmfs.ErrMount, err)
		}
		p.exposed = nil
	}
	s.forest.Remove(p.name)
	if err := p.tree.Retire(); err != nil {
		s.log.Error("payload's state files", zap.String("name", p.name), zap.Error(err))
	}
	p.payload.CloseFiles()
	return nil
}
