// Package verdict is the one console line on which the vmfs test guest
// (cmd/vmfs-guest) reports its checks, shared by the guest that writes it and the
// host (vmfs run-app, tests) that reads it. It imports nothing of vmfs.
package verdict

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Prefix starts the verdict line; the JSON of a Verdict follows on the same line.
const Prefix = "VMFS-VERDICT "

// Verdict is the agent's result: OK only when every check passed.
type Verdict struct {
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
	// Profile is the Android release the payload disk is from (e.g. "android13"), or
	// the releases it could be from, joined by "|"; empty when the metadata was unreadable.
	Profile string `json:"profile,omitempty"`
	// Instance and Storage report the VM's state partitions, when it has them.
	Instance *Instance `json:"instance,omitempty"`
	Storage  *Storage  `json:"storage,omitempty"`
}

// Instance is what the guest found in vm-instance and left there: the boot record
// after the instance header counts the boots that got that far.
type Instance struct {
	Found uint32 `json:"found"` // the count the record held at boot; 0: no record, a first boot
	Boots uint32 `json:"boots"` // the count written for this boot
}

// Storage is what the guest found in encryptedstore.
type Storage struct {
	// Formatted: the guest's own marker was there (a later boot); else the storage was
	// UNFORMATTED-STORAGE, as the host makes it, and the guest formatted it now.
	Formatted bool `json:"formatted"`
}

// Check is one thing the agent verified, in the order it ran.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
	// Errno names the syscall error behind a failure (e.g. "EIO" when dm-verity refuses a
	// block), so the host can tell causes apart without reading Reason.
	Errno string `json:"errno,omitempty"`
}

// Line is v as the console line, newline-framed so other output cannot split it.
func (v *Verdict) Line() (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode verdict: %w", err)
	}
	return "\n" + Prefix + string(b) + "\n", nil
}

// Parse returns the verdict on a console line, or nil when the line has none.
func Parse(line string) (*Verdict, error) {
	_, js, ok := strings.Cut(line, Prefix)
	if !ok {
		return nil, nil
	}
	v := new(Verdict)
	if err := json.Unmarshal([]byte(strings.TrimSpace(js)), v); err != nil {
		return nil, fmt.Errorf("garbled verdict line: %w", err)
	}
	return v, nil
}

// Failed lists the failed checks as "name: reason".
func (v *Verdict) Failed() []string {
	var out []string
	for _, c := range v.Checks {
		if !c.OK {
			out = append(out, c.Name+": "+c.Reason)
		}
	}
	return out
}
