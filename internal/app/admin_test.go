package app_test

// The admin API end to end: a real pgfront in front of a real PostgreSQL, driven over HTTP
// (and through `pgfront ctl`), with the effects checked from the clients' side.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/ctl"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// api calls the admin API: method, path (under /api/v1), an optional JSON body and bearer
// token. It returns the status and decodes a 2xx body into out when out is not nil.
func (e *env) api(method, path, token string, body any, out any) int {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+e.app.AdminAddr().String()+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// sessionOf finds the API's view of the session whose client is c.
func (e *env) sessionOf(c *pgx.Conn) admin.Session {
	e.t.Helper()
	local := c.PgConn().Conn().LocalAddr().String()
	var list []admin.Session
	if code := e.api("GET", "/api/v1/sessions", "", nil, &list); code != 200 {
		e.t.Fatalf("GET sessions: %d", code)
	}
	for _, s := range list {
		if s.Client == local {
			return s
		}
	}
	e.t.Fatalf("no session for client %s in %+v", local, list)
	return admin.Session{}
}

// wantPgError checks that err is a PostgreSQL error with code whose message contains msg.
func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code || !strings.Contains(pe.Message, msg) {
		t.Fatalf("got error %v, want SQLSTATE %s with %q", err, code, msg)
	}
}

func TestAdminAPI(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	cfg := strings.Replace(oneServerConfig(p, "timeouts:\n  queue: 1s\n  failover_wait: 1s\n", ""), "    servers:",
		"    health:\n      interval: 500ms\n      fast_interval: 100ms\n      timeout: 400ms\n      password: s3cret-pw\n    servers:", 1)
	e := startProxy(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Listing.
	var routes []admin.Route
	if code := e.api("GET", "/api/v1/routes", "", nil, &routes); code != 200 || len(routes) != 1 ||
		routes[0].Name != "rw" || routes[0].Listen != e.addr("rw").String() || routes[0].Role != "primary" {
		t.Fatalf("GET routes: %d %+v", code, routes)
	}
	var servers []admin.Server
	waitFor(t, 10*time.Second, "server pg checked", func() bool {
		e.api("GET", "/api/v1/servers", "", nil, &servers)
		return len(servers) == 1 && servers[0].Up && !servers[0].LastCheck.IsZero()
	})
	if s := servers[0]; s.Cluster != "c" || s.Name != "pg" || s.Role != "primary" || s.Admin != "ready" || s.Address != p.Addr() {
		t.Fatalf("GET servers: %+v", servers)
	}

	c1 := e.connect("rw")
	if _, err := c1.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	s1 := e.sessionOf(c1)
	if s1.Route != "rw" || s1.Server != "c/pg" || s1.User != "postgres" || s1.Database != "postgres" ||
		s1.State != "idle" || s1.TxStatus != "I" || s1.BytesFromClient == 0 || s1.BytesFromServer == 0 {
		t.Fatalf("session of c1: %+v", s1)
	}

	// The running config, without its secret.
	var raw json.RawMessage
	if code := e.api("GET", "/api/v1/config", "", nil, &raw); code != 200 {
		t.Fatalf("GET config: %d", code)
	}
	if strings.Contains(string(raw), "s3cret-pw") || !strings.Contains(string(raw), `"password":"\u003credacted\u003e"`) && !strings.Contains(string(raw), `"password":"<redacted>"`) {
		t.Fatalf("config not redacted: %s", raw)
	}

	// Kill: the client hears FATAL 57P01 naming an administrator; the audit log says who.
	if code := e.api("POST", fmt.Sprintf("/api/v1/sessions/%d/kill", s1.ID), "", nil, nil); code != 200 {
		t.Fatalf("kill: %d", code)
	}
	_, err := c1.Exec(ctx, "SELECT 1")
	wantPgError(t, err, "57P01", "administrator")
	hcWantCause(t, e, addrPortOf(t, c1.PgConn().Conn().LocalAddr().String()), "admin_kill")
	if !strings.Contains(e.logs.String(), `msg="admin action"`) {
		t.Errorf("no audit line for the kill:\n%s", e.logs.String())
	}
	if code := e.api("POST", "/api/v1/sessions/999999/kill", "", nil, nil); code != 404 {
		t.Errorf("kill of an unknown session: %d, want 404", code)
	}

	// Drain: no new sessions; a session in a transaction finishes it, then ends; an idle one
	// ends once its client has been quiet for a moment (at once if it already was).
	inTx, idle := e.connect("rw"), e.connect("rw")
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "drain"}, nil); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	if pe, _ := waitFatal(t, idle.PgConn(), 5*time.Second); pe.Code != "57P01" {
		t.Fatalf("idle session ended with %v, want 57P01", pe)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("a draining session's transaction was cut: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit while draining: %v", err)
	}
	if pe, _ := waitFatal(t, inTx.PgConn(), 5*time.Second); pe.Code != "57P01" {
		t.Fatalf("session ended with %v after its commit, want 57P01", pe)
	}
	_, err = pgx.Connect(ctx, e.dsn("rw"))
	wantPgError(t, err, "57P03", "no primary server available")
	e.api("GET", "/api/v1/servers", "", nil, &servers)
	if servers[0].Admin != "drain" {
		t.Errorf("server admin state %q, want drain", servers[0].Admin)
	}

	// Ready again: new sessions get in.
	if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "ready"}, nil); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	c4 := e.connect("rw")
	tx4, err := c4.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Maint: even a session inside a transaction ends now, with a clean error.
	if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "maint"}, nil); code != 200 {
		t.Fatalf("maint: %d", code)
	}
	_, err = tx4.Exec(ctx, "SELECT 1")
	wantPgError(t, err, "57P01", "maintenance")

	// Bad requests.
	if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "off"}, nil); code != 400 {
		t.Errorf("bad state: %d, want 400", code)
	}
	if code := e.api("POST", "/api/v1/servers/c/nope/state", "", map[string]string{"state": "ready"}, nil); code != 404 {
		t.Errorf("unknown server: %d, want 404", code)
	}
	if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "ready"}, nil); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	hcNewClientWorks(t, e, "rw")
}

func TestAdminAuth(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	dir := t.TempDir()
	const readTok, adminTok = "read-token-0123456789", "admin-token-9876543210"
	if err := os.WriteFile(filepath.Join(dir, "read"), []byte(readTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGFRONT_TEST_ADMIN_TOKEN", adminTok)
	e := startProxy(t, oneServerConfig(p, "", fmt.Sprintf(`
admin:
  listen: 127.0.0.1:0
  read_token_file: %s
  admin_token_env: PGFRONT_TEST_ADMIN_TOKEN
`, filepath.Join(dir, "read"))))
	c := e.connect("rw")
	local := c.PgConn().Conn().LocalAddr().String()

	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/sessions", "", 401},
		{"GET", "/api/v1/sessions", "wrong", 401},
		{"GET", "/api/v1/sessions", readTok + "x", 401},
		{"GET", "/api/v1/sessions", readTok, 200},
		{"GET", "/api/v1/sessions", adminTok, 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", readTok, 200},
		{"GET", "/healthz", "", 200},
		{"POST", "/api/v1/sessions/999999/kill", "", 401},
		{"POST", "/api/v1/sessions/999999/kill", readTok, 403},
		{"POST", "/api/v1/sessions/999999/kill", adminTok, 404},
		{"POST", "/api/v1/servers/c/pg/state", readTok, 403},
	} {
		if got := e.api(tc.method, tc.path, tc.token, map[string]string{"state": "ready"}, nil); got != tc.want {
			t.Errorf("%s %s with token %q: %d, want %d", tc.method, tc.path, tc.token, got, tc.want)
		}
	}
	var list []admin.Session
	e.api("GET", "/api/v1/sessions", readTok, nil, &list)
	var id uint64
	for _, s := range list {
		if s.Client == local {
			id = s.ID
		}
	}
	if id == 0 {
		t.Fatalf("session of %s not listed: %+v", local, list)
	}
	if got := e.api("POST", fmt.Sprintf("/api/v1/sessions/%d/kill", id), adminTok, nil, nil); got != 200 {
		t.Fatalf("kill with the admin token: %d", got)
	}
	_, err := c.Exec(context.Background(), "SELECT 1")
	wantPgError(t, err, "57P01", "administrator")
	logs := e.logs.String()
	if strings.Contains(logs, readTok) || strings.Contains(logs, adminTok) {
		t.Fatalf("a token reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, `msg="admin action"`) || !strings.Contains(logs, "scope=admin") {
		t.Errorf("audit line missing or without scope:\n%s", logs)
	}
}

func addrPortOf(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestCtl drives a real pgfront with `pgfront ctl`.
func TestCtl(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts: {failover_wait: 1s}", ""))
	c := e.connect("rw")
	s := e.sessionOf(c)
	addr := "http://" + e.app.AdminAddr().String()
	run := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := ctl.Run(append([]string{"-addr", addr}, args...), ctl.Options{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }})
		return out.String() + errOut.String(), code
	}
	out, code := run("sessions")
	if code != 0 || !strings.Contains(out, fmt.Sprint(s.ID)) || !strings.Contains(out, s.Client) || !strings.Contains(out, "c/pg") {
		t.Fatalf("ctl sessions (%d):\n%s", code, out)
	}
	if out, code := run("servers"); code != 0 || !strings.Contains(out, "c/pg") || !strings.Contains(out, "primary") {
		t.Fatalf("ctl servers (%d):\n%s", code, out)
	}
	if out, code := run("kill", fmt.Sprint(s.ID)); code != 0 {
		t.Fatalf("ctl kill (%d):\n%s", code, out)
	}
	_, err := c.Exec(context.Background(), "SELECT 1")
	wantPgError(t, err, "57P01", "administrator")
	waitFor(t, 5*time.Second, "the killed session to leave the list", func() bool {
		out, _ := run("sessions")
		return !strings.Contains(out, s.Client)
	})
	if out, code := run("kill", fmt.Sprint(s.ID)); code != 1 || !strings.Contains(out, "404") {
		t.Fatalf("ctl kill of an ended session (%d):\n%s", code, out)
	}
	if out, code := run("server", "c/pg", "maint"); code != 0 {
		t.Fatalf("ctl server maint (%d):\n%s", code, out)
	}
	_, err = pgx.Connect(context.Background(), e.dsn("rw")+" connect_timeout=15")
	wantPgError(t, err, "57P03", "")
	if out, code := run("server", "c/pg", "ready"); code != 0 {
		t.Fatalf("ctl server ready (%d):\n%s", code, out)
	}
	hcNewClientWorks(t, e, "rw")
}
