package fusedisk

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
)

// treeOf is e when it is a tree from NewTree, or nil.
func treeOf(e fs.InodeEmbedder) *root {
	r, _ := e.(*root)
	return r
}

// passNodes are the files of the tree that kernel passthrough may serve, by
// path; none when r is nil: a Forest or an embedder's root, whose trees are
// grafted while it serves, passes none through.
func (r *root) passNodes() map[string]*fileNode {
	if r == nil {
		return nil
	}
	nodes := map[string]*fileNode{}
	for name, n := range r.files {
		if n.whole != nil {
			nodes[name] = n
		}
	}
	return nodes
}

// errNoPassthrough: the kernel did not offer passthrough at INIT.
const errNoPassthrough = "this kernel has no FUSE passthrough (it needs Linux 6.9 or later, built with CONFIG_FUSE_PASSTHROUGH)"

// armPassthrough has the kernel take the source of each of nodes, the files of
// r that passthrough may serve, as a backing file once, and arms the files whose
// source it takes; it returns their paths, sorted, and logs what it found. It
// runs after INIT and before srv serves any request, so that every open of a
// file finds it as it stays: the kernel fails an open (EIO) that would mix
// passthrough and vmfs's own reads on one file, and go-fuse, once the kernel
// refuses it a backing file, asks for none again, not even for the files
// already passed through (their next open would fail). So go-fuse only ever
// asks for sources the kernel took here, and a file it cannot pass through
// reads through vmfs from its first open on.
func armPassthrough(srv *fuse.Server, r *root, nodes map[string]*fileNode, log *zap.Logger) []string {
	off := func(why string) []string {
		log.Info("passthrough off: vmfs serves every read", zap.String("why", why))
		return nil
	}
	switch {
	case r == nil:
		return nil
	case r.noPassthrough:
		return off("turned off")
	case len(nodes) == 0:
		return off("no file is exactly one original file")
	case srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0:
		return off(errNoPassthrough)
	}
	took := map[*source]error{}
	var armed []string
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		src := nodes[name].whole
		err, seen := took[src]
		if !seen {
			err = backingFile(srv, src)
			took[src] = err
			switch {
			case errors.Is(err, syscall.EPERM):
				return off("the server lacks CAP_SYS_ADMIN (is not root), which the kernel asks of passthrough")
			case errors.Is(err, syscall.ELOOP):
				err = fmt.Errorf("%w: the file is on a stacked filesystem (overlayfs, a FUSE mount with passthrough)", err)
				fallthrough
			case err != nil:
				log.Info("passthrough: the kernel refuses this source as a backing file; vmfs reads it", zap.String("source", src.path), zap.Error(err))
			}
		}
		if err == nil {
			armed = append(armed, name)
		}
	}
	for _, name := range armed {
		nodes[name].pass = true
	}
	if len(armed) > 0 {
		log.Info("passthrough: the kernel reads these files from their originals itself, past vmfs's change guard", zap.Strings("files", armed))
	}
	return armed
}

// backingFile has the kernel take src as a backing file, and lets it go again.
func backingFile(srv *fuse.Server, src *source) error {
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(src.fd)})
	if errno != 0 {
		return errno
	}
	if errno := srv.UnregisterBackingFd(id); errno != 0 {
		return errno
	}
	return nil
}
