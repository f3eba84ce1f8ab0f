package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/internal/outputfile"
	"vmfs/internal/wire"
	"vmfs/metadata"
)

// ErrNoService is wrapped by the error of a client that finds no service: no
// socket, a dead one, or one this user may not use. It is of kind vmfs.ErrMount.
var ErrNoService = errors.New("no vmfs service answers")

const dialTimeout = 5 * time.Second

// setupTimeout bounds the wait for a service's answer while it sets a request
// up: reading the payload, verifying a whole APK, starting the VMM. A run after
// that is bounded by its VM, and by the client's context.
const setupTimeout = resolveTimeout + verifyTimeout + time.Minute

// Client is a client of a Service: each call is one request on a connection of
// its own. It opens the files it sends itself, with its own rights, and the
// service uses those files, never their names.
type Client struct {
	Socket string
	Logger *zap.Logger // nil: zap.NewNop()
}

// Dial returns a client of the service at socket ("" means DefaultSocket) once
// it answers there.
func Dial(ctx context.Context, socket string) (*Client, error) {
	c := &Client{Socket: orDefault(socket, DefaultSocket)}
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return c, nil
}

func (c *Client) connect(ctx context.Context) (*wire.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EACCES) {
			err = fmt.Errorf("%w at %s: %w", ErrNoService, c.Socket, err)
		}
		return nil, vmfs.WithKind(vmfs.ErrMount, err)
	}
	return wire.New(nc.(*net.UnixConn)), nil
}

func (c *Client) log() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

// do sends req with files and returns the final reply; the replies before it go
// to on. When ctx is done the connection is closed, which stops a VM the
// request runs attached, and ctx's cause is returned.
func (c *Client) do(ctx context.Context, req *request, files []*os.File, on func(*reply)) (*reply, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	failed := func(err error) error {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("the service at %s: %w", c.Socket, err))
	}
	if err := conn.Send(req, files, replyTimeout); err != nil {
		return nil, failed(err)
	}
	timeout := setupTimeout
	for {
		var rep reply
		got, err := conn.Receive(&rep, timeout)
		inputfile.CloseAll(got...) // a service sends none
		if err != nil {
			return nil, failed(err)
		}
		switch rep.Event {
		case replyOK:
			return &rep, nil
		case replyError:
			if rep.Error == nil {
				return nil, errors.New("the service failed and did not say why")
			}
			return nil, rep.Error.err()
		case replyStarted:
			timeout = 0
		}
		if on != nil {
			on(&rep)
		}
	}
}

// refuseOwnSources refuses a spec that names APEXes or OS configs: a service
// uses its own.
func refuseOwnSources(spec vmfs.Spec) error {
	if len(spec.ApexDirs) > 0 || spec.ApexInfoList != "" || spec.OSDir != "" {
		return requestf("a service uses its own APEXes and OS configs (vmfs serve --apex-dir, --apex-info-list, --os-dir)")
	}
	return nil
}

// payloadRequest fills req with spec's payload and returns the files it sends,
// opened here: the APK and idsig, the extra APKs and idsigs, and the state files
// read-write. A missing
// state file is made here first, as this user, formatted for the profile
// (vmfs.PrepareState): the service then takes every state file as one that
// exists, checks it the same way, and writes nothing to it but what the VM
// writes. created is what was made, to remove when the request fails.
func payloadRequest(req *request, spec vmfs.Spec) (_ []*os.File, _ *vmfs.CreatedState, err error) {
	if err := refuseOwnSources(spec); err != nil {
		return nil, nil, err
	}
	extras, err := spec.ExtraAPKPaths()
	if err != nil {
		return nil, nil, err
	}
	created, err := vmfs.PrepareState(spec)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	defer func() {
		if err != nil {
			inputfile.CloseAll(files...)
			created.Remove()
		}
	}()
	type input struct {
		kind, path string
		name       *string
		flag       int
	}
	ins := []input{
		{fileAPK, spec.APK, &req.APK, os.O_RDONLY}, {fileIdsig, spec.Idsig, &req.Idsig, os.O_RDONLY},
		{fileInstance, spec.Instance, &req.Instance, os.O_RDWR}, {fileStorage, spec.Storage, &req.Storage, os.O_RDWR},
	}
	req.ExtraAPKs, req.ExtraIdsigs = make([]string, len(extras)), make([]string, len(spec.ExtraIdsigs))
	for i, path := range extras {
		ins = append(ins, input{fileExtraAPK, path, &req.ExtraAPKs[i], os.O_RDONLY})
	}
	for i, path := range spec.ExtraIdsigs {
		ins = append(ins, input{fileExtraIdsig, path, &req.ExtraIdsigs[i], os.O_RDONLY})
	}
	for _, in := range ins {
		if in.path == "" {
			continue
		}
		abs, err := filepath.Abs(in.path)
		if err == nil {
			var f *os.File
			if f, err = inputfile.OpenFile(abs, in.flag); err == nil {
				files, req.Files, *in.name = append(files, f), append(req.Files, in.kind), abs
				continue
			}
		}
		return nil, nil, vmfs.WithKind(vmfs.ErrInput, &metadata.InputError{Kind: in.kind, Err: err})
	}
	req.ConfigPath, req.RandomGUIDs = spec.ConfigPath, spec.RandomGUIDs
	req.Profile, req.Debug, req.PayloadBinaryName = spec.Profile.String(), spec.Debug, spec.PayloadBinaryName
	return files, created, nil
}

// Add asks the service to serve spec's payload as name ("": the service names
// it) and, given a mountpoint (an empty directory of this user's), to expose it
// there as well. spec names the APK, the idsig and the config path: the APEXes
// and the OS config are the service's.
func (c *Client) Add(ctx context.Context, name string, spec vmfs.Spec, mountpoint string) (_ *PayloadStatus, err error) {
	req := &request{Op: opAdd, Name: name}
	files, created, err := payloadRequest(req, spec)
	if err != nil {
		return nil, err
	}
	defer inputfile.CloseAll(files...)
	defer func() {
		if err != nil {
			created.Remove()
		}
	}()
	if mountpoint != "" {
		d, err := os.OpenFile(mountpoint, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, vmfs.WithKind(vmfs.ErrMount, fmt.Errorf("mountpoint %s: %w", mountpoint, errors.Unwrap(err)))
		}
		defer d.Close()
		files, req.Files = append(files, d), append(req.Files, fileMountpoint)
	}
	rep, err := c.do(ctx, req, files, nil)
	if err != nil {
		return nil, err
	}
	return rep.Payload, nil
}

// Remove asks the service to stop serving a payload of this user's, named or
// exposed at target.
func (c *Client) Remove(ctx context.Context, target string) error {
	if filepath.IsAbs(target) || filepath.Base(target) != target {
		target, _ = filepath.Abs(target)
	}
	_, err := c.do(ctx, &request{Op: opRemove, Name: target}, nil, nil)
	return err
}

// List is what the service shows this user: its own payloads and VMs, or all
// of them to root.
func (c *Client) List(ctx context.Context) (*Status, error) {
	var listed Status
	rep, err := c.do(ctx, &request{Op: opList}, nil, func(r *reply) {
		if r.Event != replyListed {
			return
		}
		if r.Payload != nil {
			listed.Payloads = append(listed.Payloads, *r.Payload)
		}
		if r.VM != nil {
			listed.VMs = append(listed.VMs, *r.VM)
		}
	})
	if err != nil {
		return nil, err
	}
	if rep.Status == nil {
		return nil, errors.New("the service listed nothing")
	}
	st := rep.Status
	st.Payloads, st.VMs = append(st.Payloads, listed.Payloads...), append(st.VMs, listed.VMs...)
	return st, nil
}

// Stop stops a VM of this user's, by CID or name, and returns once it ended.
func (c *Client) Stop(ctx context.Context, target string) (*VMStatus, error) {
	rep, err := c.do(ctx, &request{Op: opStop, Name: target}, nil, nil)
	if err != nil {
		return nil, err
	}
	return rep.VM, nil
}

// RunApp asks the service to boot o.Spec's payload as name ("": the service
// names it), or the payload o.Mount names, as RunApp does (the state files it
// names are made here when missing: see PrepareState). Detached, it returns
// once the VM runs; else the console and the VMM's messages come to o.Stdout and
// o.Stderr (or the files o.Console and o.VM.Log, which are opened here), it
// returns how the run went, and ctx's end stops the VM. The VMM binaries are the
// service's; o.VM names only the VMM, the accelerator, memory and CPUs.
func (c *Client) RunApp(ctx context.Context, o vmfs.RunOptions, name string, detach bool) (*VMStatus, error) {
	req := &request{Op: opRunApp, Name: name, Run: runRequestOf(o, detach)}
	req.Run.Payload = o.Mount
	if o.Mount != "" {
		return c.run(ctx, req, nil, o)
	}
	files, created, err := payloadRequest(req, o.Spec)
	if err != nil {
		return nil, err
	}
	vm, err := c.run(ctx, req, files, o)
	if vm == nil && err != nil {
		created.Remove() // made for a VM that never started
	}
	return vm, err
}

// RunVM asks the service to boot the VM config at path, as `vm run` does: the
// kernel, initrd, bootloader and disk images it names are opened here (a
// writable disk for writing) and sent. See RunApp for the rest.
func (c *Client) RunVM(ctx context.Context, path string, o vmfs.RunOptions, detach bool) (*VMStatus, error) {
	cfg, err := metadata.LoadVMConfig(path)
	if err != nil {
		return nil, vmfs.WithKind(vmfs.ErrInput, err)
	}
	req := &request{Op: opRun, VM: cfg, Run: runRequestOf(o, detach)}
	var files []*os.File
	open := func(what, file string, write bool) error {
		if file == "" {
			return nil
		}
		f, err := inputfile.Open(file)
		if err == nil && write {
			f.Close()
			f, err = os.OpenFile(file, os.O_RDWR|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("vm config %s: %s: %w", path, what, err))
		}
		files, req.Files = append(files, f), append(req.Files, what)
		return nil
	}
	err = errors.Join(open(fileKernel, cfg.Kernel, false), open(fileInitrd, cfg.Initrd, false), open(fileBootloader, cfg.Bootloader, false))
	for i, d := range cfg.Disks {
		if err == nil && len(d.Partitions) > 0 {
			err = vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("vm config %s: disk %d has partitions: vmfs run takes disk images only", path, i))
		}
		if err == nil {
			err = open(fileDisk, d.Image, d.Writable)
		}
	}
	if err != nil {
		inputfile.CloseAll(files...)
		return nil, err
	}
	return c.run(ctx, req, files, o)
}

func runRequestOf(o vmfs.RunOptions, detach bool) *runRequest {
	return &runRequest{
		Detach: detach, DryRun: o.DryRun != nil, SkipVerify: o.SkipVerify, RequireVerdict: o.RequireVerdict, Timeout: o.Timeout,
		VMM: o.VM.VMM, Accel: o.VM.Accel, MemMiB: o.VM.MemMiB, CPUs: o.VM.CPUs,
	}
}

// run sends a run request with the console and log files o names, and streams
// the VM's output to o's writers.
func (c *Client) run(ctx context.Context, req *request, files []*os.File, o vmfs.RunOptions) (*VMStatus, error) {
	defer func() { inputfile.CloseAll(files...) }()
	if o.VM.Crosvm != "" || o.VM.Qemu != "" {
		return nil, requestf("a service runs its own VMM binaries (vmfs serve --crosvm, --qemu)")
	}
	for _, out := range []struct{ what, path string }{{fileConsole, o.Console}, {fileLog, o.VM.Log}} {
		if out.path == "" {
			continue
		}
		f, err := outputfile.Open(out.path)
		if err != nil {
			return nil, vmfs.WithKind(vmfs.ErrInput, fmt.Errorf("%s %w", out.what, err))
		}
		files, req.Files = append(files, f), append(req.Files, out.what)
	}
	stdout, stderr := orDiscard(o.Stdout), orDiscard(o.Stderr)
	var started *VMStatus
	rep, err := c.do(ctx, req, files, func(r *reply) {
		switch r.Event {
		case replyStarted:
			started = r.VM
			c.log().Info("vm started", zap.String("name", r.VM.Name), zap.Int("cid", r.VM.CID), zap.Int("pid", r.VM.Pid))
		case replyConsole:
			stdout.Write(r.Data)
		case replyStderr:
			stderr.Write(r.Data)
		}
	})
	if err != nil {
		return started, err
	}
	if o.DryRun != nil {
		_, err = io.WriteString(o.DryRun, rep.Command)
	}
	if rep.VM != nil {
		started = rep.VM
	}
	return started, err
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
