package metadata

import (
	"fmt"
	"strings"

	"vmfs/internal/inputfile"
)

// maxNameLen keeps a name usable as one path element (NAME_MAX) once a suffix is added.
const maxNameLen = 240

// ValidName checks a name that vmfs turns into a file name (an APEX name becomes
// `<dir>/<name>.apex`, an OS name `<os-dir>/<name>.json`): non-empty, at most 240 bytes,
// no '/', no NUL, and not "." or "..". kind names the thing in the error ("apex", "os").
// A valid name is short enough to repeat in errors whole.
func ValidName(kind, name string) error {
	var problem string
	switch {
	case name == "":
		problem = "empty"
	case len(name) > maxNameLen:
		problem = fmt.Sprintf("longer than %d bytes", maxNameLen)
	case strings.ContainsRune(name, '/'):
		problem = "contains '/'"
	case strings.ContainsRune(name, 0):
		problem = "contains NUL"
	case name == "." || name == "..":
		problem = "is a relative path element"
	default:
		return nil
	}
	return fmt.Errorf("invalid %s name %q: %s", kind, inputfile.Quote(name), problem)
}
