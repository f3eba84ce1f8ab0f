// Package vmfs turns an Android app payload (an APK, its APK Signature Scheme v4
// idsig, a config path inside the APK, and the APEXes the config names) into a
// bootable GPT disk served zero-copy by an embedded FUSE filesystem, and boots it.
//
// It is the library the vmfs command is a thin client of. It ties the steps
// together and owns what spans them: Resolve (metadata → layout: a Spec becomes a
// Payload), Mount (fusedisk: a Payload served at a directory, with its manifest
// vmfs.json), Open and List (existing mounts, from their manifests), and RunApp
// (verify, mount privately, launch with launcher, watch the guest's verdict, clean
// up), and the pieces a long-running server of many payloads builds on: NewTree
// (a payload's files, to graft into a mount of its own), Start (a VM and the
// watcher of its verdict). It parses no format itself, lays out no disk and
// builds no VMM argv: those stay in metadata, layout, fusedisk and launcher, none
// of which imports vmfs. Package service, a user of this library, is vmfs as a
// service.
//
// It also makes a VM's writable partitions (CreatePartition, FormatPartition), as
// `vm create-partition` does, in the formats metadata and qcow2 own.
//
// Errors carry a kind an embedder can branch on with errors.Is: ErrInput (a bad or
// missing input file), ErrMount (the mountpoint or FUSE refused), ErrVMM (the VMM
// could not be started) and ErrArgument (a value out of range); anything else is a
// failure of verification or of the VM.
package vmfs
