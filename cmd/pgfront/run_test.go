package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/handover"
	"github.com/pgfront/pgfront/internal/version"
)

// TestRunFirstLogLine: the first line `pgfront run` logs names the version, the revision,
// the Go release and the config file, before anything else (config warnings included).
func TestRunFirstLogLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := pgfrontBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pgfront.yaml")
	// client_fin: 0s draws a lint warning, which must come after the first line.
	if err := os.WriteFile(cfg, []byte("log: {format: json}\nadmin: {listen: 127.0.0.1:0}\ntimeouts: {client_fin: 0s}\n"+minimalConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Env = append(os.Environ(), "PGFRONT_HANDOVER_SOCKET=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("pgfront run exited early")
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			return rec
		case <-time.After(30 * time.Second):
			t.Fatal("pgfront run logged nothing")
		}
		return nil
	}
	first := next()
	if first["msg"] != "pgfront starting" || first["level"] != "INFO" || first["config"] != cfg {
		t.Errorf("first line %v", first)
	}
	// The line says what `pgfront version` says.
	str := func(k string) string { s, _ := first[k].(string); return s }
	modified, _ := first["modified"].(bool)
	logged := version.Info{Version: str("version"), Revision: str("revision"), Modified: modified, GoVersion: str("go"), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != logged.String() {
		t.Errorf("first line says %q, pgfront version %q", logged, got)
	}
	if second := next(); second["level"] != "WARN" {
		t.Errorf("second line is not the config warning: %v", second)
	}
	// SIGTERM once the signals are handled: the admin listener serves from Run.
	for rec := next(); rec["msg"] != "admin listener serving"; rec = next() {
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pgfront run after SIGTERM: %v", err)
	}
}

// TestHandoverSocket: PGFRONT_HANDOVER_SOCKET names the socket, "off" turns hand-over off (the
// container image sets it), unset is the default path for the config.
func TestHandoverSocket(t *testing.T) {
	def, err := handover.DefaultPath("/etc/pgfront/pgfront.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for env, want := range map[string]string{"off": "", "/run/x.sock": "/run/x.sock", "": def} {
		if got, err := handoverSocket(env, "/etc/pgfront/pgfront.yaml"); err != nil || got != want {
			t.Errorf("PGFRONT_HANDOVER_SOCKET=%q: %q %v, want %q", env, got, err, want)
		}
	}
}
