package main

import (
	"context"

	"github.com/spf13/pflag"

	"vmfs"
	"vmfs/metadata"
)

// runCreatePartition: exit 2 for a bad flag or size, 3 for a path that exists or a
// file that cannot be made.
func runCreatePartition(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	typ := fs.StringP("type", "t", metadata.RawPartition.String(), "what the partition starts with: raw (nothing), instance (an instance image's header) or encryptedstore (storage the guest formats)")
	format := fs.String("format", "", "qcow2 or raw (a sparse file) (default: the release's: qcow2 to android14, raw on android15)")
	profile := fs.String("profile", metadata.Android12.String(), "the Android release whose vm create-partition to follow: android12, android13, android14 or android15 (the last two round the size up to 4 KiB)")
	args, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	s := vmfs.PartitionSpec{}
	if s.Type, err = metadata.ParsePartitionType(*typ); err != nil {
		return usagef("--type: %v", err)
	}
	if *format != "" {
		if s.Format, err = metadata.ParseImageFormat(*format); err != nil {
			return usagef("--format: %v", err)
		}
	}
	if s.Profile, err = metadata.ParseProfile(*profile); err != nil {
		return usagef("--profile: %v", err)
	}
	if s.Size, err = vmfs.ParseSize(args[1]); err != nil {
		return usagef("%v", err)
	}
	return vmfs.CreatePartition(args[0], s)
}
