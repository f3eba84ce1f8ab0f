package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"vmfs"
)

func runVerify(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	args, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	// exit 1 for a mismatch, 3 for a file that cannot be read: the reason is the one line printed
	if err := vmfs.Verify(ctx, args[0], args[1]); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, "OK")
	return err
}

func runCreateIdsig(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	args, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	return vmfs.CreateIdsig(ctx, args[0], args[1])
}
