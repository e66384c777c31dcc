package app_test

// The end-to-end test environment: real PostgreSQL servers from pgtest, a real pgfront App
// built from a YAML config, real TCP on loopback.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/logtest"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects the proxy's log lines for assertions.
type syncBuffer = logtest.Buffer

// env is one pgfront in front of real servers.
type env struct {
	t    *testing.T
	app  *app.App
	logs *syncBuffer
	// clientTLS, when set, makes the raw test clients (hcDial) use TLS (SSLRequest, then
	// this config), and dsn ask for sslmode=require.
	clientTLS *tls.Config
}

// startProxy builds and starts pgfront from yamlText (route listens should use 127.0.0.1:0)
// and stops it at the end of the test, checking that no session is left.
func startProxy(t *testing.T, yamlText string) *env {
	t.Helper()
	return startProxyWith(t, yamlText, nil)
}

// startProxyWith is startProxy with beforeStart (if not nil) called on the App between New
// and Start.
func startProxyWith(t *testing.T, yamlText string, beforeStart func(*app.App)) *env {
	t.Helper()
	cfg := parseTestConfig(t, yamlText)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if beforeStart != nil {
		beforeStart(a)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, app: a, logs: logs}
	t.Cleanup(func() {
		a.Close()
		if t.Failed() {
			t.Logf("pgfront log:\n%s", logs.String())
		}
	})
	return e
}

// parseTestConfig parses a test's config; without an admin section the admin listener takes
// a free port, not the default one: tests (and other packages' tests) run side by side.
func parseTestConfig(t *testing.T, yamlText string) *config.Config {
	t.Helper()
	yamlText = yamlWithAdmin(yamlText)
	cfg, _, err := config.Parse([]byte(yamlText), "test.yaml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yamlText)
	}
	return cfg
}

// yamlWithAdmin adds an admin listener on a free port to a config that names none.
func yamlWithAdmin(yamlText string) string {
	if !strings.Contains(yamlText, "\nadmin:") {
		yamlText += "\nadmin:\n  listen: 127.0.0.1:0\n"
	}
	return yamlText
}

// oneServerConfig is a config with one route "rw" on one primary, plus extra YAML appended
// under the route (indented 4 spaces) and top-level extra.
func oneServerConfig(p *pgtest.Server, routeExtra, topExtra string) string {
	return fmt.Sprintf(`
%s
clusters:
  c:
    servers:
      - name: pg
        address: %s
        role: primary
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
%s
`, topExtra, p.Addr(), indent(routeExtra, "    "))
}

func indent(s, prefix string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// addr is the route's bound address.
func (e *env) addr(route string) *net.TCPAddr { return e.app.Addr(route).(*net.TCPAddr) }

// dsn is a connection string to a route.
func (e *env) dsn(route string) string {
	a := e.addr(route)
	sslmode := "disable"
	if e.clientTLS != nil {
		sslmode = "require"
	}
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=%s connect_timeout=10", a.IP, a.Port, sslmode)
}

// connect opens a pgx connection through a route, closed at the end of the test.
func (e *env) connect(route string) *pgx.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dsn(route))
	if err != nil {
		e.t.Fatalf("connecting through route %s: %v", route, err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// pgconnect opens a low-level pgconn connection through a route.
func (e *env) pgconnect(route string) *pgconn.PgConn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, e.dsn(route))
	if err != nil {
		e.t.Fatalf("connecting through route %s: %v", route, err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ended waits (5s) for the end record of the connection whose client address is client: the
// admin API's recent list, which holds the record each session's log line is written from.
func (e *env) ended(client string) admin.EndedSession {
	e.t.Helper()
	var rec admin.EndedSession
	waitFor(e.t, 5*time.Second, "the end record of client "+client, func() bool {
		var ok bool
		rec, ok = e.endedNow(client)
		return ok
	})
	return rec
}

// endedNow is the end record of client's connection, if it has ended.
func (e *env) endedNow(client string) (admin.EndedSession, bool) {
	e.t.Helper()
	for _, r := range e.recent() {
		if r.Client == client {
			return r, true
		}
	}
	return admin.EndedSession{}, false
}

// recent is the admin API's list of recently ended sessions, newest first.
func (e *env) recent() []admin.EndedSession {
	e.t.Helper()
	var ov admin.Overview
	if code := e.api("GET", "/api/v1/overview", "", nil, &ov); code != 200 {
		e.t.Fatalf("GET overview: %d", code)
	}
	return ov.Recent
}

// countEnded is how many recently ended sessions match.
func (e *env) countEnded(match func(admin.EndedSession) bool) int {
	e.t.Helper()
	n := 0
	for _, r := range e.recent() {
		if match(r) {
			n++
		}
	}
	return n
}

// proxySockets returns the sockets pgfront (this process) holds for one session: the client
// side is the socket whose local address is the route and whose remote address is the test
// client's local address; the server side is the socket whose local port the backend reported
// as its client port (inet_client_port()).
func proxySockets(t *testing.T, clientLocal netip.AddrPort, serverSideLocalPort uint16) []netx.Socket {
	t.Helper()
	socks, err := netx.OwnSockets()
	if err != nil {
		t.Fatalf("reading own sockets: %v", err)
	}
	var out []netx.Socket
	for _, s := range socks {
		if s.State == netx.TCPListen {
			continue
		}
		if s.Remote == clientLocal || (serverSideLocalPort != 0 && s.Local.Port() == serverSideLocalPort) {
			out = append(out, s)
		}
	}
	return out
}

// backendAlive reports whether a backend with pid exists on server p.
func backendAlive(t *testing.T, p *pgtest.Server, pid uint32) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid))
	if err != nil {
		t.Fatalf("querying pg_stat_activity: %v", err)
	}
	return v != "0"
}

// sessionInfo returns the backend pid and the backend's view of its client port (pgfront's
// server-side local port) of a connection through pgfront.
func sessionInfo(t *testing.T, c *pgconn.PgConn) (pid uint32, serverSidePort uint16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := c.ExecParams(ctx, "SELECT pg_backend_pid(), inet_client_port()", nil, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("session info: %v", res.Err)
	}
	var p, port int
	fmt.Sscan(string(res.Rows[0][0]), &p)
	fmt.Sscan(string(res.Rows[0][1]), &port)
	return uint32(p), uint16(port)
}

// localAddrPort is a conn's local address as netip.
func localAddrPort(c net.Conn) netip.AddrPort {
	return c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// startClientTLS asks for TLS on raw with an SSLRequest and completes the handshake.
func startClientTLS(t *testing.T, raw net.Conn, cfg *tls.Config) *tls.Conn {
	t.Helper()
	if _, err := raw.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil { // SSLRequest
		t.Fatal(err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(raw, answer[:]); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v; want S", answer[:], err)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake with pgfront: %v", err)
	}
	return tc
}
