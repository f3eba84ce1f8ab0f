package service

import (
	"os"
	"os/exec"
	"path/filepath"

	"go.uber.org/zap"

	"vmfs"
	"vmfs/internal/confine"
	"vmfs/internal/qsd"
	"vmfs/launcher"
	"vmfs/metadata"
)

// systemFiles are what the VMMs load from the system: their shared libraries
// and data (QEMU's firmware and ROMs in /usr/share).
var systemFiles = []string{"/usr", "/lib", "/lib64", "/etc/ld.so.cache"}

// confine starts the mount helper, then confines this process, and the VMMs it
// will start, to the rules: for good. Where the kernel has no Landlock it logs
// that once, stops the helper and goes on unconfined.
func (s *Service) confine() error {
	r, err := s.rules()
	if err != nil {
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	o := confine.HelperOptions{Dev: s.dev, Source: s.fsName, Remove: []string{s.o.Socket, s.lock.Name()}}
	if err := s.mounter.Start(o); err != nil {
		return vmfs.WithKind(vmfs.ErrMount, err)
	}
	confined, err := confine.Apply(r, s.log)
	if !confined {
		s.mounter.Close() // the mount changes are this process's own again
	}
	return err
}

// rules are what the service and its VMMs open by path once confined: its
// mount (the service opens the payloads' disks there for the VMMs), its
// sources (the OS directory and the files its configs name, the APEX
// directories, the apex-info-list and the APEXes it names), the CID locks, its
// own /proc/self (mountinfo), the devices a VMM uses, the VMM binaries with
// what they load, and the state files' engine. They are taken now: a source
// put elsewhere since (a config turned into a symlink out, an APEX listed at a
// new path, a VMM installed since) is refused until the service restarts. The files a client sends come
// open and need no rule; the mount changes and the socket's removal are the
// helper's.
func (s *Service) rules() (confine.Rules, error) {
	// The mount read-write: a writable disk's flat image is opened so for
	// its VMM (the mount itself refuses a write outside state files).
	r := confine.Rules{
		Read:      append([]string{"/proc/self"}, systemFiles...),
		ReadWrite: []string{s.dir, "/dev/null", "/dev/kvm", "/dev/vhost-vsock"},
	}
	// The CID locks are made in there: it must be there now to be granted.
	cids := orDefault(s.o.VM.CIDDir, launcher.DefaultCIDDir)
	if err := os.MkdirAll(cids, 0o755); err != nil {
		return r, err
	}
	r.ReadWrite = append(r.ReadWrite, cids)

	osDir := orDefault(s.o.OSDir, vmfs.DefaultOSDir)
	r.Read = append(r.Read, osDir)
	add := func(path string, writable bool) {
		if writable {
			r.ReadWrite = append(r.ReadWrite, path)
		} else {
			r.Read = append(r.Read, path)
		}
	}
	configs, _ := filepath.Glob(filepath.Join(osDir, "*.json"))
	for _, c := range configs {
		cfg, err := metadata.LoadVMConfig(c)
		if err != nil {
			s.log.Warn("OS config unreadable: the files it names are not granted", zap.String("config", c), zap.Error(err))
			continue
		}
		r.Read = append(r.Read, cfg.Kernel, cfg.Initrd, cfg.Bootloader)
		for _, d := range cfg.Disks {
			add(d.Image, d.Writable)
			for _, p := range d.Partitions {
				add(p.Path, p.Writable)
			}
		}
	}

	r.Read = append(r.Read, s.o.ApexDirs...)
	list := orDefault(s.o.ApexInfoList, metadata.DefaultApexInfoList)
	r.Read = append(r.Read, list)
	// A list that does not read fails the payloads that need it, as it would anyway.
	apexes, _ := metadata.ApexResolver{InfoList: list}.Entries(nil)
	for _, a := range apexes {
		r.Read = append(r.Read, a.ModulePath)
	}

	for _, vmm := range []launcher.Options{{VMM: launcher.VMMQemu, Qemu: s.o.VM.Qemu}, {VMM: launcher.VMMCrosvm, Crosvm: s.o.VM.Crosvm}} {
		if _, bin, err := launcher.Resolve(vmm); err == nil {
			r.Exec = append(r.Exec, bin)
		}
	}
	// The engine of the payloads' QCOW2 state files (vmfs.TreeOptions.Credential).
	if bin, err := exec.LookPath(qsd.DefaultBinary); err == nil {
		r.Exec = append(r.Exec, bin)
	}
	return r, nil
}
