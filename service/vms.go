package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/launcher"
	"vmfs/metadata"
)

// verifyTimeout bounds the pre-flight check of a client's APK, which reads it whole.
const verifyTimeout = 10 * time.Minute

// Why the service stops a VM itself; an attached client is told.
var (
	errStopped    = errors.New("stopped by vmfs stop")
	errClientGone = errors.New("its client went away")
)

// runningVM is a VM the service runs.
type runningVM struct {
	cid   int
	name  string // its payload's, or one reserved for a raw config
	owner uint32
	apk   string
	// instance is its payload's instance image, as the client named it.
	instance string
	started  time.Time
	machine  *vmfs.Machine
	stop     context.CancelCauseFunc // stops the VM, telling why
	done     chan struct{}           // closed once it ended and was cleaned up after
	result   error                   // how it ended, once done
}

func (vm *runningVM) status() VMStatus {
	st := VMStatus{Name: vm.name, CID: vm.cid, State: VMRunning, Owner: int(vm.owner), APK: vm.apk, Instance: vm.instance, Started: vm.started}
	if vm.machine != nil {
		st.Pid = vm.machine.VM.Pid()
	}
	select {
	case <-vm.done:
		st.State = VMEnded
	default:
	}
	return st
}

// vmOptions are the service's VMM options with what the client may choose.
func (s *Service) vmOptions(r *runRequest) (launcher.Options, error) {
	o := s.o.VM
	o.Console, o.Log, o.CID, o.FlatImages = "", "", 0, nil
	switch r.VMM {
	case "":
	case launcher.VMMAuto, launcher.VMMCrosvm, launcher.VMMQemu:
		o.VMM = r.VMM
	default:
		return o, requestf("vmm %q: want auto, crosvm or qemu (the binaries are the service's)", r.VMM)
	}
	switch r.Accel {
	case "":
	case "tcg", "kvm":
		o.Accel = r.Accel
	default:
		return o, requestf("accel %q: want tcg or kvm", r.Accel)
	}
	if err := s.checkSize(r.MemMiB, r.CPUs); err != nil {
		return o, err
	}
	if r.Timeout < 0 {
		return o, requestf("timeout %v: out of range", r.Timeout)
	}
	if r.CPUs > 0 {
		o.CPUs = r.CPUs
	}
	if r.MemMiB > 0 {
		o.MemMiB = r.MemMiB
	}
	return o, nil
}

// checkSize refuses a VM larger than this machine: more memory than it has,
// more vCPUs than it runs (0 leaves the VMM's default). A client may not make
// the VMM allocate what would take the host down.
func (s *Service) checkSize(memMiB uint32, cpus int) error {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return err
	}
	hostMiB := uint64(si.Totalram) * uint64(si.Unit) >> 20
	if uint64(memMiB) > hostMiB || cpus < 0 || cpus > runtime.NumCPU() {
		return requestf("memory %d MiB, %d vCPUs: this machine has %d MiB and %d CPUs", memMiB, cpus, hostMiB, runtime.NumCPU())
	}
	return nil
}

// runApp boots a payload, as `vmfs run-app` asks: the one the client sends, or
// one it added before. A payload made for the run goes when the VM ends.
func (s *Service) runApp(c *client, req *request, snt *sent) (*reply, error) {
	r := req.Run
	if r == nil {
		return nil, requestf("run-app without run options")
	}
	opts, err := s.vmOptions(r)
	if err != nil {
		return nil, err
	}
	cid, release, err := s.allocate(c, opts.CIDDir)
	if err != nil {
		return nil, err
	}
	vm := &runningVM{cid: cid, owner: c.uid, done: make(chan struct{})}
	sv, err := s.payloadFor(c, req, snt, vm)
	if err != nil {
		release()
		return nil, err
	}
	vm.name, vm.apk, vm.instance = sv.name, sv.payload.APK, sv.instance()
	opts.CID, opts.FlatImages, opts.WritableImages = cid, sv.manifest.FlatImages(), sv.manifest.WritableImages()
	end := func() { s.ended(sv); release() }
	if r.DryRun {
		defer end()
		return dryRun(sv.vmConfig, opts)
	}
	var files launcher.Inherited
	cfg, err := openForVMM(sv.vmConfig, &opts, &files, snt)
	if err != nil {
		end()
		return nil, err
	}
	return s.boot(c, vm, cfg, opts, files, r, snt, end)
}

// openForVMM is cfg and o with every file they name (kernel, initrd,
// bootloader, disks and their flat images, read-write where o.WritableImages
// says) opened here and named by its descriptor in files: the VMM, which runs
// with its client's rights, needs no right to the service's directories (its
// OS directory, its mount). The files are held by snt until the VM ends.
func openForVMM(cfg *metadata.VMConfig, o *launcher.Options, files *launcher.Inherited, snt *sent) (*metadata.VMConfig, error) {
	out := *cfg
	opened := map[string]string{}
	open := func(path string, write bool) (string, error) {
		if path == "" {
			return "", nil
		}
		if p, ok := opened[path]; ok {
			return p, nil
		}
		flag := os.O_RDONLY
		if write {
			flag = os.O_RDWR
		}
		f, err := inputfile.OpenFile(path, flag)
		if err != nil {
			return "", err
		}
		snt.hold(f)
		opened[path] = files.Path(f)
		return opened[path], nil
	}
	var err error
	if out.Kernel, err = open(cfg.Kernel, false); err != nil {
		return nil, err
	}
	if out.Initrd, err = open(cfg.Initrd, false); err != nil {
		return nil, err
	}
	if out.Bootloader, err = open(cfg.Bootloader, false); err != nil {
		return nil, err
	}
	out.Disks = slices.Clone(cfg.Disks)
	for i, d := range out.Disks {
		if len(d.Partitions) > 0 {
			continue // the VMM gets those through a composite of the mount
		}
		// A composite of the mount is read: the VMM writes through its flat image.
		if out.Disks[i].Image, err = open(d.Image, d.Writable && o.FlatImages[d.Image] == ""); err != nil {
			return nil, err
		}
	}
	flat, rw := map[string]string{}, map[string]bool{}
	for composite, image := range o.FlatImages {
		if p, ok := opened[composite]; ok {
			if flat[p], err = open(image, o.WritableImages[composite]); err != nil {
				return nil, err
			}
			rw[p] = o.WritableImages[composite]
		}
	}
	o.FlatImages, o.WritableImages = flat, rw
	return &out, nil
}

// payloadFor is the payload a run boots, made for it or found, with vm marked
// as booting from it. Its APK is verified against its idsig first, unless the
// run skips that.
func (s *Service) payloadFor(c *client, req *request, snt *sent, vm *runningVM) (*served, error) {
	r := req.Run
	verify := func(p *vmfs.Payload) error {
		if r.SkipVerify || r.DryRun {
			return nil
		}
		ctx, cancel := context.WithTimeout(s.vmCtx, verifyTimeout)
		defer cancel()
		if err := p.Verify(ctx); err != nil {
			return fmt.Errorf("pre-flight: %w (--skip-verify boots anyway)", err)
		}
		return nil
	}
	if r.Payload != "" {
		sv, err := s.claim(c, r.Payload, vm)
		if err == nil {
			if err = verify(sv.payload); err != nil {
				s.ended(sv)
			}
		}
		return sv, err
	}
	name, err := s.reserve(c, req.Name, "vm")
	if err != nil {
		return nil, err
	}
	p, err := s.prepare(req, snt)
	if err == nil {
		if err = verify(p); err != nil {
			p.CloseFiles()
		}
	}
	if err != nil {
		s.unreserve(name)
		return nil, err
	}
	sv, err := s.graft(c, name, p, false, nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sv.vm = vm
	s.mu.Unlock()
	return sv, nil
}

// claim marks vm as booting from c's payload name, added by mount.
func (s *Service) claim(c *client, name string, vm *runningVM) (*served, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.find(c, name)
	switch {
	case sv == nil:
		return nil, fmt.Errorf("%s: no payload of uid %d by that name", inputfile.Quote(name), c.uid)
	case sv.vm != nil:
		return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("%s: VM %d boots from it already", inputfile.Quote(name), sv.vm.cid))
	}
	sv.vm = vm
	return sv, nil
}

// allocate takes a CID for a VM of c's, counted against c's quota of VMs
// (maxVMsPerUser, root's unbounded: a raw run makes no payload, so the
// payloads' quota does not bound VMs); release frees both once the VM ended.
func (s *Service) allocate(c *client, cidDir string) (cid int, release func(), err error) {
	s.mu.Lock()
	n := s.vmsOf[c.uid]
	if !c.root() && n >= maxVMsPerUser {
		s.mu.Unlock()
		return 0, nil, requestf("uid %d runs %d VMs already, the most one user may", c.uid, n)
	}
	s.vmsOf[c.uid]++
	s.mu.Unlock()
	unquota := func() {
		s.mu.Lock()
		if s.vmsOf[c.uid]--; s.vmsOf[c.uid] == 0 {
			delete(s.vmsOf, c.uid)
		}
		s.mu.Unlock()
	}
	cid, releaseCID, err := launcher.AllocateCID(cidDir)
	if err != nil {
		unquota()
		return 0, nil, vmfs.WithKind(vmfs.ErrVMM, err)
	}
	return cid, func() { releaseCID(); unquota() }, nil
}

// ended lets go of sv once the VM booting from it has ended: it goes unless it
// was added by mount.
func (s *Service) ended(sv *served) {
	s.mu.Lock()
	sv.vm = nil
	gone := !sv.kept && s.payloads[sv.name] == sv
	if gone {
		delete(s.payloads, sv.name)
	}
	s.mu.Unlock()
	if gone {
		if err := s.drop(sv); err != nil {
			s.log.Error("remove payload", zap.String("name", sv.name), zap.Error(err))
		}
	}
}

func dryRun(vm *metadata.VMConfig, opts launcher.Options) (*reply, error) {
	var b bytes.Buffer
	if err := vmfs.PrintCommand(&b, vm, opts); err != nil {
		return nil, err
	}
	return &reply{Command: b.String()}, nil
}

// runConfig boots a raw VM config, as `vmfs run` asks, named as the request
// says or "run-<n>"; the name is reserved as a payload's is, until the VM ends.
// Its kernel, initrd, bootloader and disk images come open from the client;
// the VMM reaches each through this process's descriptor for it.
func (s *Service) runConfig(c *client, req *request, snt *sent) (*reply, error) {
	r := req.Run
	if r == nil || req.VM == nil {
		return nil, requestf("run without a VM config or run options")
	}
	var files launcher.Inherited
	cfg, err := s.configOfFiles(req.VM, snt, &files)
	if err != nil {
		return nil, err
	}
	if err := s.checkSize(cfg.MemoryMiB, 0); err != nil {
		return nil, err
	}
	opts, err := s.vmOptions(r)
	if err != nil {
		return nil, err
	}
	name, err := s.reserve(c, req.Name, "run")
	if err != nil {
		return nil, err
	}
	cid, release, err := s.allocate(c, opts.CIDDir)
	if err != nil {
		s.unreserve(name)
		return nil, err
	}
	opts.CID = cid
	vm := &runningVM{cid: cid, name: name, owner: c.uid, done: make(chan struct{})}
	end := func() { s.unreserve(name); release() }
	if r.DryRun {
		defer end()
		return dryRun(cfg, opts)
	}
	return s.boot(c, vm, cfg, opts, files, r, snt, end)
}

// configOfFiles is cfg with each file it names replaced by the file sent for
// it, which the VMM inherits (files). A writable disk must have been opened
// for writing: the client must not have the VMM write what it could not.
func (s *Service) configOfFiles(cfg *metadata.VMConfig, snt *sent, files *launcher.Inherited) (*metadata.VMConfig, error) {
	out := *cfg
	out.Disks = nil
	use := func(what, path string, write bool) (string, error) {
		f := snt.take(what)
		switch {
		case path == "" && f == nil:
			return "", nil
		case f == nil:
			return "", requestf("the config names a %s; send it open", what)
		case path == "":
			return "", requestf("a %s was sent that the config does not name", what)
		}
		snt.hold(f)
		u := useRead
		if write {
			u = useWrite
		}
		if err := s.check(what, f, u); err != nil {
			return "", err
		}
		return files.Path(f), nil
	}
	var err error
	if out.Kernel, err = use(fileKernel, cfg.Kernel, false); err != nil {
		return nil, err
	}
	if out.Initrd, err = use(fileInitrd, cfg.Initrd, false); err != nil {
		return nil, err
	}
	if out.Bootloader, err = use(fileBootloader, cfg.Bootloader, false); err != nil {
		return nil, err
	}
	for i, d := range cfg.Disks {
		if len(d.Partitions) > 0 {
			return nil, requestf("disk %d has partitions: vmfs run takes disk images only", i)
		}
		if d.Image, err = use(fileDisk, d.Image, d.Writable); err != nil {
			return nil, err
		}
		out.Disks = append(out.Disks, d)
	}
	if f := snt.take(fileDisk); f != nil {
		f.Close()
		return nil, requestf("more disks sent than the config names")
	}
	return &out, nil
}

// output is where one stream of a VM goes: a file the client sent, the client
// itself (attached), or nowhere.
func (s *Service) output(c *client, what, event string, r *runRequest, snt *sent, gone func()) (io.Writer, error) {
	if f := snt.take(what); f != nil {
		snt.hold(f)
		if err := s.check(what, f, useOutput); err != nil {
			return nil, err
		}
		return f, nil
	}
	if r.Detach {
		return nil, nil
	}
	return &streamer{c: c, event: event, gone: gone}, nil
}

// boot starts cfg as vm and supervises it until it ends, then runs end. A
// detached run replies once the VM runs; an attached one streams the VM's output
// to the client, ends with its outcome, and stops the VM when the client goes.
func (s *Service) boot(c *client, vm *runningVM, cfg *metadata.VMConfig, opts launcher.Options, files launcher.Inherited, r *runRequest, snt *sent, end func()) (*reply, error) {
	ctx, stop := context.WithCancelCause(s.vmCtx)
	vm.stop = stop
	gone := func() { stop(errClientGone) }
	console, err := s.output(c, fileConsole, replyConsole, r, snt, gone)
	var stderr io.Writer
	if err == nil {
		stderr, err = s.output(c, fileLog, replyStderr, r, snt, gone)
	}
	var cred *syscall.Credential
	if err == nil {
		cred, err = c.credential()
	}
	s.mu.Lock()
	if err == nil && s.closing {
		err = errShutdown
	}
	if err == nil {
		s.vms.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		stop(nil)
		end()
		return nil, err
	}
	ro := vmfs.RunOptions{VM: opts, Stderr: stderr, Timeout: r.Timeout, Credential: cred, Files: files,
		Logger: s.log.With(zap.Int("cid", vm.cid), zap.String("name", vm.name))}
	machine, err := vmfs.Start(ctx, cfg, ro, console)
	if err != nil {
		stop(nil)
		end()
		s.vms.Done()
		return nil, err
	}
	vm.machine, vm.started = machine, time.Now()
	s.mu.Lock()
	s.running[vm.cid] = vm
	s.mu.Unlock()
	kept := snt.handOver()
	go func() {
		defer s.vms.Done()
		vm.result = machine.Outcome(ctx, r.RequireVerdict)
		stop(nil)
		s.mu.Lock()
		delete(s.running, vm.cid)
		s.mu.Unlock()
		end()
		inputfile.CloseAll(kept...)
		s.log.Info("vm ended", zap.Int("cid", vm.cid), zap.NamedError("result", vm.result))
		close(vm.done)
	}()
	st := vm.status()
	if err := c.conn.Send(reply{Event: replyStarted, VM: &st}, nil, replyTimeout); err != nil && !r.Detach {
		gone()
	}
	if r.Detach {
		return &reply{VM: &st}, nil
	}
	go func() {
		// The client sends nothing more: its connection ends when it goes
		// (Ctrl-C, killed), or when this handler is done.
		var none struct{}
		c.conn.Receive(&none, 0)
		gone()
	}()
	<-vm.done
	return nil, vm.result
}

// streamChunk bounds the output carried by one reply.
const streamChunk = 16 << 10

// streamer sends what the VMM writes to an attached client, as replies of one
// event. A client that does not take them in time is taken for gone: its VM is
// stopped and the rest dropped, so that the VMM never waits on a client.
type streamer struct {
	c      *client
	event  string
	gone   func()
	failed atomic.Bool
}

func (w *streamer) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0 && !w.failed.Load(); {
		n := min(len(rest), streamChunk)
		if err := w.c.conn.Send(reply{Event: w.event, Data: rest[:n]}, nil, replyTimeout); err != nil {
			w.failed.Store(true)
			w.gone()
		}
		rest = rest[n:]
	}
	return len(p), nil
}

// stop stops the VM of c's that target names (a CID or a name, which is
// unique: see reserve), as `vmfs stop` asks, and returns once it has ended.
func (s *Service) stop(c *client, target string) (*reply, error) {
	s.mu.Lock()
	var vm *runningVM
	for _, v := range s.running {
		if (strconv.Itoa(v.cid) == target || v.name == target) && c.may(v.owner) {
			vm = v
		}
	}
	if vm == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: no VM of uid %d with that CID or name", inputfile.Quote(target), c.uid)
	}
	s.mu.Unlock()
	vm.stop(errStopped)
	t := time.NewTimer(launcher.DefaultStopGrace + replyTimeout)
	defer t.Stop()
	select {
	case <-vm.done:
	case <-t.C:
		return nil, fmt.Errorf("VM %d still running after SIGKILL", vm.cid)
	}
	st := vm.status()
	return &reply{VM: &st}, nil
}
