package metadata

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every reader of an input file refuses a FIFO at once, naming it, with an *InputError:
// opening a FIFO that has no writer waits for one forever.
func TestInputsRefuseFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	apk, idsig := filepath.Join("testdata", "small.apk"), filepath.Join("testdata", "small.apk.idsig")
	for name, read := range map[string]func() error{
		"OpenIdsig":             func() error { _, err := OpenIdsig(fifo); return err },
		"VerifyFiles apk":       func() error { return VerifyFiles(fifo, idsig) },
		"VerifyFiles idsig":     func() error { return VerifyFiles(apk, fifo) },
		"ReadPayloadConfig":     func() error { _, err := ReadPayloadConfig(fifo, "assets/vm_config.json"); return err },
		"LoadVMConfig":          func() error { _, err := LoadVMConfig(fifo); return err },
		"ApexResolver InfoList": func() error { _, err := ApexResolver{InfoList: fifo}.Resolve("com.a"); return err },
	} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- read() }()
			select {
			case err := <-done:
				var ie *InputError
				if !errors.As(err, &ie) || !strings.Contains(err.Error(), fifo+": a FIFO (named pipe), not a regular file") {
					t.Errorf("got %v, want an *InputError saying %s is a FIFO", err, fifo)
				}
			case <-time.After(10 * time.Second): // a deadline, not a wait: the read must not block at all
				// Open the FIFO for writing so the blocked reader returns and does not leak.
				if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatal("blocked on the FIFO")
			}
		})
	}
}
