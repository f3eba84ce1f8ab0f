// Package fusedisk serves layout.Disks through go-fuse, synthesizing every byte
// on the fly from the original files; read-only, but for a VM's state files.
//
// It owns the go-fuse node tree, the read paths, the guard on the sources and the
// mount. It serves only what it is given: it builds no layouts, parses no formats
// and writes no documents of its own (layout.json, vm.json and the like come from
// its caller, as TreeOptions.Files), and it knows nothing of VMMs. It imports
// layout, go-fuse, x/sys, zap and internal/fusectl, never metadata or launcher.
//
// # Three steps
//
// OpenSources opens the original files of some disks, once each, and watches them
// (see Sources below). NewTree builds the root node of a tree over them: each
// disk's flat image, GPT header and footer, partitions and composite descriptor,
// and the further files it is given. Mount mounts that root at a directory with
// vmfs's mount options; an embedder may instead graft it into a go-fuse tree of
// its own, since the root puts its files in place when go-fuse adds it. Undoing
// runs backwards: Server.Stop, then Sources.Close.
//
// # Ending a mount
//
// A Server, and an Exposed mount (a directory of one mounted elsewhere too),
// finds its mount by its mount ID, never by a path: a mountpoint reached through
// a symlink, or renamed since, is still the one unmounted, and nothing mounted
// since at its old path is taken for it. Unmounting here does not end a FUSE
// mount: any user may copy it into a mount namespace of its own (unshare -Urm),
// and its connection, and Server.Wait, last as long as a copy or an open file
// does. Server.Stop bounds that: past a short grace it aborts the connection
// through fusectl, and every copy's requests fail with ENOTCONN. Each change of
// the mount table after Mount (and each abort) goes through a Mounter: Direct
// makes it in this process; a process confined by Landlock, which may make
// none, passes one that has another process make it.
//
// # Many trees in one mount
//
// A service serving many payloads mounts a Forest and grafts each payload's tree
// into it by name (Forest.Add), each tree private to its owner
// (TreeOptions.Owner). One Pool holds the sources of all: Pool.Open opens a
// tree's sources, sharing each file with the other trees that read it, and
// takes files a client already opened in place of names. A tree taken out
// (Forest.Remove) is forgotten by the kernel at once; Sources.CloseWhenIdle
// closes its sources once no file of it is open any more, since a process may
// still be reading one.
//
// # Read paths
//
// A read inside one file extent is answered with fuse.ReadResultFd (the kernel
// splices from the original file); a read inside synthesized bytes or zeros comes
// from memory without copying; a read across extents is assembled in a splice pipe.
// go-fuse splices a reply into /dev/fuse through a pipe of its own, which holds
// a bounded number of buffers: one per page of a file, one per written piece. A
// reply that might not fit (many small extents, or an unaligned O_DIRECT read) is
// copied instead, since a short reply reads as the end of the file. Content
// never changes, so the kernel keeps its page cache and entries and attributes
// have long timeouts.
//
// # Passthrough
//
// A node whose bytes are exactly one original file (an Android 13+ APEX's
// partition, a 4 KiB-aligned APK's) is read by the kernel from that file itself,
// unless TreeOptions.NoPassthrough. Mount has the kernel take each such source
// as a backing file once, between INIT and the first request, and passes through
// the nodes whose source it took (Server.Passthrough), so that a node is served
// one way from its first open on. The kernel takes them only from CAP_SYS_ADMIN,
// from Linux 6.9 built with CONFIG_FUSE_PASSTHROUGH, and not from a stacked
// filesystem (overlayfs, another passthrough mount): elsewhere vmfs serves the
// reads, and logs why. Only a tree mounted by Mount is passed through, never one
// grafted into a Forest or an embedder's tree. The kernel opens the source again
// at each open of such a node, with the credentials this process had at the
// node's first open: a process that confines itself after mounting (Landlock)
// fails those opens (EIO) unless its rules grant the sources.
//
// # Sources
//
// Sources are opened once, by OpenSources, read-only and without blocking:
// symlinks are resolved once, the file is pinned, and a source that is no longer
// a regular file (a FIFO swapped in after the layout was made) is refused, not
// waited on. A source that cannot be served fails OpenSources with a
// *SourceError. A file is one source however many names lead to it (two APEX
// names, a symlink) or trees of a Pool read it, as inotify gives it one watch.
// Each source is fingerprinted: every read that reaches vmfs first checks the
// fingerprint with fstat, and inotify watches for edits, deletion and replacement
// by rename (a name counts as replaced only when it no longer leads to the file,
// and a file handed over open has no name to replace). A
// changed source turns every later read of it into EIO and has the kernel drop
// the cached pages of the nodes opened on it, so no stale or mixed bytes are
// served; they are dropped from a goroutine of their own, never from inside a
// request, as the kernel drops a page only once the read that holds it is
// answered. Reads of a passed-through node bypass vmfs, and with it this guard:
// a node opened before its source changed reads the changed bytes.
//
// # Writes
//
// A disk's writable sources (Disk.Writable: a VM's instance image, its
// encrypted storage) are read and written through their backends, never their
// files: a QCOW2 file's bytes are not the disk's. A node whose extents read one
// (the flat image, partitions/<label>) takes writes that fall wholly inside
// such extents, and refuses any other with EPERM, writing nothing: a write
// that touches the GPT, a read-only partition or padding changes no byte. A
// write is in the backend before the reply; fsync, and a close after a write,
// sync it. Such nodes are direct I/O, without a page cache: a write through
// the flat image is read at once through the partition, and the other way
// round. Their size never changes (a truncation to it is taken, as dd does
// one; O_APPEND and O_TRUNC are refused). Writable sources are not guarded
// (they change by design) nor shared between trees: one VM writes a state
// file, under its owner's lock. A backend that is a Holder is held from each
// open of such a node to its release, and may refuse the open (EBUSY while
// another program writes its file). A tree with writable sources is mounted with
// MountOptions.Writable; every other file stays read-only (EROFS).
//
// # Extents
//
// A disk may also have extent descriptors, for a VMM to read the originals
// itself (page cache to guest, no copy through the mount): a VMDK for QEMU and
// a crosvm composite, both naming each original's sectors by its path and the
// pieces vmfs synthesizes (GPT, metadata, trailers, padding, an original's part
// sectors) as files under extents/. Sources.Extents builds them once, for
// Disk.Extents, and refuses a disk they would misdescribe: a writable
// partition, an original whose path no longer leads to the file the sources
// hold or that is on FUSE or a network filesystem, a piece crosvm would not
// read raw. Reads of the originals then bypass vmfs and with it the guard.
//
// # Permissions
//
// A tree lets no one read more than its sources do (with MountOptions.AllowOther,
// other users read through it). Who may read a source is what the mode of the
// open file says (so a symlink counts as its target), cut by the directories on
// the file's own path, which must be searchable. A node takes its owner, group and
// mode from the sources it shows, the most restrictive winning: a disk image or a
// partition from the sources its extents read; a node that reads none but tells
// of them (GPT header and footer, composite descriptors, the metadata partition,
// TreeOptions.Files such as vm.json) from all the tree's sources together. Read
// goes to a class only where every source grants it; write only to a node that
// reads a writable source, for a class that may read it and that every
// writable source it reads lets write (its mode, cut by the directories on its
// path, as for read); execute never. A
// mount has default_permissions: the kernel checks them. Directories are 0555:
// they show names, not bytes; but a tree with an Owner is 0500, its owner's, and
// a Forest is 0711, so that no one but root lists the trees in it.
package fusedisk
