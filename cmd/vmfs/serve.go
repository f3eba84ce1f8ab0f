package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"vmfs"
	"vmfs/internal/inputfile"
	"vmfs/launcher"
	"vmfs/service"
)

// runServe is `vmfs serve`: the service, in the foreground (for systemd).
func runServe(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var sf specFlags
	sf.registerSources(fs)
	o := service.Options{Logger: c.log, Confine: true}
	fs.StringVar(&o.Dir, "dir", service.DefaultDir, "the mount holding one directory per payload")
	fs.StringVar(&o.Socket, "socket", service.DefaultSocket, "the control socket")
	fs.StringVar(&o.Group, "group", "", "a group (name or id) that may use the socket too (default: root alone, mode 0600)")
	registerVMM(fs, &o.VM)
	fs.StringVar(&o.VM.CIDDir, "cid-dir", launcher.DefaultCIDDir, "where the VMs' CIDs are locked")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	o.ApexDirs, o.OSDir = sf.apexDirs, sf.osDir
	if sf.flags.Changed("apex-info-list") { // the default is used where it exists
		o.ApexInfoList = sf.apexInfoList
	}
	s, err := service.New(o)
	if err != nil {
		return err
	}
	if err := notifyReady(); err != nil {
		c.log.Warn("cannot tell systemd the service is ready", zap.Error(err))
	}
	return s.Serve(ctx)
}

// notifyReady tells systemd (Type=notify) that the service is ready, when it
// runs under it.
func notifyReady() error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	conn, err := net.Dial("unixgram", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1"))
	return err
}

// runStop is `vmfs stop`: stop a VM of the service.
func runStop(c *command, ctx context.Context, fs *pflag.FlagSet, args []string) error {
	var sf serviceFlags
	sf.register(fs)
	args, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	cl, err := service.Dial(ctx, sf.socket)
	if err != nil {
		return err
	}
	_, err = cl.Stop(ctx, args[0])
	return err
}

// unmountThrough removes target (a payload's name or mountpoint) from the
// service cl; handled is false when target is a mount of a server of its own.
func unmountThrough(ctx context.Context, cl *service.Client, target string) (handled bool, err error) {
	st, err := cl.List(ctx)
	if err != nil {
		return true, err
	}
	m, _ := vmfs.Status(ctx, target)
	switch {
	case m != nil && m.Pid != st.Pid:
		return false, nil
	case m != nil:
		target = m.Dir
	}
	return true, cl.Remove(ctx, target)
}

// unmountService is `vmfs unmount --dir`: recover the mount a killed service left.
func unmountService(c *command, ctx context.Context, dir string) error {
	gone, err := service.UnmountDir(ctx, dir)
	for _, d := range gone {
		fmt.Fprintf(c.stderr, "vmfs: unmounted %s\n", d)
	}
	return err
}

// listService prints what the service cl shows this user: a line per VM and
// per payload no VM boots from. What a client gave (names, paths) is quoted
// where it holds a control character, so that no row can be forged.
func listService(c *command, ctx context.Context, cl *service.Client) (pid int, err error) {
	st, err := cl.List(ctx)
	if err != nil {
		return 0, err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tCID\tPID\tSTATE\tUPTIME\tAPK\tINSTANCE")
	booted := map[string]bool{}
	for _, vm := range st.VMs {
		booted[vm.Name] = true
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", inputfile.Quote(vm.Name), vm.CID, vm.Pid, vm.State, uptime(vm.Started), orDash(inputfile.Quote(vm.APK)), orDash(inputfile.Quote(vm.Instance)))
	}
	for _, p := range st.Payloads {
		if booted[p.Name] {
			continue
		}
		state := "served"
		if p.Mountpoint != "" {
			state = "served at " + inputfile.Quote(p.Mountpoint)
		}
		fmt.Fprintf(w, "%s\t-\t-\t%s\t%s\t%s\t%s\n", inputfile.Quote(p.Name), state, uptime(p.Added), inputfile.Quote(p.APK), orDash(inputfile.Quote(p.Instance)))
	}
	return st.Pid, w.Flush()
}

func uptime(since time.Time) string { return time.Since(since).Round(time.Second).String() }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
