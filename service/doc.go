// Package service is vmfs as a service, as virtualizationservice is: one
// long-running process and one FUSE mount holding a directory per payload, added
// and removed at run time, and the VMs booting them. Client talks to it over a
// Unix socket (framed by internal/wire), handing over the files it opened itself
// (vmfs.Spec.Files), never their paths; the uid the kernel gives for a client
// owns what it creates.
//
// It is a user of the vmfs library (Resolve, NewTree, Start) and of fusedisk's
// Pool and Forest; it owns the protocol, the clients' rights and quotas, and the
// lives of their payloads and VMs, and what it may open once confined
// (Options.Confine: its Landlock rules, and its mount changes made by an
// internal/confine Helper). Only cmd/vmfs imports it.
package service
