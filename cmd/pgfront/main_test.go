package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckReportsWarningsAndErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(`
timeouts:
  client_fin: 0s
clusters:
  c:
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw: {listen: 127.0.0.1:6432, cluster: c, role: primary}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := checkCmd([]string{"-c", good}, &out); err != nil {
		t.Fatalf("check of a valid config failed: %v", err)
	}
	if !strings.Contains(out.String(), "WARNING:") || !strings.Contains(out.String(), "client_fin") || !strings.Contains(out.String(), "OK") {
		t.Fatalf("check output lacks the client_fin warning or OK:\n%s", out.String())
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`
clusters:
  c:
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw:
    listen: 127.0.0.1:6432
    cluster: c
    role: primary
    timeouts:
      client_idel: 5s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := checkCmd([]string{"-c", bad}, &out)
	if err == nil {
		t.Fatal("check accepted an unknown key")
	}
	if !strings.Contains(err.Error(), "bad.yaml:12") || !strings.Contains(err.Error(), "client_idel") {
		t.Fatalf("error lacks file:line or the key: %v", err)
	}
}

// TestDemo runs the README's first command as a user would: build, run `pgfront demo`, connect
// with the printed connection strings, Ctrl-C, and check that everything is cleaned up.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := pgtest.FindBinDir(); err != nil {
		t.Fatal(err)
	}
	bin := buildPgfront(t)
	cmd := exec.Command(bin, "demo", "-rw", "127.0.0.1:0", "-ro", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	psql := regexp.MustCompile(`psql "([^"]+)"`)
	metricsURL := regexp.MustCompile(`metrics:\s+(http://\S+/metrics)`)
	var dsns []string
	var metrics string
	var dirs []string
	timeout := time.After(90 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited early; stderr:\n%s", stderr.String())
			}
			if m := psql.FindStringSubmatch(l); m != nil {
				dsns = append(dsns, m[1])
			}
			if m := metricsURL.FindStringSubmatch(l); m != nil {
				metrics = m[1]
			}
			if i := strings.Index(l, "/tmp/"); i >= 0 {
				dirs = append(dirs, filepath.Dir(strings.Fields(l[i:])[0]))
			}
			done = strings.Contains(l, "Press Ctrl-C")
		case <-timeout:
			t.Fatalf("demo did not get ready; stderr:\n%s", stderr.String())
		}
	}
	if len(dsns) != 2 {
		t.Fatalf("want 2 psql lines, got %q", dsns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wantRecovery := []bool{false, true} // rw then ro
	for i, dsn := range dsns {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connecting with the printed line %q: %v", dsn, err)
		}
		var inRecovery bool
		if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			t.Fatal(err)
		}
		_ = c.Close(ctx)
		if inRecovery != wantRecovery[i] {
			t.Fatalf("route %d: pg_is_in_recovery = %v, want %v", i, inRecovery, wantRecovery[i])
		}
	}

	// The printed metrics address serves the sessions just made.
	if metrics == "" {
		t.Fatal("demo printed no metrics address")
	}
	resp, err := http.Get(metrics)
	if err != nil {
		t.Fatalf("GET %s: %v", metrics, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// pgx's default sslmode=prefer makes two connections: the first is answered 'N'.
	if resp.StatusCode != 200 || !regexp.MustCompile(`(?m)^pgfront_sessions_total\{route="rw"\} [1-9]`).Match(body) {
		t.Fatalf("GET %s: %s\n%s", metrics, resp.Status, body)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		killed = true
		if err != nil {
			t.Fatalf("demo exit: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop after Ctrl-C")
	}
	for range lines {
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("temp dir %s still exists after Ctrl-C (%v)", d, err)
		}
	}
	if len(dirs) == 0 {
		t.Fatal("demo printed no log paths")
	}
}

// TestCheckLoadsFiles: check also loads what the config points at (TLS certificates, admin
// tokens) and names the file that fails, and says plainly what passthrough gives up.
func TestCheckLoadsFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tls.yaml")
	missing := filepath.Join(dir, "missing.crt")
	if err := os.WriteFile(path, []byte(`
admin: {listen: "127.0.0.1:0"}
clusters:
  c:
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
    tls: {mode: terminate, cert_file: `+missing+`, key_file: `+missing+`}
  ro:
    listen: 127.0.0.1:0
    cluster: c
    role: any
    tls: {mode: passthrough}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := checkCmd([]string{"-c", path}, &out)
	if err == nil || !strings.Contains(err.Error(), "missing.crt") || !strings.Contains(err.Error(), "routes.rw.tls") {
		t.Fatalf("check with a missing certificate: %v", err)
	}
	if !strings.Contains(out.String(), "passthrough relays TLS sessions blind") {
		t.Fatalf("check did not warn about passthrough:\n%s", out.String())
	}
}
