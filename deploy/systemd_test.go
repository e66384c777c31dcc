package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/config"
)

const unitPath = "systemd/pgfront.service"

// TestSystemdUnit: the shipped unit passes systemd-analyze verify, reloads with SIGHUP, keeps
// the hand-over socket in a runtime directory and lets a drain run its whole shutdown.grace.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{"Type=notify", "NotifyAccess=all", "ExecReload=/bin/kill -HUP $MAINPID",
		"RuntimeDirectory=pgfront", "NoNewPrivileges=yes", "ProtectSystem=strict", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"} {
		if !strings.Contains(text, "\n"+want) {
			t.Errorf("%s lacks %q", unitPath, want)
		}
	}
	m := regexp.MustCompile(`\nTimeoutStopSec=(\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("%s sets no TimeoutStopSec", unitPath)
	}
	stop, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", m[1], err)
	}
	def, _, err := config.Parse([]byte("clusters: {c: {servers: [{name: s, address: \"127.0.0.1:1\", role: primary}]}}\n"+
		"routes: {rw: {listen: \"127.0.0.1:0\", cluster: c, role: primary}}\n"), "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if grace := def.Shutdown.Grace.D(); stop <= grace {
		t.Errorf("TimeoutStopSec %v is not above the default shutdown.grace %v", stop, grace)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found (Debian package systemd): unit not verified")
	}
	// verify wants the binary to exist: point the unit at an executable.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pgfront.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "/usr/local/bin/pgfront", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
