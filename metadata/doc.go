// Package metadata owns the formats vmfs reads and writes around an app payload: the
// payload config JSON inside the APK, the VM config JSON of the guest OS, the microdroid
// payload metadata (length-prefixed protobuf), the APK Signature Scheme v4 .idsig file
// with its merkle tree, and /apex/apex-info-list.xml for finding APEX files.
//
// # Profiles
//
// A Profile names the Android release whose formats vmfs follows (android12, the
// mid-2021 design and the default, to android15). It holds what differs as data: the
// payload config schema (Profile.ParsePayloadConfig), which APEXes go on the disk
// (Profile.SelectApexes), what the host writes in the metadata (Profile.NewMetadata), the
// extra APKs (Profile.ExtraApks) and the facts the disk layout needs
// (Profile.MetadataLabel, Profile.ZeroPadApexes), which the layout package takes as
// plain values. The functions without a profile are android12's. It owns the payload
// disk's partition labels (labels.go), which the metadata names, and a VM's writable
// partitions' types (partition.go): the header AVF writes at the start of a new
// instance image or encrypted storage, and, per profile, the image format and size
// AVF makes them in (the QCOW2 writer is package qcow2).
//
// It imports no other vmfs package but internal/inputfile (every input is opened
// through it, so a FIFO or a device never blocks), no go-fuse and no zap; it logs
// nothing and returns errors that name the file and the problem. A file that cannot be
// opened as a regular file gives an *InputError. The one file it writes is the idsig
// CreateIdsig makes.
//
// # Security
//
// Every input is treated as hostile. Lengths and counts read from a file are checked
// against the file size before anything is allocated (DecodeMetadata, which reads an
// io.Reader of unknown size, grows its buffer only as data arrives), and every
// variable-size item is capped: payload and VM config JSON at 1 MiB, payload metadata at
// 1 MiB, the idsig signing info at 64 KiB, apex-info-list.xml at 4 MiB. Names that become
// file names are checked by ValidName (at most 240 bytes), the payload config path inside
// the APK must be a clean relative path, and an APK holding that entry twice is refused.
// The idsig merkle tree is verified in constant memory, whatever the APK size
// (CreateIdsig holds the tree it builds, 1/128 of the APK). Verification proves that
// the APK matches the idsig, not who signed it: the v4 signature is not checked.
// Bad binary input is reported as a *FormatError carrying the byte offset.
package metadata

// The generated microdroid_metadata.pb.go is committed; `make proto` runs this. It pins
// protoc-gen-go to the protobuf version in go.mod and installs it in a temporary GOBIN.
//go:generate sh -c "bin=$DOLLAR(mktemp -d) && GOBIN=$DOLLAR{bin} go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 && protoc --plugin=protoc-gen-go=$DOLLAR{bin}/protoc-gen-go --go_out=. --go_opt=paths=source_relative microdroid_metadata.proto; s=$DOLLAR?; rm -rf $DOLLAR{bin}; exit $DOLLAR{s}"
