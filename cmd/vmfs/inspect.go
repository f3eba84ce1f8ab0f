package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"vmfs"
	"vmfs/internal/jsonfmt"
	"vmfs/layout"
)

// placeholderMount stands for the mountpoint in the VM config inspect prints.
const placeholderMount = "/<mountpoint>"

func runInspect(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var sf specFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := sf.payloadArgs(fs, ""); err != nil {
		return err
	}
	args = fs.Args()
	spec, err := sf.spec(args)
	if err != nil {
		return err
	}
	p, err := vmfs.Resolve(ctx, spec)
	if err != nil {
		return err
	}
	vm := p.VMConfig(placeholderMount)
	if *asJSON {
		disks := map[string]layout.Description{}
		for _, d := range p.Disks() {
			disks[diskName(d.Dir)] = d.Disk.Describe()
		}
		out, err := jsonfmt.Indent(map[string]any{
			"profile": p.Profile.String(), "disks": disks, "vm_config": vm, "os_config": p.OSConfigPath, "apexes": p.ApexPaths(),
		})
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(out)
		return err
	}
	fmt.Fprintf(c.stdout, "%s payload disk: %d bytes, GUID %s\n", p.Profile, p.Disk.Flat.Size, p.Disk.GUID)
	printTable(c, p.Disk)
	for _, d := range p.Disks()[1:] {
		fmt.Fprintf(c.stdout, "\n%s (from %s): %d bytes\n", d.Dir, p.OSConfigPath, d.Disk.Flat.Size)
		printTable(c, d.Disk)
	}
	b, err := jsonfmt.Indent(vm)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "\nVM config (from %s, %s = the mount):\n%s", p.OSConfigPath, placeholderMount, b)
	return err
}

// diskName names a disk of a payload: "payload", or its directory in a mount.
func diskName(dir string) string {
	if dir == "" {
		return "payload"
	}
	return dir
}

func printTable(c *command, d *layout.Disk) {
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "#\tLABEL\tOFFSET\tSIZE\tSOURCES")
	for i, p := range d.Describe().Partitions {
		var srcs []string
		for _, e := range p.Extents {
			s := fmt.Sprintf("%s %d B", e.Source, e.Size)
			if e.FileOffset != nil && *e.FileOffset != 0 {
				s += fmt.Sprintf(" from byte %d", *e.FileOffset)
			}
			srcs = append(srcs, s)
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%s\n", i+1, p.Label, p.Offset, p.Size, strings.Join(srcs, " + "))
	}
	w.Flush()
}
