package vmfs

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"vmfs/internal/inputfile"
	"vmfs/layout"
	"vmfs/metadata"
)

// Files are a payload's APK and idsig, opened by the caller (a service's client
// opens them with its own rights and hands them over). Resolve, Mount and Verify
// read them through these files and never open Spec.APK or Spec.Idsig, which then
// only name them for people. They must stay open while the payload is served.
// Instance and Storage, when set, are Spec.Instance's and Spec.Storage's state
// files, open read-write (they must exist: see PrepareState); a tree writes the
// state files through these files and never opens their names. ExtraAPKs and ExtraIdsigs are the
// extra APKs (Spec.ExtraAPKPaths) and their idsigs, in order, open for reading.
type Files struct {
	APK, Idsig, Instance, Storage *os.File
	ExtraAPKs, ExtraIdsigs        []*os.File
}

// input is a file a payload is made of: its name and, when the caller opened
// it, the file.
type input struct {
	name, kind string
	f          *os.File
}

func (s Spec) inputs(apk, idsig string) (input, input) {
	if s.Files == nil {
		return input{name: apk, kind: "apk"}, input{name: idsig, kind: "idsig"}
	}
	return input{apk, "apk", s.Files.APK}, input{idsig, "idsig", s.Files.Idsig}
}

// size checks an opened input, a regular file open for reading, and returns its
// size. Reading goes through the file itself: an O_PATH descriptor, which anyone
// who may look a file up can get, reads nothing.
func (in input) size() (int64, error) {
	st, err := in.f.Stat()
	if err != nil {
		return 0, &metadata.InputError{Kind: in.kind, Err: err}
	}
	if !st.Mode().IsRegular() {
		return 0, &metadata.InputError{Kind: in.kind, Err: &inputfile.NotRegularError{Path: in.name, Mode: st.Mode()}}
	}
	fl, err := unix.FcntlInt(in.f.Fd(), unix.F_GETFL, 0)
	if err == nil && (fl&unix.O_PATH != 0 || fl&unix.O_ACCMODE == unix.O_WRONLY) {
		err = errors.New("not open for reading")
	}
	if err != nil {
		return 0, &metadata.InputError{Kind: in.kind, Err: fmt.Errorf("%s: %w", inputfile.Quote(in.name), err)}
	}
	return st.Size(), nil
}

// source is where the layout finds the input. An opened file is laid out under
// its descriptor's own path in this process, which names that very file and no
// path a caller chose: Mount hands the file itself to fusedisk by that key.
func (in input) source() (layout.Source, error) {
	if in.f == nil {
		return statSource(in.name)
	}
	size, err := in.size()
	return layout.Source{Path: openedKey(in.f), Size: size}, err
}

func openedKey(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// parseIdsig parses the idsig (not verified, which reads the whole APK) so that
// a garbage file is refused up front.
func parseIdsig(in input) error {
	if in.f == nil {
		_, err := metadata.OpenIdsig(in.name)
		return err
	}
	size, err := in.size()
	if err == nil {
		_, err = metadata.NewIdsig(in.name, in.f, size)
	}
	return err
}

func readPayloadConfig(prof metadata.Profile, apk input, configPath string) (*metadata.PayloadConfig, error) {
	if apk.f == nil {
		return prof.ReadPayloadConfig(apk.name, configPath)
	}
	size, err := apk.size()
	if err != nil {
		return nil, err
	}
	return prof.ReadPayloadConfigFrom(apk.name, apk.f, size, configPath)
}

// opened maps the layout keys of the files the caller opened to the files.
func (p *Payload) opened() map[string]*os.File {
	if p.files == nil {
		return nil
	}
	m := map[string]*os.File{}
	for _, f := range p.files.all() {
		m[openedKey(f)] = f
	}
	return m
}

// all are the files set.
func (fs *Files) all() []*os.File {
	var out []*os.File
	for _, f := range append([]*os.File{fs.APK, fs.Idsig, fs.Instance, fs.Storage}, append(fs.ExtraAPKs, fs.ExtraIdsigs...)...) {
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// CloseFiles closes the files the caller handed over open (Spec.Files), which
// the payload holds from Resolve on; its trees keep their own sources.
func (p *Payload) CloseFiles() {
	if p.files != nil {
		for _, f := range p.files.all() {
			f.Close()
		}
	}
}

// Verify checks the payload's APK against its idsig, as the package function
// Verify does, reading the files the caller opened when it did.
func (p *Payload) Verify(ctx context.Context) error {
	if p.files == nil {
		return Verify(ctx, p.APK, p.Idsig)
	}
	apk, idsig := Spec{Files: p.files}.inputs(p.APK, p.Idsig)
	return verifying(ctx, func() error {
		isize, err := idsig.size()
		if err != nil {
			return err
		}
		sig, err := metadata.NewIdsig(idsig.name, idsig.f, isize)
		if err != nil {
			return err
		}
		asize, err := apk.size()
		if err != nil {
			return err
		}
		return sig.VerifyAPK(apk.name, apk.f, asize, idsig.f)
	})
}

// verifying runs verify, which reads a whole APK, until ctx is done; an input
// that cannot be read gives an ErrInput error, a mismatch another one.
func verifying(ctx context.Context, verify func() error) error {
	return interruptible(ctx, func() error {
		err := verify()
		var ie *metadata.InputError
		if errors.As(err, &ie) {
			return WithKind(ErrInput, err)
		}
		return err
	})
}
