// Package version owns what a pgfront binary says about itself: its version, the VCS revision
// it was built from (and whether the tree had uncommitted changes), and the Go release that
// built it. `pgfront version` prints it, the first log line of `pgfront run` carries it and
// the pgfront_build_info metric labels it.
//
// The version comes from, in order: the linker (a release build stamps it, see the Makefile),
//
//	go build -ldflags "-X github.com/pgfront/pgfront/internal/version.stamped=v1.2.0" ./cmd/pgfront
//
// then the main module's version as the go command recorded it (a tagged checkout, or a
// pseudo-version such as v0.0.0-20261204200000-99c54bc0e1f2+dirty), else "devel". The
// revision and modified flag come from the linker too (stampedRevision, stampedModified:
// the go command does not stamp a build in a git worktree), else from the go command's VCS
// stamp (runtime/debug.BuildInfo).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time (-ldflags -X); read them through Get. stampedModified is "true" or "false".
var stamped, stampedRevision, stampedModified string

// Unknown stands for a revision the binary does not know (built outside a VCS checkout, or
// with -buildvcs=false).
const Unknown = "unknown"

// Info describes a binary. Its fields are never empty.
type Info struct {
	Version   string // "v1.2.0", "v1.2.0-3-g99c54bc-dirty", "devel"
	Revision  string // the full VCS revision, or Unknown
	Modified  bool   // the tree had uncommitted changes when it was built
	GoVersion string // "go1.26.8"
	Platform  string // "linux/amd64"
}

// Get returns the running binary's Info.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return fromBuild(stamps{stamped, stampedRevision, stampedModified}, bi, runtime.GOOS+"/"+runtime.GOARCH)
}

// stamps are what the linker set.
type stamps struct {
	version, revision, modified string
}

// fromBuild works Info out of the linker's stamps and the go command's build info (nil when
// the binary has none).
func fromBuild(st stamps, bi *debug.BuildInfo, platform string) Info {
	info := Info{Version: strings.TrimSpace(st.version), Revision: Unknown, GoVersion: runtime.Version(), Platform: platform}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					info.Revision = s.Value
				}
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if rev := strings.TrimSpace(st.revision); rev != "" {
		info.Revision = rev
		info.Modified = strings.TrimSpace(st.modified) == "true"
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}

// String is the line `pgfront version` prints:
//
//	pgfront v1.2.0 (revision 99c54bc0e1f2..., modified; go1.26.8 linux/amd64)
func (i Info) String() string {
	rev := "revision " + i.Revision
	if i.Modified {
		rev += ", modified"
	}
	return fmt.Sprintf("pgfront %s (%s; %s %s)", i.Version, rev, i.GoVersion, i.Platform)
}

// LogAttrs are the key/value pairs of the first log line: version, revision, modified, go.
func (i Info) LogAttrs() []any {
	return []any{"version", i.Version, "revision", i.Revision, "modified", i.Modified, "go", i.GoVersion}
}
