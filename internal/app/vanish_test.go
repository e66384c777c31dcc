package app_test

// Vanished peers, end to end: a client (or a server) that disappears without FIN or RST — a
// Kubernetes pod whose network is torn down before its sockets close. Each case puts the peer
// in a network namespace of the test's own (netnstest), brings its session into a state (idle,
// idle in a transaction, running a query, receiving a large result), cuts the link and checks
// that pgfront gives the peer up within the route's tcp bound, names the cause
// (client_unreachable / server_unreachable) in the session's record, the metric and the log
// line, and leaves nothing behind: for a vanished client its backend is cancelled and gone,
// its transaction rolled back; the client of a vanished server is told FATAL 08006.
//
// The routes use short tcp settings (given up 2s after the peer was last heard) so the tests
// run fast; config.TestTCPDefaultsGiveUpWithin15s checks that the defaults add up to 15s at
// most, with the same model (TCPSide.VanishBound) these tests hold the kernel to.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/netnstest"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// vanishTCP gives a silent peer up 2s after it was last heard (keepalive probes at 1s and 2s).
const vanishTCP = "{keepalive_idle: 1s, keepalive_interval: 1s, keepalive_count: 2, user_timeout: 2s}"

// vanishSlack is what the tests allow beyond the tcp bound for pgfront to end the session
// (cancel, drain, goodbye) and for a loaded machine: generous, the bound is the point.
const vanishSlack = 5 * time.Second

// vanishCase is one state a session can be in when its peer vanishes.
type vanishCase struct {
	name string
	// enter brings c's session through e into the state, on server p.
	enter func(t *testing.T, e *env, p *pgtest.Server, c *hcClient)
}

// bigResult is a query whose result takes far longer to send than any test runs, streamed from
// its first row (a set-returning function in FROM would be materialized first).
const bigResult = "SELECT repeat('x', 1000), generate_series(1, 100000000)"

var vanishCases = []vanishCase{
	{"idle", func(t *testing.T, e *env, _ *pgtest.Server, _ *hcClient) { waitParked(t, e) }},
	{"idle_in_transaction", func(t *testing.T, e *env, _ *pgtest.Server, c *hcClient) {
		c.query("BEGIN")
		c.query("INSERT INTO vanish VALUES ('uncommitted')")
		c.query("SELECT pg_advisory_xact_lock(13)")
		waitParked(t, e)
	}},
	{"running_query", func(t *testing.T, _ *env, p *pgtest.Server, c *hcClient) {
		c.send(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
		hcWaitSleeping(t, p, c.pid)
	}},
	{"receiving_result", nil}, // per side: see the tests
}

// waitParked waits until the session is idle long enough to be parked (its sockets watched by
// the parker, no goroutine reading them): where an idle pool's sessions spend their time.
func waitParked(t *testing.T, e *env) {
	t.Helper()
	waitFor(t, 10*time.Second, "the idle session parked", func() bool { return e.app.Frontend().Parked() == 1 })
}

// vanishSetup creates the table the transactions write to.
func vanishSetup(t *testing.T) *pgtest.Server {
	t.Helper()
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Exec(ctx, "CREATE TABLE vanish (note text)"); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVanishedClient: the client is in the namespace; pgfront listens on the test's end of the
// link and has the short tcp bound on its client side (a route override).
func TestVanishedClient(t *testing.T) {
	p := vanishSetup(t)
	for _, tc := range vanishCases {
		t.Run(tc.name, func(t *testing.T) {
			n := netnstest.New(t)
			e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    servers:
      - {name: pg, address: %s, role: primary}
routes:
  rw:
    listen: %s
    cluster: c
    role: primary
    tcp:
      client: %s
`, p.Addr(), netip.AddrPortFrom(n.Host, 0), vanishTCP))
			bound, ok := e.app.Config().Routes["rw"].TCP.Client.VanishBound()
			if !ok {
				t.Fatal("the test's tcp settings have no bound")
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			raw, err := n.Dial(ctx, e.addr("rw").String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = raw.SetLinger(0); _ = raw.Close() })
			c := hcLogin(t, e, raw)
			if tc.enter != nil {
				tc.enter(t, e, p, c)
			} else {
				// The client asks for a large result and stops reading it: pgfront's writes to
				// it block, so pgfront stops reading the server, whose backend then waits to
				// write.
				c.send(&pgproto3.Query{String: bigResult})
				waitFor(t, 20*time.Second, "the backend blocked writing the result", func() bool {
					return backendWaitEvent(t, p, c.pid) == "ClientWrite"
				})
			}

			cut := time.Now()
			n.Cut()
			ended := e.waitEnded(c.local().String(), bound+vanishSlack+5*time.Second)
			if ended.Cause != "client_unreachable" {
				t.Fatalf("session ended with cause %s, want client_unreachable", ended.Cause)
			}
			if d := ended.Ended.Sub(cut); d > bound+vanishSlack {
				t.Errorf("session ended %s after the client vanished; the route's tcp bound is %s", d, bound)
			}
			t.Logf("session ended %s after the cut (bound %s)", ended.Ended.Sub(cut).Round(time.Millisecond), bound)
			hcWaitBackendGone(t, p, c.pid, cut, bound+vanishSlack)
			hcWaitNoSockets(t, c, cut, bound+vanishSlack)
			vanishRecorded(t, e, c.local(), "client_unreachable")

			// The transaction was rolled back: its row is not there, its lock is free.
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for sql, want := range map[string]string{
				"SELECT count(*) FROM vanish":                               "0",
				"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'": "0",
			} {
				if v, err := p.QueryValue(ctx, sql); err != nil || v != want {
					t.Errorf("%s = %q, %v; want %s", sql, v, err, want)
				}
			}
		})
	}
}

// TestVanishedServer: the server is behind the link, reached through a forwarder inside the
// namespace; pgfront has the short tcp bound on its server side. Health checks are off (check:
// none): with them, pgfront would mark the server down after a few failed checks and end its
// sessions as server_down first; here the TCP bound alone must do it. The backend itself stays
// connected to the forwarder: it is on the far side of the vanished link, as it would be on a
// vanished server.
func TestVanishedServer(t *testing.T) {
	p := vanishSetup(t)
	for _, tc := range vanishCases {
		t.Run(tc.name, func(t *testing.T) {
			n := netnstest.New(t)
			fwd := n.Forward(t, p.Addr())
			e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: none}
    servers:
      - {name: pg, address: %s, role: primary}
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
    tcp:
      server: %s
`, fwd.Addr(), vanishTCP))
			bound, ok := e.app.Config().Routes["rw"].TCP.Server.VanishBound()
			if !ok {
				t.Fatal("the test's tcp settings have no bound")
			}
			c := hcDialVia(t, e, "rw")

			var reading chan error
			if tc.enter != nil {
				tc.enter(t, e, p, c)
			} else {
				// The client reads a large result as fast as it comes; the server vanishes in
				// the middle of it.
				c.send(&pgproto3.Query{String: bigResult})
				got := make(chan int64, 1)
				reading = make(chan error, 1)
				go readAll(c.conn, got, reading)
				select {
				case <-got:
				case err := <-reading:
					t.Fatalf("reading the result: %v", err)
				case <-time.After(20 * time.Second):
					t.Fatal("no result received")
				}
			}

			cut := time.Now()
			n.Cut()
			ended := e.waitEnded(c.local().String(), bound+vanishSlack+5*time.Second)
			if ended.Cause != "server_unreachable" {
				t.Fatalf("session ended with cause %s, want server_unreachable", ended.Cause)
			}
			if d := ended.Ended.Sub(cut); d > bound+vanishSlack {
				t.Errorf("session ended %s after the server vanished; the route's tcp bound is %s", d, bound)
			}
			t.Logf("session ended %s after the cut (bound %s)", ended.Ended.Sub(cut).Round(time.Millisecond), bound)

			if reading == nil {
				msgs := c.readToEOF()
				if len(msgs) != 1 || msgs[0].typ != 'E' {
					t.Fatalf("client read %v after the server vanished, want one ErrorResponse then EOF", msgs)
				}
				er := msgs[0].errorResponse(t)
				if er.Severity != "FATAL" || er.Code != "08006" || !strings.Contains(er.Message, "server unreachable") {
					t.Fatalf("client told %s %s %q, want FATAL 08006 naming the unreachable server", er.Severity, er.Code, er.Message)
				}
			} else {
				// Mid-result the stream is not at a message boundary: the client sees its
				// connection closed (with pgfront's FATAL only if the cut fell between two
				// messages).
				select {
				case <-reading:
				case <-time.After(bound + vanishSlack):
					t.Fatal("the client's connection was not closed")
				}
			}
			hcWaitNone(t, cut, bound+vanishSlack, func() []netx.Socket {
				return serverSideSockets(t, c.local(), fwd.Addr())
			})
			vanishRecorded(t, e, c.local(), "server_unreachable")
		})
	}
}

// hcDialVia is hcDial for a route whose server pgfront reaches through a forwarder: the
// backend's view of its client port is the forwarder's, so the session's sockets are not
// checked here (serverSideSockets finds them).
func hcDialVia(t *testing.T, e *env, route string) *hcClient {
	t.Helper()
	raw, err := net.DialTCP("tcp", nil, e.addr(route))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return hcLogin(t, e, raw)
}

// serverSideSockets are pgfront's sockets of the session whose client is client and whose
// server is at server.
func serverSideSockets(t *testing.T, client netip.AddrPort, server string) []netx.Socket {
	t.Helper()
	socks, err := netx.OwnSockets()
	if err != nil {
		t.Fatal(err)
	}
	srv := netip.MustParseAddrPort(server)
	var out []netx.Socket
	for _, s := range socks {
		if s.State != netx.TCPListen && (s.Remote == client || s.Remote == srv) {
			out = append(out, s)
		}
	}
	return hcDistinct(out)
}

// readAll reads c until it fails, sending the byte count on got once more than a megabyte came,
// and the error that ended it on done.
func readAll(c net.Conn, got chan<- int64, done chan<- error) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		if n < 1<<20 && n+int64(k) >= 1<<20 {
			got <- n + int64(k)
		}
		n += int64(k)
		if err != nil {
			done <- err
			return
		}
	}
}

// backendWaitEvent is the wait event of backend pid on p ("" when none).
func backendWaitEvent(t *testing.T, p *pgtest.Server, pid uint32) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = %d", pid))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitEnded waits for the record of the ended session whose client is client, as the stats
// page gets it from the admin API.
func (e *env) waitEnded(client string, within time.Duration) admin.EndedSession {
	e.t.Helper()
	var found admin.EndedSession
	waitFor(e.t, within, "the session's end record of client "+client, func() bool {
		var ov admin.Overview
		if code := e.api("GET", "/api/v1/overview", "", nil, &ov); code != 200 {
			e.t.Fatalf("GET /api/v1/overview: %d", code)
		}
		for _, r := range ov.Recent {
			if r.Client == client {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// vanishRecorded checks the cause everywhere an operator looks: the per-cause count of the
// stats page, the metric and the session's log line.
func vanishRecorded(t *testing.T, e *env, client netip.AddrPort, cause string) {
	t.Helper()
	var ov admin.Overview
	e.api("GET", "/api/v1/overview", "", nil, &ov)
	if ov.EndedByCause[cause] != 1 {
		t.Errorf("stats page: ended_by_cause %v, want %s: 1", ov.EndedByCause, cause)
	}
	if v := e.value("pgfront_sessions_ended_total", "route", "rw", "cause", cause); v != 1 {
		t.Errorf("pgfront_sessions_ended_total{cause=%q} = %g, want 1", cause, v)
	}
	hcWantCause(t, e, client, cause)
}
