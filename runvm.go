package vmfs

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"vmfs/launcher"
	"vmfs/metadata"
)

// RunVM boots the VM config at path in this process, as `vm run` does: its
// kernel, initrd, bootloader and disk images as they are (a disk of partitions
// must be assembled first). The console and verdict are as for RunApp; o.Spec,
// o.Mount and o.SkipVerify are not used.
func RunVM(ctx context.Context, path string, o RunOptions) error {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	cfg, err := metadata.LoadVMConfig(path)
	if err != nil {
		return WithKind(ErrInput, err)
	}
	if err := launcher.CheckBootFiles(cfg); err != nil {
		return WithKind(ErrInput, fmt.Errorf("vm config %s: %w", path, err))
	}
	if o.DryRun != nil {
		return PrintCommand(o.DryRun, cfg, o.VM)
	}
	return boot(ctx, cfg, o, new(bool))
}
