package app_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestRouteMaxConnQueue: with route maxconn 2, a third client waits in the queue while both
// slots are held and is admitted as soon as one of them closes.
func TestRouteMaxConnQueue(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "maxconn: 2\ntimeouts:\n  queue: 10s", ""))
	c1 := e.pgconnect("rw")
	e.pgconnect("rw")

	third := startConnect(t, e.dsn("rw"))
	waitFor(t, 5*time.Second, "the third client to queue", func() bool { return e.value("pgfront_queued_sessions", "route", "rw") == 1 })
	select {
	case <-third.done:
		t.Fatalf("third client finished its login while both slots were held: err=%v", third.err)
	case <-time.After(700 * time.Millisecond):
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	select {
	case <-third.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("third client not admitted within 5s of a slot freeing (timeouts.queue is 10s)")
	}
	if third.err != nil {
		t.Fatalf("third client: %v", third.err)
	}
	if d := time.Since(released); d > 3*time.Second {
		t.Fatalf("third client admitted %s after the release, want at once", d)
	}
	if v := pgQuery(t, third.conn, "SELECT 7"); v != "7" {
		t.Fatalf("third client's query: %q", v)
	}

	// Its end record keeps the time it spent queued.
	if err := third.conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rec := e.ended(third.local)
	if rec.QueuedSeconds < 0.7 || rec.Cause != "client_terminate" {
		t.Fatalf("third session's end: %+v, want client_terminate after >= 700ms queued", rec)
	}
}

// TestQueueTimeout: a client still waiting after timeouts.queue gets FATAL 53300, and the
// refusal is logged.
func TestQueueTimeout(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "maxconn: 1\ntimeouts:\n  queue: 500ms", ""))
	c1 := e.pgconnect("rw")

	start := time.Now()
	r := connectNow(e.dsn("rw"))
	elapsed := time.Since(start)
	if r.conn != nil {
		t.Fatalf("second client admitted past route maxconn 1")
	}
	wantRefused(t, r.err, "53300")
	if elapsed < 400*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("refused after %s, want ~500ms (timeouts.queue)", elapsed)
	}
	wantRefusal(t, e, r.local, "queue_timeout", "no free connection slot within timeouts.queue (500ms)")

	// The admitted session was never disturbed.
	if v := pgQuery(t, c1, "SELECT 1"); v != "1" {
		t.Fatalf("first client: %q", v)
	}
}

// TestQueuedClientLeaves: a queued client that disconnects leaves the queue at once, so its
// queue place (max_queue: 1) and the next free slot go to a later client.
func TestQueuedClientLeaves(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "maxconn: 1\ntimeouts:\n  queue: 10s", "max_queue: 1"))
	c1 := e.pgconnect("rw")

	// A raw client sends its StartupMessage and waits: pgfront must queue it, saying nothing.
	dead, _ := wireDial(t, e, "rw")
	if _, err := dead.Write(wireStartup(t, 3<<16)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the raw client to be accepted", func() bool { return e.app.Frontend().Sessions() == 2 })
	_ = dead.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	if n, err := dead.Read(b[:]); n != 0 || !isTimeout(err) {
		t.Fatalf("queued client got %d bytes (%v), want silence while it waits", n, err)
	}
	deadAddr := dead.LocalAddr().String()
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	waitFor(t, 3*time.Second, "the closed client to leave (timeouts.queue is 10s)", func() bool {
		return e.app.Frontend().Sessions() == 1
	})
	if d := time.Since(closed); d > 2*time.Second {
		t.Fatalf("closed client left the queue after %s, want at once", d)
	}
	if rec := e.ended(deadAddr); rec.Cause != "client_eof" || rec.Error != "client left the queue" {
		t.Fatalf("queued client's end: %+v", rec)
	}

	// The queue (max 1) has room again: a later client queues rather than being refused,
	// and takes the slot as soon as it frees.
	later := startConnect(t, e.dsn("rw"))
	waitFor(t, 5*time.Second, "the later client to be accepted", func() bool { return e.app.Frontend().Sessions() == 2 })
	select {
	case <-later.done:
		t.Fatalf("later client finished while the slot was held: %v", later.err)
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-later.done:
	case <-time.After(3 * time.Second):
		t.Fatalf("later client not admitted within 3s of the slot freeing")
	}
	if later.err != nil {
		t.Fatalf("later client: %v", later.err)
	}
	if v := pgQuery(t, later.conn, "SELECT 1"); v != "1" {
		t.Fatalf("later client: %q", v)
	}
}

// TestGlobalAndServerMaxConn: the top-level maxconn and a server's maxconn count sessions of
// every route, so a client of route b is refused while route a holds the only slot.
func TestGlobalAndServerMaxConn(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	for _, tc := range []struct{ name, top, server string }{
		{"global", "maxconn: 1", ""},
		{"server", "", "maxconn: 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, twoRouteConfig(p, tc.top, tc.server, "timeouts:\n  queue: 300ms"))
			a := pgconnectTo(t, e.dsn("a"))

			r := connectNow(e.dsn("b"))
			if r.conn != nil {
				t.Fatalf("route b admitted a second session past %s maxconn 1", tc.name)
			}
			wantRefused(t, r.err, "53300")
			wantRefusal(t, e, r.local, "queue_timeout", "no free connection slot within timeouts.queue (300ms)")

			// Once route a's session is gone, route b gets the slot.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "route a's session to end", func() bool { return e.app.Frontend().Sessions() == 0 })
			b := pgconnectTo(t, e.dsn("b"))
			if v := pgQuery(t, b, "SELECT 1"); v != "1" {
				t.Fatalf("route b: %q", v)
			}
		})
	}
}

// TestQueueOff: with the queue off nobody waits: a client over maxconn is refused at once
// with 53300 and cause maxconn ("refused at once: limit reached and the queue full or off").
// The queue is off with max_queue: 0 (although timeouts.queue is long), and with
// timeouts.queue: 0 ("0 = refuse at once").
func TestQueueOff(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	for _, tc := range []struct{ name, route, top string }{
		{"max_queue 0", "maxconn: 1\ntimeouts:\n  queue: 10s", "max_queue: 0"},
		{"timeouts.queue 0", "maxconn: 1\ntimeouts:\n  queue: 0s", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, oneServerConfig(p, tc.route, tc.top))
			e.pgconnect("rw")

			start := time.Now()
			r := connectNow(e.dsn("rw"))
			if r.conn != nil {
				_ = r.conn.Close(context.Background())
				t.Fatalf("second client admitted past route maxconn 1")
			}
			wantRefused(t, r.err, "53300")
			if d := time.Since(start); d > time.Second {
				t.Fatalf("refused after %s, want at once", d)
			}
			wantRefusal(t, e, r.local, "maxconn", "no free connection slot")
		})
	}
}

// twoRouteConfig: routes a and b on one cluster with one primary; top-level, server and
// per-route extra YAML.
func twoRouteConfig(p *pgtest.Server, top, serverExtra, routeExtra string) string {
	return fmt.Sprintf(`
%s
clusters:
  c:
    servers:
      - name: pg
        address: %s
        role: primary
%s
routes:
  a:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
%s
  b:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
%s
`, top, p.Addr(), indent(serverExtra, "        "), indent(routeExtra, "    "), indent(routeExtra, "    "))
}

// connectResult is a pgconn.Connect outcome with the client's local address (the "client"
// of pgfront's log lines), known even when the connection was refused.
type connectResult struct {
	conn  *pgconn.PgConn
	local string
	err   error
}

// connectNow connects with pgconn and records the local address of the TCP connection.
// The caller closes conn.
func connectNow(dsn string) connectResult {
	return connectCtx(context.Background(), dsn)
}

func connectCtx(ctx context.Context, dsn string) connectResult {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return connectResult{err: err}
	}
	var local string
	d := &net.Dialer{}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			local = c.LocalAddr().String()
		}
		return c, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	return connectResult{conn: c, local: local, err: err}
}

// pendingConnect is a pgconn.Connect running in the background; its fields are valid once
// done is closed.
type pendingConnect struct {
	done chan struct{}
	connectResult
}

// startConnect connects in the background. At the end of the test the attempt is cancelled,
// waited for, and its connection closed.
func startConnect(t *testing.T, dsn string) *pendingConnect {
	ctx, cancel := context.WithCancel(context.Background())
	pc := &pendingConnect{done: make(chan struct{})}
	go func() {
		defer close(pc.done)
		pc.connectResult = connectCtx(ctx, dsn)
	}()
	t.Cleanup(func() {
		cancel()
		<-pc.done
		if pc.conn != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			_ = pc.conn.Close(cctx)
		}
	})
	return pc
}

// pgconnectTo connects to dsn, failing the test on error; closed at the end of the test.
func pgconnectTo(t *testing.T, dsn string) *pgconn.PgConn {
	t.Helper()
	r := connectNow(dsn)
	if r.err != nil {
		t.Fatalf("connecting to %s: %v", dsn, r.err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.conn.Close(ctx)
	})
	return r.conn
}

// pgQuery runs sql and returns the first column of the first row.
func pgQuery(t *testing.T, c *pgconn.PgConn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	if len(res.Rows) == 0 || len(res.Rows[0]) == 0 {
		return ""
	}
	return string(res.Rows[0][0])
}

// wantRefused checks that a connection attempt failed with a FATAL error of code.
func wantRefused(t *testing.T, err error, code string) {
	t.Helper()
	if got := sqlstate(err); got != code {
		t.Fatalf("connect error %v: SQLSTATE %q, want %s", err, got, code)
	}
	if !strings.Contains(err.Error(), "FATAL") {
		t.Fatalf("connect error %v: want severity FATAL", err)
	}
}

// wantRefusal checks a refused client's end record (cause, and an error in the config's words
// that starts with why) and its one log line: the session line, at WARN.
func wantRefusal(t *testing.T, e *env, client, cause, why string) {
	t.Helper()
	rec := e.ended(client)
	if rec.Cause != cause || !rec.Refused || !strings.HasPrefix(rec.Error, why) || strings.Contains(rec.Error, "deadline") {
		t.Fatalf("refusal of %s: %+v, want cause %s and an error starting %q", client, rec, cause, why)
	}
	lines := e.logs.Lines(" client=" + client + " ")
	if len(lines) != 1 || logAttr(lines[0], "level") != "WARN" || logAttr(lines[0], "msg") != "session ended" ||
		logAttr(lines[0], "refused") != "true" || logAttr(lines[0], "cause") != cause {
		t.Fatalf("refusal of %s: want one WARN session line, got:\n%s", client, strings.Join(lines, "\n"))
	}
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
