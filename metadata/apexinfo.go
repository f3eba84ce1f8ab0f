package metadata

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"vmfs/internal/inputfile"
)

// DefaultApexInfoList is where apexd publishes the active APEXes on Android.
const DefaultApexInfoList = "/apex/apex-info-list.xml"

// maxApexInfoListSize caps apex-info-list.xml; a phone's list is tens of KiB.
const maxApexInfoListSize = 4 << 20

// ApexInfo is one <apex-info> entry of apex-info-list.xml (AOSP system/apex
// apexd/ApexInfoList.xsd), with the attributes virtualizationservice reads. An attribute
// that is absent reads as its zero value (apexd always writes them); versionName is ignored.
type ApexInfo struct {
	ModuleName             string
	ModulePath             string
	PreinstalledModulePath string // Android 15 refuses APEXes not preinstalled under /system or /system_ext
	VersionCode            uint64 // xs:long in the schema; virtualizationservice reads a u64
	// LastUpdateSeconds is the lastUpdateMillis attribute, which holds seconds despite
	// its name (virtualizationservice's payload.rs says so and copies it as it is).
	LastUpdateSeconds     uint64
	IsFactory             bool
	IsActive              bool
	ProvideSharedApexLibs bool // Android 13+ puts such an APEX on every payload disk
}

type xmlApexInfo struct {
	ModuleName             *string `xml:"moduleName,attr"`
	ModulePath             *string `xml:"modulePath,attr"`
	PreinstalledModulePath string  `xml:"preinstalledModulePath,attr"`
	VersionCode            *string `xml:"versionCode,attr"`
	LastUpdateMillis       *string `xml:"lastUpdateMillis,attr"`
	IsFactory              *string `xml:"isFactory,attr"`
	IsActive               *string `xml:"isActive,attr"`
	ProvideSharedApexLibs  *string `xml:"provideSharedApexLibs,attr"`
}

type xmlApexInfoList struct {
	XMLName xml.Name      `xml:"apex-info-list"`
	Infos   []xmlApexInfo `xml:"apex-info"`
}

// ParseApexInfoList parses apex-info-list.xml from r; name is used in errors. moduleName
// and modulePath are required and non-empty; a missing boolean means false and a missing
// number 0.
func ParseApexInfoList(name string, r io.Reader) ([]ApexInfo, error) {
	lr := &io.LimitedReader{R: r, N: maxApexInfoListSize + 1}
	dec := xml.NewDecoder(lr)
	var list xmlApexInfoList
	if err := dec.Decode(&list); err != nil {
		return nil, apexInfoError(name, dec, lr, err)
	}
	// Only comments, processing instructions and white space may follow the root element.
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, apexInfoError(name, dec, lr, err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(strings.TrimSpace(string(t))) == 0 {
				continue
			}
		case xml.Comment, xml.ProcInst:
			continue
		}
		return nil, &FormatError{File: name, Off: dec.InputOffset(), Msg: "content after </apex-info-list>"}
	}
	out := make([]ApexInfo, 0, len(list.Infos))
	for i, x := range list.Infos {
		bad := func(msg string) error {
			return &FormatError{File: name, Off: -1, Msg: fmt.Sprintf("apex-info #%d: %s", i+1, msg)}
		}
		if x.ModuleName == nil || *x.ModuleName == "" {
			return nil, bad("moduleName is required")
		}
		if x.ModulePath == nil || *x.ModulePath == "" {
			return nil, bad(fmt.Sprintf("%s: modulePath is required", inputfile.Quote(*x.ModuleName)))
		}
		info := ApexInfo{ModuleName: *x.ModuleName, ModulePath: *x.ModulePath, PreinstalledModulePath: x.PreinstalledModulePath}
		for _, b := range []struct {
			attr string
			raw  *string
			to   *bool
		}{
			{"isActive", x.IsActive, &info.IsActive},
			{"isFactory", x.IsFactory, &info.IsFactory},
			{"provideSharedApexLibs", x.ProvideSharedApexLibs, &info.ProvideSharedApexLibs},
		} {
			if b.raw == nil {
				continue
			}
			// xs:boolean literals, after white-space collapsing.
			switch strings.TrimSpace(*b.raw) {
			case "true", "1":
				*b.to = true
			case "false", "0":
			default:
				return nil, bad(fmt.Sprintf("%s: %s %q is not an xs:boolean",
					inputfile.Quote(info.ModuleName), b.attr, inputfile.Quote(*b.raw)))
			}
		}
		for _, n := range []struct {
			attr string
			raw  *string
			to   *uint64
		}{
			{"versionCode", x.VersionCode, &info.VersionCode},
			{"lastUpdateMillis", x.LastUpdateMillis, &info.LastUpdateSeconds},
		} {
			if n.raw == nil {
				continue
			}
			v, err := strconv.ParseUint(strings.TrimSpace(*n.raw), 10, 64)
			if err != nil {
				return nil, bad(fmt.Sprintf("%s: %s %q is not a non-negative integer",
					inputfile.Quote(info.ModuleName), n.attr, inputfile.Quote(*n.raw)))
			}
			*n.to = v
		}
		out = append(out, info)
	}
	return out, nil
}

func apexInfoError(name string, dec *xml.Decoder, lr *io.LimitedReader, err error) error {
	if lr.N <= 0 {
		return fmt.Errorf("apex info list %s: larger than %d bytes", name, maxApexInfoListSize)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("apex info list %s: at byte %d: %w", name, dec.InputOffset(), cutError{err})
}

// ApexResolver finds APEX files by name, as formats.md's decisions table says: the active
// entry of the apex-info-list.xml at InfoList if that file exists, else the first
// `<dir>/<name>.apex` in Dirs that is a regular file. The file an active entry names
// must be a regular file; in Dirs, anything else is passed over, as a PATH lookup does.
//
// As a vmfs extension, a relative modulePath in the info list is resolved against the
// directory of the list file (apexd always writes absolute paths), so test trees and
// copies of /apex can carry their own list.
type ApexResolver struct {
	InfoList string   // path of apex-info-list.xml; empty or absent means none
	Dirs     []string // directories searched for `<name>.apex`, in order
}

// Resolve returns the absolute, clean path of the APEX called name. An APEX that is
// neither in the info list nor in Dirs gives an error wrapping ErrNotFound; one that is
// there but not a regular file (a FIFO, a directory, a dangling symlink) gives an error
// saying what it is.
func (r ApexResolver) Resolve(name string) (string, error) {
	if err := ValidName("apex", name); err != nil {
		return "", err
	}
	list, err := r.infoList()
	if err != nil {
		return "", err
	}
	for _, info := range list {
		if info.IsActive && info.ModuleName == name {
			if _, err := inputfile.Stat(info.ModulePath); err != nil {
				return "", fmt.Errorf("apex %s (listed in %s): %w", name, r.InfoList, err)
			}
			return info.ModulePath, nil
		}
	}
	return r.fromDirs(name, list != nil)
}

// Entries returns what the APEX set is chosen from (Profile.SelectApexes): every entry of
// the info list, modulePath made absolute, then for each of names that has no active
// entry there, the first `<dir>/<name>.apex` in Dirs that is a regular file, as an active
// factory entry (version 0, last update 0, preinstalled path unknown). A name found
// nowhere is left out; SelectApexes decides whether that is an error. Entries stats no
// listed file: the caller stats the ones it selects.
func (r ApexResolver) Entries(names []string) ([]ApexInfo, error) {
	list, err := r.infoList()
	if err != nil {
		return nil, err
	}
	out := slices.Clone(list)
	for _, name := range names {
		if err := ValidName("apex", name); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(a ApexInfo) bool { return a.IsActive && a.ModuleName == name }) {
			continue
		}
		p, err := r.fromDirs(name, list != nil)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ApexInfo{ModuleName: name, ModulePath: p, IsFactory: true, IsActive: true})
	}
	return out, nil
}

// infoList reads r.InfoList, each modulePath made absolute; nil when there is no list.
func (r ApexResolver) infoList() ([]ApexInfo, error) {
	if r.InfoList == "" {
		return nil, nil
	}
	f, _, err := openRegular(r.InfoList, "apex info list")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	infos, err := ParseApexInfoList(r.InfoList, f)
	if err != nil {
		return nil, err
	}
	for i := range infos {
		p := infos[i].ModulePath
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(r.InfoList), p)
		}
		if infos[i].ModulePath, err = filepath.Abs(p); err != nil {
			return nil, fmt.Errorf("apex %s: %w", infos[i].ModuleName, err)
		}
	}
	return infos, nil
}

// fromDirs returns the first `<dir>/<name>.apex` in r.Dirs that is a regular file;
// listed says whether an info list was read (and is named as a place looked in).
func (r ApexResolver) fromDirs(name string, listed bool) (string, error) {
	var looked []string
	if listed {
		looked = append(looked, r.InfoList)
	}
	// The first candidate that is there but unusable; "not found" would send the user
	// looking for a file that exists.
	var unusable error
	for _, dir := range r.Dirs {
		p := filepath.Join(dir, name+".apex")
		looked = append(looked, p)
		if _, err := inputfile.Stat(p); err != nil {
			missing := errors.Is(err, fs.ErrNotExist) && !errors.Is(err, inputfile.ErrDangling)
			if unusable == nil && !missing {
				unusable = err
			}
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("apex %s: %w", name, err)
		}
		return abs, nil
	}
	if unusable != nil {
		return "", fmt.Errorf("apex %s: %w", name, unusable)
	}
	where := "nowhere (no apex info list, no apex directories)"
	if len(looked) > 0 {
		where = strings.Join(looked, ", ")
	}
	return "", fmt.Errorf("apex %s: looked in %s: %w", name, where, ErrNotFound)
}
