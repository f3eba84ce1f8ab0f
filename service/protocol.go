package service

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/launcher"
	"vmfs/metadata"
)

// The control socket's messages, framed by internal/wire. A client sends one
// request per connection, with the files it opened itself; the service answers
// with replies, the last of which is final ("ok" or "error"). An attached run's
// replies carry the VM's output until then.

// Requests.
const (
	opAdd    = "add"     // serve a payload
	opRemove = "remove"  // stop serving one
	opList   = "list"    // the payloads and VMs the client may see
	opStop   = "stop"    // stop a VM
	opRunApp = "run-app" // boot a payload
	opRun    = "run"     // boot a raw VM config
)

// What a file sent with a request is (request.Files).
const (
	fileAPK        = "apk"
	fileIdsig      = "idsig"
	fileMountpoint = "mountpoint" // the directory to expose a payload at
	fileConsole    = "console"    // where the guest console goes
	fileLog        = "log"        // where the VMM's own messages go
	fileKernel     = "kernel"
	fileInitrd     = "initrd"
	fileBootloader = "bootloader"
	fileDisk       = "disk" // a raw config's disks, in order
	// A payload's state files, open read-write (made by the client when
	// missing, as itself).
	fileInstance = "instance"
	fileStorage  = "storage"
	// Extra APKs and their idsigs, in order, open for reading.
	fileExtraAPK   = "extra-apk"
	fileExtraIdsig = "extra-idsig"
)

// request is what a client asks. It names no file for the service to open:
// files come open, and Files says what each one is.
type request struct {
	Op    string   `json:"op"`
	Files []string `json:"files,omitempty"`
	// Name is the payload or VM to make ("" lets the service name it) for add,
	// run-app and run, and what to act on for remove (a name or a mountpoint)
	// and stop (a CID or a name).
	Name string `json:"name,omitempty"`
	// APK and Idsig are the client's names for the files it sent, for people.
	APK         string `json:"apk,omitempty"`
	Idsig       string `json:"idsig,omitempty"`
	ConfigPath  string `json:"config_path,omitempty"`
	RandomGUIDs bool   `json:"random_guids,omitempty"`
	// Profile, Debug and PayloadBinaryName are as vmfs.Spec's ("" is android12).
	Profile           string `json:"profile,omitempty"`
	Debug             string `json:"debug,omitempty"`
	PayloadBinaryName string `json:"payload_binary_name,omitempty"`
	// Instance and Storage are the client's names for the state files it sent,
	// for people. (An instance ID file stays the client's: it makes or checks it,
	// and no VMM is given it.)
	Instance string `json:"instance,omitempty"`
	Storage  string `json:"storage,omitempty"`
	// ExtraAPKs and ExtraIdsigs are the client's names for the extra APKs and
	// idsigs it sent, in order.
	ExtraAPKs   []string    `json:"extra_apks,omitempty"`
	ExtraIdsigs []string    `json:"extra_idsigs,omitempty"`
	Run         *runRequest `json:"run,omitempty"`
	// VM is a raw config to run; its kernel, initrd, bootloader and disk images
	// are the files sent, in that order, and the paths in it only name them.
	VM *metadata.VMConfig `json:"vm,omitempty"`
}

// maxText bounds each name a request gives for people (APK, idsig, config
// path, state files) to a path's (PATH_MAX), so that what a service shows of a payload
// always fits in a reply.
const maxText = 4096

// check refuses a request whose names for people are longer than maxText.
func (r *request) check() error {
	texts := []struct{ what, text string }{
		{"apk", r.APK}, {"idsig", r.Idsig}, {"config path", r.ConfigPath}, {"payload binary name", r.PayloadBinaryName},
		{"instance", r.Instance}, {"storage", r.Storage},
	}
	for _, a := range r.ExtraAPKs {
		texts = append(texts, struct{ what, text string }{"extra apk", a})
	}
	for _, a := range r.ExtraIdsigs {
		texts = append(texts, struct{ what, text string }{"extra idsig", a})
	}
	for _, f := range texts {
		if len(f.text) > maxText {
			return requestf("%s name %s: %d bytes, at most %d", f.what, inputfile.Quote(f.text), len(f.text), maxText)
		}
	}
	return nil
}

// runRequest says how to run a VM, in run-app's flags.
type runRequest struct {
	Payload        string        `json:"payload,omitempty"` // boot this payload (added by mount) instead of files sent
	Detach         bool          `json:"detach,omitempty"`  // reply once the VM runs; it outlives the connection
	DryRun         bool          `json:"dry_run,omitempty"` // reply with the VMM's command line instead
	SkipVerify     bool          `json:"skip_verify,omitempty"`
	RequireVerdict bool          `json:"require_verdict,omitempty"`
	Timeout        time.Duration `json:"timeout,omitempty"`
	VMM            string        `json:"vmm,omitempty"`
	Accel          string        `json:"accel,omitempty"`
	MemMiB         uint32        `json:"mem_mib,omitempty"`
	CPUs           int           `json:"cpus,omitempty"`
}

// Replies.
const (
	replyOK      = "ok"      // final: done
	replyError   = "error"   // final: failed
	replyStarted = "started" // the VM runs
	replyConsole = "console" // guest console output
	replyStderr  = "stderr"  // the VMM's own messages
	replyListed  = "listed"  // list: a payload or a VM (the final reply has the service's pid and dir)
)

type reply struct {
	Event   string         `json:"event"`
	Error   *replyErr      `json:"error,omitempty"`
	Payload *PayloadStatus `json:"payload,omitempty"`
	VM      *VMStatus      `json:"vm,omitempty"`
	Status  *Status        `json:"status,omitempty"`
	Data    []byte         `json:"data,omitempty"`
	Command string         `json:"command,omitempty"`
}

// replyErr carries an error's message and kind, so that a client fails as the
// embedded command would (the same exit code).
type replyErr struct {
	Kind    string `json:"kind,omitempty"` // "input", "mount", "vmm", "request", "exit", or "" for any other failure
	Message string `json:"message"`
	VMM     string `json:"vmm,omitempty"` // exit: the VMM binary, its status or the signal that killed it
	Code    int    `json:"code,omitempty"`
	Signal  int    `json:"signal,omitempty"`
}

// ErrRequest is a request the service refuses as asked: a bad name, a flag a
// client may not set, a file missing from it.
var ErrRequest = errors.New("bad request")

// requestf is an ErrRequest error.
func requestf(format string, args ...any) error {
	return vmfs.WithKind(ErrRequest, fmt.Errorf(format, args...))
}

var errKinds = []struct {
	kind string
	err  error
}{{"input", vmfs.ErrInput}, {"mount", vmfs.ErrMount}, {"vmm", vmfs.ErrVMM}, {"request", ErrRequest}}

// maxErrorText bounds the message of an error reply, which may echo a
// client's input: even escaped for JSON, it fits in a message with room left.
const maxErrorText = 4 << 10

func toReplyErr(err error) *replyErr {
	r := &replyErr{Message: inputfile.Cut(err.Error(), maxErrorText)}
	var ee *launcher.ExitError
	if errors.As(err, &ee) {
		r.Kind, r.VMM, r.Code, r.Signal = "exit", ee.Path, ee.Code, int(ee.Signal)
		return r
	}
	for _, k := range errKinds {
		if errors.Is(err, k.err) {
			r.Kind = k.kind
			break
		}
	}
	return r
}

// err turns a reply's error back into an error of its kind.
func (r *replyErr) err() error {
	if r.Kind == "exit" {
		return &launcher.ExitError{Path: r.VMM, Code: r.Code, Signal: syscall.Signal(r.Signal)}
	}
	err := errors.New(r.Message)
	for _, k := range errKinds {
		if r.Kind == k.kind {
			return vmfs.WithKind(k.err, err)
		}
	}
	return err
}

// PayloadStatus is a payload a service serves.
type PayloadStatus struct {
	Name       string    `json:"name"`
	Dir        string    `json:"dir"`                // where it is in the service's mount
	Owner      int       `json:"owner"`              // the uid that added it, who alone may read it
	APK        string    `json:"apk"`                // as its client named it
	Instance   string    `json:"instance,omitempty"` // its instance image, as its client named it
	Mountpoint string    `json:"mountpoint,omitempty"`
	Kept       bool      `json:"kept"` // added by mount: stays when its VMs end
	Added      time.Time `json:"added"`
}

// VMStatus is a VM a service runs.
type VMStatus struct {
	Name     string    `json:"name"` // its payload, or the raw config's VM
	CID      int       `json:"cid"`
	Pid      int       `json:"pid"` // the VMM's
	State    string    `json:"state"`
	Owner    int       `json:"owner"`
	APK      string    `json:"apk,omitempty"`
	Instance string    `json:"instance,omitempty"` // its payload's instance image, as its client named it
	Started  time.Time `json:"started"`
}

// A VM's state.
const (
	VMRunning = "running"
	VMEnded   = "ended"
)

// Status is what a client of a service may see: its own payloads and
// VMs, or all of them for root.
type Status struct {
	Pid      int             `json:"pid"`
	Dir      string          `json:"dir"`
	Payloads []PayloadStatus `json:"payloads"`
	VMs      []VMStatus      `json:"vms"`
}
