package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"vmfs/metadata"
)

func runVerify(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	args, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	if err := interruptible(ctx, func() error { return metadata.VerifyFiles(args[0], args[1]) }); err != nil {
		// A file that cannot be read is a bad input, not a failed verification.
		var ie *metadata.InputError
		if errors.As(err, &ie) {
			return withCode(exitInput, err)
		}
		return err // exit 1: the reason is the one line printed
	}
	_, err = fmt.Fprintln(c.stdout, "OK")
	return err
}
