package main

import (
	"context"
	"errors"
	"os"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"vmfs/service"
)

// serviceFlags pick the vmfs service a command is a client of.
type serviceFlags struct {
	socket string
	flags  *pflag.FlagSet
}

func (f *serviceFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	def := os.Getenv("VMFS_SOCKET")
	if def == "" {
		def = service.DefaultSocket
	}
	fs.StringVar(&f.socket, "socket", def, "a vmfs service's control socket (default $VMFS_SOCKET, else "+service.DefaultSocket+"); with none answering at the default, the command runs on its own")
}

// client is a client of the service at --socket, or nil when none answers at
// the default one: the command then runs on its own. A socket named with
// --socket must answer.
func (f *serviceFlags) client(ctx context.Context, log *zap.Logger) (*service.Client, error) {
	c, err := service.Dial(ctx, f.socket)
	switch {
	case err == nil:
		c.Logger = log
		return c, nil
	case errors.Is(err, service.ErrNoService) && !f.flags.Changed("socket"):
		return nil, nil
	}
	return nil, err
}

// needsService refuses, when no service answers, the flags only its clients take.
func needsService(fs *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		if fs.Changed(name) {
			return usagef("--%s: only through a vmfs service (vmfs serve), and none answers", name)
		}
	}
	return nil
}

// notThroughService refuses the flags a client of a service does not take.
func notThroughService(fs *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		if fs.Changed(name) {
			return usagef("--%s: not through a vmfs service, which serves with its own settings", name)
		}
	}
	return nil
}
