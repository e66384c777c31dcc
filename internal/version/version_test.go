package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuild(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name  string
		stamp stamps
		bi    *debug.BuildInfo
		want  Info
	}{
		{"no build info", stamps{}, nil,
			Info{Version: "devel", Revision: Unknown, GoVersion: runtime.Version(), Platform: "linux/arm64"}},
		{"devel without VCS", stamps{}, &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}},
			Info{Version: "devel", Revision: Unknown, GoVersion: "go1.26.1", Platform: "linux/arm64"}},
		{"go command's pseudo-version", stamps{}, &debug.BuildInfo{GoVersion: "go1.26.1",
			Main: debug.Module{Version: "v0.0.0-20261204200000-99c54bc0e1f2+dirty"}, Settings: vcs("99c54bc0e1f2aaaa", "true")},
			Info{Version: "v0.0.0-20261204200000-99c54bc0e1f2+dirty", Revision: "99c54bc0e1f2aaaa", Modified: true, GoVersion: "go1.26.1", Platform: "linux/arm64"}},
		{"stamp wins", stamps{version: "v1.2.0\n"}, &debug.BuildInfo{GoVersion: "go1.26.1",
			Main: debug.Module{Version: "v0.0.0-20261204200000-99c54bc0e1f2"}, Settings: vcs("99c54bc0e1f2aaaa", "false")},
			Info{Version: "v1.2.0", Revision: "99c54bc0e1f2aaaa", GoVersion: "go1.26.1", Platform: "linux/arm64"}},
		{"stamped revision wins (a worktree build has no VCS stamp)", stamps{"v1.2.0-dirty", "0123abcd", "true"},
			&debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}},
			Info{Version: "v1.2.0-dirty", Revision: "0123abcd", Modified: true, GoVersion: "go1.26.1", Platform: "linux/arm64"}},
		{"stamped revision over the go command's", stamps{"", "0123abcd", "false"},
			&debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}, Settings: vcs("99c54bc0e1f2aaaa", "true")},
			Info{Version: "devel", Revision: "0123abcd", GoVersion: "go1.26.1", Platform: "linux/arm64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fromBuild(tt.stamp, tt.bi, "linux/arm64"); got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.2.0", Revision: "99c54bc", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"}
	if got, want := i.String(), "pgfront v1.2.0 (revision 99c54bc, modified; go1.26.8 linux/amd64)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	i.Modified = false
	if got := i.String(); strings.Contains(got, "modified") {
		t.Errorf("clean build says modified: %q", got)
	}
}

func TestGetNeverEmpty(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Revision == "" || i.GoVersion == "" || i.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Get() = %+v", i)
	}
}
