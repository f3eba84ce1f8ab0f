// Command stateos writes an OS config with a partitioned disk 1 for Android 13's
// instance image: stateos OSDIR DIR (see testdata.StateOSDir).
package main

import (
	"fmt"
	"os"

	"vmfs/testdata"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: stateos OSDIR DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(os.Args[2], 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "stateos:", err)
		os.Exit(1)
	}
	if err := testdata.StateOSDir(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "stateos:", err)
		os.Exit(1)
	}
}
