package main

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// makeIn runs make in the repository root and returns its output; it skips where make is
// not installed.
func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed (Debian package make)")
	}
	cmd := exec.Command("make", append([]string{"-C", repoRoot(t), "--no-print-directory"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gitOutput runs git in the repository root; "" when git or the checkout is missing.
func gitOutput(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// TestMakeReleasePlan: `make release` builds static (no cgo), trimmed linux/amd64 and
// linux/arm64 binaries with the version stamped, then their checksums; the version defaults
// to git describe.
func TestMakeReleasePlan(t *testing.T) {
	dist := t.TempDir()
	plan := makeIn(t, "-n", "release", "VERSION=v1.2.3", "DIST="+dist)
	for _, arch := range []string{"amd64", "arm64"} {
		var line string
		for _, l := range strings.Split(strings.ReplaceAll(plan, "\\\n", ""), "\n") {
			if strings.Contains(l, "GOARCH="+arch) {
				line = l
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "GOOS=linux", "build -trimpath", "-X github.com/pgfront/pgfront/internal/version.stamped=v1.2.3 ",
			"-o " + dist + "/pgfront-linux-" + arch + " ./cmd/pgfront"} {
			if !strings.Contains(line, want) {
				t.Errorf("linux/%s build %q lacks %q\nplan:\n%s", arch, line, want, plan)
			}
		}
	}
	if !strings.Contains(plan, "sha256sum pgfront-linux-amd64 pgfront-linux-arm64 > SHA256SUMS") {
		t.Errorf("no checksums in the plan:\n%s", plan)
	}
	if describe := gitOutput(t, "describe", "--tags", "--always", "--dirty"); describe != "" {
		plan := makeIn(t, "-n", "release", "DIST="+dist)
		if !strings.Contains(plan, "version.stamped="+describe+" ") {
			t.Errorf("the default version is not git describe's %q:\n%s", describe, plan)
		}
	}
	// make test is the README's test command.
	if got := strings.TrimSpace(makeIn(t, "-n", "test")); got != "go test ./..." {
		t.Errorf("make -n test = %q", got)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil || !strings.Contains(string(readme), "\ngo test ./...   ") {
		t.Errorf("README's test command is not `go test ./...` (%v)", err)
	}
}

// TestMakeReleaseBuilds builds this machine's release binary and runs it: the version, the
// revision and the modified flag are stamped, the binary is static, and SHA256SUMS matches.
func TestMakeReleaseBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a release binary")
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("release binaries are linux/amd64 and linux/arm64; this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	dist := t.TempDir()
	makeIn(t, "release", "PLATFORMS=linux/"+runtime.GOARCH, "VERSION=v0.0.0-maketest", "DIST="+dist)
	bin := filepath.Join(dist, "pgfront-linux-"+runtime.GOARCH)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	want := "pgfront v0.0.0-maketest ("
	if rev := gitOutput(t, "rev-parse", "HEAD"); rev != "" {
		want += "revision " + rev
	}
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), runtime.Version()+" linux/"+runtime.GOARCH) {
		t.Errorf("version: %q, want %q...", out, want)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the release binary is dynamically linked (has an ELF interpreter)")
		}
	}

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got, want := string(sums), hex.EncodeToString(sum[:])+"  pgfront-linux-"+runtime.GOARCH+"\n"; got != want {
		t.Errorf("SHA256SUMS = %q, want %q", got, want)
	}
}
