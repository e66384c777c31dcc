package app_test

// Reload end to end: the config file is rewritten and re-read while sessions run on real
// PostgreSQL servers; every key applies in place, unchanged servers keep their health state,
// and an invalid file changes nothing.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// fileEnv is a pgfront started from a config file the test rewrites.
type fileEnv struct {
	*env
	path string
}

// startProxyFile writes yamlText to a file and starts pgfront from it.
func startProxyFile(t *testing.T, yamlText string) *fileEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pgfront.yaml")
	fe := &fileEnv{path: path}
	fe.write(t, yamlText)
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yamlText)
	}
	logs := &syncBuffer{}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	fe.env = &env{t: t, app: a, logs: logs}
	t.Cleanup(func() {
		a.Close()
		if t.Failed() {
			t.Logf("pgfront log:\n%s", logs.String())
		}
	})
	return fe
}

func (fe *fileEnv) write(t *testing.T, yamlText string) {
	t.Helper()
	if !strings.Contains(yamlText, "\nadmin:") {
		yamlText += "\nadmin:\n  listen: 127.0.0.1:0\n"
	}
	if err := os.WriteFile(fe.path, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the config and reloads it, failing the test on error.
func (fe *fileEnv) reload(t *testing.T, yamlText string) []string {
	t.Helper()
	fe.write(t, yamlText)
	changes, err := fe.app.Reload()
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	return changes
}

// reloadConfig is one primary p (and optionally replica r) with fast postgres checks, and the
// routes given.
func reloadConfig(p, r *pgtest.Server, routes, top string) string {
	servers := fmt.Sprintf("      - {name: p, address: %s}\n", p.Addr())
	if r != nil {
		servers += fmt.Sprintf("      - {name: r, address: %s}\n", r.Addr())
	}
	return fmt.Sprintf(`%s
shutdown: {grace: 30s}
clusters:
  c:
    health: %s
    servers:
%sroutes:
%s
`, top, fastHealth, servers, indent(routes, "  "))
}

// transitions is how many health transitions the metrics counted for server c/name.
func transitions(t *testing.T, e *env, name string) float64 {
	t.Helper()
	n, err := testutil.GatherAndCount(e.app.Registry(), "pgfront_server_transitions_total")
	if err != nil || n == 0 {
		t.Fatalf("gathering transitions: %d series, %v", n, err)
	}
	mfs, _ := e.app.Registry().Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "pgfront_server_transitions_total" {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "server" && l.GetValue() == name {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// servers lists the servers as the admin API shows them.
func servers(t *testing.T, e *env) []admin.Server {
	t.Helper()
	var out []admin.Server
	if code := e.api("GET", "/api/v1/servers", "", nil, &out); code != 200 {
		t.Fatalf("GET /api/v1/servers: %d", code)
	}
	return out
}

// serverIs reports whether server name is listed up with role.
func serverIs(t *testing.T, e *env, name, role string) bool {
	for _, s := range servers(t, e) {
		if s.Name == name && s.Up && s.Role == role {
			return true
		}
	}
	return false
}

// configHash is the running config's hash, from GET /api/v1/config.
func configHashOf(t *testing.T, e *env) string {
	t.Helper()
	var out struct {
		Hash string `json:"hash"`
	}
	if code := e.api("GET", "/api/v1/config", "", nil, &out); code != 200 || out.Hash == "" {
		t.Fatalf("GET /api/v1/config: %d %+v", code, out)
	}
	return out.Hash
}

// reloadsCounted is pgfront_config_reloads_total{result}.
func reloadsCounted(t *testing.T, e *env, result string) float64 {
	t.Helper()
	mfs, err := e.app.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgfront_config_reloads_total" {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no pgfront_config_reloads_total{result=%q}", result)
	return 0
}

// sessionGone waits until the session whose backend is pid is no longer listed by pgfront,
// without a byte on it (a query would count as activity), then returns the error its next
// query gets: pgfront's FATAL.
func sessionGone(t *testing.T, ctx context.Context, e *env, c *pgconn.PgConn, what string) error {
	t.Helper()
	waitFor(t, 15*time.Second, what, func() bool {
		var list []admin.Session
		if code := e.api("GET", "/api/v1/sessions", "", nil, &list); code != 200 {
			t.Fatalf("GET /api/v1/sessions: %d", code)
		}
		for _, s := range list {
			if s.ID == sessionID(t, e, c) {
				return false
			}
		}
		return true
	})
	_, err := c.Exec(ctx, "SELECT 1").ReadAll()
	return err
}

// sessionIDs remembers which pgfront session each test connection is, by its local port.
var sessionIDs sync.Map

// sessionID is pgfront's id of the session of c (looked up once, by c's local address).
func sessionID(t *testing.T, e *env, c *pgconn.PgConn) uint64 {
	t.Helper()
	local := c.Conn().LocalAddr().String()
	if id, ok := sessionIDs.Load(local); ok {
		return id.(uint64)
	}
	var list []admin.Session
	e.api("GET", "/api/v1/sessions", "", nil, &list)
	for _, s := range list {
		if s.Client == local {
			sessionIDs.Store(local, s.ID)
			return s.ID
		}
	}
	t.Fatalf("no pgfront session for client %s", local)
	return 0
}

// value runs sql on c and returns the first column of its one row.
func value(t *testing.T, ctx context.Context, c *pgconn.PgConn, sql string) string {
	t.Helper()
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	return string(res.Rows[0][0])
}

// TestReloadRoutes: a reload adds a route (its listener serves at once), changes a route's
// timeouts (new sessions get them, open ones keep theirs), and removes a route (its listener
// closes; its session in a transaction finishes it and then ends with 57P01). The server's
// health state is never reset.
func TestReloadRoutes(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rw := "rw: {listen: 127.0.0.1:0, cluster: c, role: primary}"
	e := startProxyFile(t, reloadConfig(p, nil, rw, ""))
	waitFor(t, 10*time.Second, "p to be seen as primary", func() bool { return serverIs(t, e.env, "p", "primary") })
	before := transitions(t, e.env, "p")
	old := mustDial(t, ctx, e.env, "rw")

	// Add route "batch" and give rw a 1s client_idle.
	changes := e.reload(t, reloadConfig(p, nil, "rw: {listen: 127.0.0.1:0, cluster: c, role: primary, timeouts: {client_idle: 1s}}\n"+
		"batch: {listen: 127.0.0.1:0, cluster: c, role: primary}", ""))
	if !strings.Contains(strings.Join(changes, "\n"), "route batch: added") {
		t.Errorf("changes %q do not name the new route", changes)
	}
	batch := mustDial(t, ctx, e.env, "batch")
	sessionID(t, e.env, batch)
	if _, err := batch.Exec(ctx, "BEGIN; CREATE TABLE reload_batch (v int); INSERT INTO reload_batch VALUES (1)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	// A new rw session has the 1s idle bound; the one opened before keeps the default.
	fresh := mustDial(t, ctx, e.env, "rw")
	sessionID(t, e.env, fresh)
	freshErr := sessionGone(t, ctx, e.env, fresh, "the new rw session to be ended by its 1s client_idle")
	if got := sqlstate(freshErr); got != "57P05" {
		t.Errorf("new session ended with %q (%v), want 57P05", got, freshErr)
	}
	if _, err := old.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Errorf("the session opened before the reload lost its old idle bound: %v", err)
	}

	// Remove "batch": its listener closes, its transaction still commits, then it ends.
	batchAddr := e.addr("batch").String()
	changes = e.reload(t, reloadConfig(p, nil, rw, ""))
	if !strings.Contains(strings.Join(changes, "\n"), "route batch: removed") {
		t.Errorf("changes %q do not name the removed route", changes)
	}
	if c, err := net.DialTimeout("tcp", batchAddr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("the removed route's listener %s still accepts", batchAddr)
	}
	if _, err := batch.Exec(ctx, "INSERT INTO reload_batch VALUES (2); COMMIT").ReadAll(); err != nil {
		t.Fatalf("a removed route's transaction was cut: %v", err)
	}
	endErr := sessionGone(t, ctx, e.env, batch, "the removed route's session to end after its transaction")
	if got := sqlstate(endErr); got != "57P01" && !batch.IsClosed() {
		t.Errorf("removed route's session: %q (%v), want 57P01", got, endErr)
	}
	if v, err := p.QueryValue(ctx, "SELECT count(*) FROM reload_batch"); err != nil || v != "2" {
		t.Errorf("rows committed by the removed route's session: %q, %v; want 2", v, err)
	}
	if after := transitions(t, e.env, "p"); after != before {
		t.Errorf("server transitions went from %v to %v across reloads", before, after)
	}
}

// TestReloadServers: a reload adds a server (its checks start and a replica route uses it) and
// removes it again (its session ends at its next transaction boundary with 57P01).
func TestReloadServers(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	routes := "rw: {listen: 127.0.0.1:0, cluster: c, role: primary}\nro: {listen: 127.0.0.1:0, cluster: c, role: replica, fallback: none}"
	e := startProxyFile(t, reloadConfig(p, nil, routes, ""))
	waitFor(t, 10*time.Second, "p to be seen as primary", func() bool { return serverIs(t, e.env, "p", "primary") })
	before := transitions(t, e.env, "p")

	e.reload(t, reloadConfig(p, r, routes, ""))
	waitFor(t, 10*time.Second, "the added server to be checked as a replica", func() bool { return serverIs(t, e.env, "r", "replica") })
	ro := mustDial(t, ctx, e.env, "ro")
	sessionID(t, e.env, ro)
	if v := value(t, ctx, ro, "SELECT pg_is_in_recovery()"); v != "t" {
		t.Fatalf("replica route session is on a server in recovery %q", v)
	}
	if _, err := ro.Exec(ctx, "BEGIN; SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}

	changes := e.reload(t, reloadConfig(p, nil, routes, ""))
	if !strings.Contains(strings.Join(changes, "\n"), "server c/r") {
		t.Errorf("changes %q do not name the removed server", changes)
	}
	// In a transaction: it goes on until the boundary.
	if _, err := ro.Exec(ctx, "SELECT 2; COMMIT").ReadAll(); err != nil {
		t.Fatalf("a removed server's transaction was cut: %v", err)
	}
	endErr := sessionGone(t, ctx, e.env, ro, "the removed server's session to end")
	if got := sqlstate(endErr); got != "57P01" && !ro.IsClosed() {
		t.Errorf("removed server's session: %q (%v), want 57P01", got, endErr)
	}
	if got := servers(t, e.env); len(got) != 1 || got[0].Name != "p" {
		t.Errorf("servers after removal: %+v", got)
	}
	if after := transitions(t, e.env, "p"); after != before {
		t.Errorf("adding and removing a server changed the transitions of the unchanged one: %v to %v", before, after)
	}
}

// TestReloadLimits: a lower maxconn refuses new clients and never ends open sessions; a higher
// one admits again.
func TestReloadLimits(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rw := "rw: {listen: 127.0.0.1:0, cluster: c, role: primary}"
	e := startProxyFile(t, reloadConfig(p, nil, rw, "maxconn: 10\nmax_queue: 0"))
	a := mustDial(t, ctx, e.env, "rw")
	b := mustDial(t, ctx, e.env, "rw")
	e.reload(t, reloadConfig(p, nil, rw, "maxconn: 1\nmax_queue: 0"))
	_, err := dialRoute(ctx, e.env, "rw")
	if got := sqlstate(err); got != "53300" {
		t.Fatalf("new client under a lowered maxconn: %q (%v), want 53300", got, err)
	}
	for i, c := range []*pgconn.PgConn{a, b} {
		if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
			t.Errorf("session %d opened before maxconn was lowered: %v", i, err)
		}
	}
	e.reload(t, reloadConfig(p, nil, rw, "maxconn: 10\nmax_queue: 0"))
	mustDial(t, ctx, e.env, "rw")
}

// TestReloadInvalid: a file with a problem changes nothing: the error names file and line, the
// routes keep serving with their settings, and the failure is counted. A listen address that
// cannot be bound fails the same way.
func TestReloadInvalid(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rw := "rw: {listen: 127.0.0.1:0, cluster: c, role: primary}"
	good := reloadConfig(p, nil, rw, "")
	e := startProxyFile(t, good)
	hash := configHashOf(t, e.env)
	addr := e.addr("rw").String()

	e.write(t, good+"\nbogus_key: 1\n")
	_, err := e.app.Reload()
	if err == nil || !strings.Contains(err.Error(), e.path+":") || !strings.Contains(err.Error(), "bogus_key") {
		t.Fatalf("invalid reload: %v; want file:line and the key", err)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e.write(t, reloadConfig(p, nil, "rw: {listen: 127.0.0.1:0, cluster: c, role: primary, timeouts: {client_idle: 1s}}\nclash: {listen: "+busy.Addr().String()+", cluster: c, role: primary}", ""))
	if _, err := e.app.Reload(); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("reload onto a busy address: %v; want an error naming it", err)
	}
	if configHashOf(t, e.env) != hash || e.app.Addr("clash") != nil || e.addr("rw").String() != addr {
		t.Fatalf("a failed reload changed the running config")
	}
	if d := e.app.Config().Routes["rw"].Timeouts.ClientIdle.D(); d == time.Second {
		t.Fatalf("a failed reload's client_idle applied")
	}
	mustDial(t, ctx, e.env, "rw")
	if v := reloadsCounted(t, e.env, "failure"); v != 2 {
		t.Errorf("failed reloads counted %v, want 2", v)
	}
	if v := reloadsCounted(t, e.env, "success"); v != 0 {
		t.Errorf("successful reloads counted %v, want 0", v)
	}
}

// TestReloadMovesListener: a route whose listen address changes binds the new address before
// it closes the old one; its open session goes on.
func TestReloadMovesListener(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := startProxyFile(t, reloadConfig(p, nil, "rw: {listen: 127.0.0.1:0, cluster: c, role: primary}", ""))
	oldAddr := e.addr("rw").String()
	open := mustDial(t, ctx, e.env, "rw")
	changes := e.reload(t, reloadConfig(p, nil, "rw: {listen: 127.0.0.2:0, cluster: c, role: primary}", ""))
	if !strings.Contains(strings.Join(changes, "\n"), "route rw: moved") {
		t.Errorf("changes %q do not say the route moved", changes)
	}
	if got := e.addr("rw").IP.String(); got != "127.0.0.2" {
		t.Fatalf("route rw listens on %s after the move, want 127.0.0.2", e.addr("rw"))
	}
	mustDial(t, ctx, e.env, "rw")
	if c, err := net.DialTimeout("tcp", oldAddr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("the old address %s still accepts", oldAddr)
	}
	if v := value(t, ctx, open, "SELECT 1"); v != "1" {
		t.Errorf("the session opened on the old address: %q", v)
	}
}
