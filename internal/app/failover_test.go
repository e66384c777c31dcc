package app_test

// Failover end to end: real streaming replication from pgtest, pgfront's postgres health check
// learning roles and lag, sessions leaving a server that leaves their role, clients waiting
// through a failover window, the in-band standby fence, and a SCRAM monitoring user.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// fastHealth is the health section of these tests: a change is seen within a few hundred ms.
const fastHealth = `{check: postgres, interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1}`

// pairConfig is a cluster "c" of p and r (named "p" and "r") with the given health section and
// no static roles, extra cluster keys, and routes (YAML under `routes:`).
func pairConfig(p, r *pgtest.Server, health, clusterExtra, routes string) string {
	extra := indent(clusterExtra, "    ")
	if extra != "" {
		extra += "\n"
	}
	return fmt.Sprintf(`
clusters:
  c:
    health: %s
%s    servers:
      - {name: p, address: %s}
      - {name: r, address: %s}
routes:
%s
`, health, extra, p.Addr(), r.Addr(), indent(routes, "  "))
}

// routeDSN is a connection string to a route without libpq's connect_timeout, so a client can
// wait in pgfront's queue as long as the route's timeouts.failover_wait allows.
func routeDSN(e *env, route string) string {
	a := e.addr(route)
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", a.IP, a.Port)
}

// dialRoute opens a pgconn connection through a route; the caller closes it.
func dialRoute(ctx context.Context, e *env, route string) (*pgconn.PgConn, error) {
	return pgconn.Connect(ctx, routeDSN(e, route))
}

// mustDial opens a connection through a route, closed at the end of the test.
func mustDial(t *testing.T, ctx context.Context, e *env, route string) *pgconn.PgConn {
	t.Helper()
	c, err := dialRoute(ctx, e, route)
	if err != nil {
		t.Fatalf("connecting through route %s: %v", route, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// placement is where a session runs: the server's port and whether it is in recovery.
type placement struct {
	port       int
	inRecovery bool
}

func (p placement) String() string {
	return fmt.Sprintf("port %d (in recovery: %v)", p.port, p.inRecovery)
}

// where asks the server behind c where the session runs.
func where(ctx context.Context, c *pgconn.PgConn) (placement, error) {
	res := c.ExecParams(ctx, "SELECT inet_server_port(), pg_is_in_recovery()", nil, nil, nil, nil).Read()
	if res.Err != nil {
		return placement{}, res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		return placement{}, fmt.Errorf("unexpected result %q", res.Rows)
	}
	var pl placement
	if _, err := fmt.Sscan(string(res.Rows[0][0]), &pl.port); err != nil {
		return placement{}, fmt.Errorf("parsing port %q: %w", res.Rows[0][0], err)
	}
	pl.inRecovery = string(res.Rows[0][1]) == "t"
	return pl, nil
}

// expectOn fails unless c's session runs on port with the given recovery state.
func expectOn(t *testing.T, ctx context.Context, c *pgconn.PgConn, port int, inRecovery bool) {
	t.Helper()
	pl, err := where(ctx, c)
	if err != nil {
		t.Fatalf("asking where the session runs: %v", err)
	}
	if want := (placement{port: port, inRecovery: inRecovery}); pl != want {
		t.Fatalf("session runs on %v, want %v", pl, want)
	}
}

// expectRefused connects through route and fails unless pgfront refuses with FATAL code. It
// returns the error and how long the refusal took.
func expectRefused(t *testing.T, ctx context.Context, e *env, route, code string) (*pgconn.PgError, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := dialRoute(ctx, e, route)
	took := time.Since(start)
	if err == nil {
		pl, _ := where(ctx, c)
		_ = c.Close(ctx)
		t.Fatalf("route %s served a session on %v, want FATAL %s", route, pl, code)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code || pgErr.Severity != "FATAL" {
		t.Fatalf("route %s: %v, want FATAL %s", route, err, code)
	}
	return pgErr, took
}

// waitFatal waits for the FATAL pgfront (or the server) sends to an idle session and returns it
// with the time it arrived.
func waitFatal(t *testing.T, c *pgconn.PgConn, within time.Duration) (*pgconn.PgError, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		msg, err := c.ReceiveMessage(ctx)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Severity == "FATAL" {
				return pgErr, time.Now()
			}
			t.Fatalf("waiting %v for a FATAL on an idle session: %v", within, err)
		}
		t.Logf("idle session received %T", msg) // a NoticeResponse or ParameterStatus: keep waiting
	}
}

// logLines returns the lines of pgfront's log that contain every one of subs.
func logLines(e *env, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(l, s) {
				ok = false
				break
			}
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// endCause returns the cause in the end record of client c's session, or "" if that session
// has not ended yet.
func endCause(e *env, c *pgconn.PgConn) string {
	rec, _ := e.endedNow(c.Conn().LocalAddr().String())
	return rec.Cause
}

// waitEndCause waits for the session of client c to end and returns the cause.
func waitEndCause(t *testing.T, e *env, c *pgconn.PgConn) string {
	t.Helper()
	var cause string
	waitFor(t, 5*time.Second, "the session's end record", func() bool {
		cause = endCause(e, c)
		return cause != ""
	})
	return cause
}

// waitStateLog waits for pgfront to log a state change of server (of cluster c) with every
// attribute given ("up=false", "role=primary", ...).
func waitStateLog(t *testing.T, e *env, within time.Duration, server string, attrs ...string) {
	t.Helper()
	subs := append([]string{"server state changed", "server=c/" + server + " "}, attrs...)
	waitFor(t, within, fmt.Sprintf("pgfront to log server %s with %v", server, attrs), func() bool {
		return len(logLines(e, subs...)) > 0
	})
}

// waitSessions waits until pgfront holds n sessions (accepted and not yet closed).
func waitSessions(t *testing.T, e *env, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d sessions in pgfront", n), func() bool {
		return e.app.Frontend().Sessions() == n
	})
}

// TestFailoverLearnsRoles: no server has a role in the config; the postgres check learns them,
// so the primary route reaches the primary and the replica route the replica.
func TestFailoverLearnsRoles(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, pairConfig(p, r, fastHealth, "", `
rw: {listen: "127.0.0.1:0", cluster: c, role: primary, balance: first, timeouts: {failover_wait: 10s}}
ro: {listen: "127.0.0.1:0", cluster: c, role: replica, fallback: none, timeouts: {failover_wait: 10s}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Both servers start with an unknown role, so neither route may use either until a check
	// has said; repeated connects show the placement is steady, not one lucky pick.
	for range 3 {
		expectOn(t, ctx, mustDial(t, ctx, e, "rw"), p.Port, false)
		expectOn(t, ctx, mustDial(t, ctx, e, "ro"), r.Port, true)
	}
	waitStateLog(t, e, time.Second, "p", "role=primary", "up=true")
	waitStateLog(t, e, time.Second, "r", "role=replica", "up=true")
}

// TestFailoverPromote: the primary stops and the replica is promoted. A client that connected
// to the primary route during the window waits and is served by the promoted server; the
// replica route's session on the promoted server ends with FATAL 57P01, cause role_changed.
func TestFailoverPromote(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, pairConfig(p, r, fastHealth, "", `
rw: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 20s}}
ro: {listen: "127.0.0.1:0", cluster: c, role: replica, fallback: none, timeouts: {failover_wait: 20s}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, p.Port, false)
	_ = rw.Close(ctx)
	ro := mustDial(t, ctx, e, "ro")
	expectOn(t, ctx, ro, r.Port, true)
	waitSessions(t, e, 1)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitStateLog(t, e, 5*time.Second, "p", "up=false")
	t.Logf("primary stopped; pgfront marked it down after %v", time.Since(stopped).Round(time.Millisecond))
	// The replica's session is not disturbed by its primary going away.
	expectOn(t, ctx, ro, r.Port, true)

	// A client of the primary route in the window: no primary at all, so it waits.
	type served struct {
		at  time.Time
		pl  placement
		err error
	}
	waiter := make(chan served, 1)
	go func() {
		c, err := dialRoute(ctx, e, "rw")
		if err != nil {
			waiter <- served{err: fmt.Errorf("connecting: %w", err)}
			return
		}
		defer c.Close(context.Background())
		_, err = c.Exec(ctx, "CREATE TABLE failover_t (i int); INSERT INTO failover_t VALUES (1)").ReadAll()
		at := time.Now()
		pl, werr := where(ctx, c)
		waiter <- served{at: at, pl: pl, err: errors.Join(err, werr)}
	}()
	waitSessions(t, e, 2) // the ro session and the waiting client
	select {
	case w := <-waiter:
		t.Fatalf("the rw client did not wait for a primary: %+v", w)
	default:
	}

	promoteStart := time.Now()
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	t.Logf("pg_promote took %v", promoted.Sub(promoteStart).Round(time.Millisecond))

	var w served
	select {
	case w = <-waiter:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting rw client was not served within 20s of the promotion")
	}
	if w.err != nil {
		t.Fatalf("the rw client waiting since before the promotion: %v", w.err)
	}
	if want := (placement{port: r.Port}); w.pl != want {
		t.Fatalf("the waiting rw client wrote on %v, want the promoted server %v", w.pl, want)
	}
	if d := w.at.Sub(promoted); d > 5*time.Second {
		t.Fatalf("the waiting rw client was served %v after the promotion, want within 5s", d)
	}
	t.Logf("client waiting since before the promotion wrote %v after pg_promote returned (%v after the primary stopped)",
		w.at.Sub(promoted).Round(time.Millisecond), w.at.Sub(stopped).Round(time.Millisecond))

	// The replica route's session was on the promoted server: it is told to reconnect.
	pgErr, _ := waitFatal(t, ro, 5*time.Second)
	if pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, "changed role") {
		t.Fatalf("ro session on the promoted server ended with %v, want FATAL 57P01 (changed role)", pgErr)
	}
	if cause := waitEndCause(t, e, ro); cause != "role_changed" {
		t.Fatalf("ro session ended with cause %s, want role_changed", cause)
	}

	// New primary-route clients reach the promoted server and write.
	c := mustDial(t, ctx, e, "rw")
	if _, err := c.Exec(ctx, "INSERT INTO failover_t VALUES (2)").ReadAll(); err != nil {
		t.Fatalf("writing through rw after the promotion: %v", err)
	}
	expectOn(t, ctx, c, r.Port, false)
}

// TestFailoverConnectBeforeDownSeen: a primary-route client that arrives after the primary
// stopped but before a check noticed is sent to the dead primary; its connect is refused. No
// other primary exists yet: like any client in the failover window it should wait
// (timeouts.failover_wait: 20s) and be served once the promotion is seen, not be refused with 08006.
func TestFailoverConnectBeforeDownSeen(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	// Checks 2s apart without jitter: the client arrives well before the next check of p.
	e := startProxy(t, pairConfig(p, r, `{check: postgres, interval: 2s, fast_interval: 100ms, timeout: 1s, rise: 1, fall: 1, jitter: 0}`, "", `
rw: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 20s}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, p.Port, false)
	_ = rw.Close(ctx)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() {
		c, err := dialRoute(ctx, e, "rw")
		if err != nil {
			result <- err
			return
		}
		defer c.Close(context.Background())
		pl, err := where(ctx, c)
		if err == nil && pl != (placement{port: r.Port}) {
			err = fmt.Errorf("served on %v, want the promoted server on port %d", pl, r.Port)
		}
		result <- err
	}()
	// A check may see the primary down before the client arrives (a slow machine): then the
	// client never tries p and the window this test is about was missed.
	waitFor(t, 5*time.Second, "the client's connect to the stopped primary to fail, or a check to see it down", func() bool {
		return len(logLines(e, "server connect failed", "route=rw", "server=c/p ")) > 0 || strings.Contains(e.logs.String(), "up=false")
	})
	log := e.logs.String()
	if down, failed := strings.Index(log, "up=false"), strings.Index(log, "server connect failed"); down >= 0 && (failed < 0 || down < failed) {
		t.Skip("a check saw the primary down before the client arrived: the window this test is about was missed")
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("a client that arrived before pgfront saw the primary down: %v; want it to wait for the promotion", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the client was not served within 20s of the promotion")
	}
}

// TestFailoverNoPrimary: with the only primary stopped, a primary-route client waits
// timeouts.failover_wait (1s) for one to appear, then gets FATAL 57P03, cause no_server.
func TestFailoverNoPrimary(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: %s
    servers:
      - {name: p, address: %s}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 1s}}
`, fastHealth, p.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitStateLog(t, e, 5*time.Second, "p", "role=primary", "up=true")
	expectOn(t, ctx, mustDial(t, ctx, e, "rw"), p.Port, false)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStateLog(t, e, 5*time.Second, "p", "up=false")
	pgErr, took := expectRefused(t, ctx, e, "rw", "57P03")
	if !strings.Contains(pgErr.Message, `no primary server available for route "rw"`) {
		t.Fatalf("refusal message %q", pgErr.Message)
	}
	if took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("refused after %v, want after timeouts.failover_wait (1s)", took)
	}
	t.Logf("refused after %v", took.Round(time.Millisecond))
	waitFor(t, 5*time.Second, "an end record with cause no_server", func() bool {
		return e.countEnded(func(r admin.EndedSession) bool { return r.Route == "rw" && r.Cause == "no_server" }) == 1
	})
}

// TestFailoverReplicaLag: a replica whose replay is paused falls more than max_lag.bytes (1MB)
// behind: its replica-route session ends (role_changed), new clients of a route with fallback
// none are refused (no_server) and those of a route with fallback primary go to the primary.
// Once replay resumes, the replica serves again.
func TestFailoverReplicaLag(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, pairConfig(p, r, fastHealth, "", `
ro: {listen: "127.0.0.1:0", cluster: c, role: replica, max_lag: {bytes: 1MB}, fallback: none, timeouts: {failover_wait: 1s}}
rofb: {listen: "127.0.0.1:0", cluster: c, role: replica, max_lag: {bytes: 1MB}, fallback: primary, timeouts: {failover_wait: 1s}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The lag is known once both servers were checked; until then the replica does not qualify.
	var ro *pgconn.PgConn
	waitFor(t, 10*time.Second, "route ro to serve the replica", func() bool {
		c, err := dialRoute(ctx, e, "ro")
		if err != nil {
			return false
		}
		ro = c
		return true
	})
	t.Cleanup(func() { _ = ro.Close(context.Background()) })
	expectOn(t, ctx, ro, r.Port, true)
	expectOn(t, ctx, mustDial(t, ctx, e, "rofb"), r.Port, true)

	if err := r.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	before, err := p.QueryValue(ctx, "SELECT pg_current_wal_insert_lsn()")
	if err != nil {
		t.Fatal(err)
	}
	// About 5 MB of WAL: rows of 1000 bytes are not compressed.
	if err := p.Exec(ctx, "CREATE TABLE lag_t AS SELECT i, repeat('x', 1000) AS v FROM generate_series(1, 5000) i"); err != nil {
		t.Fatal(err)
	}
	grown, err := p.QueryValue(ctx, fmt.Sprintf("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '%s')::bigint", before))
	if err != nil {
		t.Fatal(err)
	}
	var walBytes int64
	fmt.Sscan(grown, &walBytes)
	if walBytes <= 1<<20 {
		t.Fatalf("generated %d bytes of WAL, want more than 1MB", walBytes)
	}
	t.Logf("generated %d bytes of WAL with replay paused", walBytes)

	pgErr, _ := waitFatal(t, ro, 5*time.Second)
	if pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, "changed role") {
		t.Fatalf("ro session on the lagging replica ended with %v, want FATAL 57P01 (changed role)", pgErr)
	}
	if cause := waitEndCause(t, e, ro); cause != "role_changed" {
		t.Fatalf("ro session ended with cause %s, want role_changed", cause)
	}
	pgErr, took := expectRefused(t, ctx, e, "ro", "57P03")
	if !strings.Contains(pgErr.Message, `no replica server available for route "ro"`) {
		t.Fatalf("refusal message %q", pgErr.Message)
	}
	t.Logf("ro refused after %v while the replica lags", took.Round(time.Millisecond))
	waitFor(t, 5*time.Second, "cause=no_server in the log", func() bool {
		return e.countEnded(func(r admin.EndedSession) bool { return r.Route == "ro" && r.Cause == "no_server" }) == 1
	})
	// With fallback: primary, a new client goes to the primary while the replica lags.
	expectOn(t, ctx, mustDial(t, ctx, e, "rofb"), p.Port, false)

	if err := r.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	var back *pgconn.PgConn
	waitFor(t, 15*time.Second, "route ro to serve the replica again", func() bool {
		c, err := dialRoute(ctx, e, "ro")
		if err != nil {
			return false
		}
		back = c
		return true
	})
	t.Cleanup(func() { _ = back.Close(context.Background()) })
	expectOn(t, ctx, back, r.Port, true)
	t.Logf("ro served again %v after replay resumed", time.Since(resumed).Round(time.Millisecond))
}

// TestFailoverKeepSessions: with on_marked_down: keep, a replica-route session on a replica that
// is promoted stays and can still query.
func TestFailoverKeepSessions(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, pairConfig(p, r, fastHealth, "on_marked_down: keep", `
ro: {listen: "127.0.0.1:0", cluster: c, role: replica, fallback: none, timeouts: {failover_wait: 10s}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ro := mustDial(t, ctx, e, "ro")
	expectOn(t, ctx, ro, r.Port, true)

	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	// The frontend decides about the sessions before it logs the change.
	waitStateLog(t, e, 5*time.Second, "r", "role=primary", "was_role=replica")
	expectOn(t, ctx, ro, r.Port, false)
	if cause := endCause(e, ro); cause != "" {
		t.Fatalf("the kept session ended: %s", cause)
	}
}

// TestFailoverInBandFence: tcp checks keep the configured roles, and the config wrongly calls
// the replica a primary and lists it first. A primary-route client is moved transparently to the
// real primary (the standby said in_hot_standby=on during login, before the client saw
// anything); the standby is fenced, so the next client goes to the primary directly.
func TestFailoverInBandFence(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: tcp, interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1}
    servers:
      - {name: fake, address: %s, role: primary}
      - {name: real, address: %s, role: primary}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary, balance: first, timeouts: {failover_wait: 5s}}
`, r.Addr(), p.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, first, p.Port, false)
	if n := len(logLines(e, "trying another server", "server=c/fake ")); n != 1 {
		t.Fatalf("%d log lines about retrying after the standby, want 1", n)
	}
	waitStateLog(t, e, time.Second, "fake", "fenced=true")

	second := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, second, p.Port, false)
	if n := len(logLines(e, "trying another server")); n != 1 {
		t.Fatalf("%d log lines about retrying after the standby, want still 1: the fence did not hold", n)
	}
	if n := e.countEnded(func(r admin.EndedSession) bool { return r.Cause == "fenced_standby" }); n != 0 {
		t.Fatalf("%d clients were refused as fenced_standby", n)
	}
}

// TestFailoverMonitorSCRAM: the postgres check logs in as a SCRAM user whose password comes from
// a file. With the right password roles are learned; with a wrong one both servers are down, the
// authentication failure is logged once per server (not once per check), and no password ever
// reaches the log.
func TestFailoverMonitorSCRAM(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const good, bad = "Mon-pw-4c1d9e", "Wrong-pw-7f20ab"
	if err := p.CreateUser(ctx, "mon", good, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goodFile, badFile := filepath.Join(dir, "good.pass"), filepath.Join(dir, "bad.pass")
	if err := os.WriteFile(goodFile, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte(bad+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	health := func(file string) string {
		return fmt.Sprintf(`{check: postgres, interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1, user: mon, password_file: %q}`, file)
	}
	routes := `
rw: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 1s}}
ro: {listen: "127.0.0.1:0", cluster: c, role: replica, fallback: none, timeouts: {failover_wait: 1s}}
`
	// The replica must have replayed the role before its checks can log in.
	waitFor(t, 10*time.Second, "the role mon on the replica", func() bool {
		v, err := r.QueryValue(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = 'mon'")
		return err == nil && v == "1"
	})

	e := startProxy(t, pairConfig(p, r, health(goodFile), "", routes))
	waitStateLog(t, e, 5*time.Second, "p", "role=primary", "up=true")
	waitStateLog(t, e, 5*time.Second, "r", "role=replica", "up=true")
	expectOn(t, ctx, mustDial(t, ctx, e, "rw"), p.Port, false)
	expectOn(t, ctx, mustDial(t, ctx, e, "ro"), r.Port, true)
	v, err := p.QueryValue(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mon' AND application_name = 'pgfront-health'")
	if err != nil || v != "1" {
		t.Fatalf("health check sessions of mon on the primary: %q %v, want 1", v, err)
	}

	// A wrong password: count the failed logins in both servers' logs while they happen.
	failedLogin := `password authentication failed for user "mon"`
	offsets := map[*pgtest.Server]int{}
	for _, s := range []*pgtest.Server{p, r} {
		b, err := os.ReadFile(s.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		offsets[s] = len(b)
	}
	failures := func(s *pgtest.Server) int {
		b, err := os.ReadFile(s.LogFile)
		if err != nil || len(b) < offsets[s] {
			return 0
		}
		return strings.Count(string(b[offsets[s]:]), failedLogin)
	}
	eb := startProxy(t, pairConfig(p, r, health(badFile), "", routes))
	waitStateLog(t, eb, 5*time.Second, "p", "up=false")
	waitStateLog(t, eb, 5*time.Second, "r", "up=false")
	expectRefused(t, ctx, eb, "rw", "57P03")
	expectRefused(t, ctx, eb, "ro", "57P03")
	waitFor(t, 20*time.Second, "10 failed logins on each server", func() bool {
		return failures(p) >= 10 && failures(r) >= 10
	})
	for _, srv := range []string{"c/p", "c/r"} {
		lines := logLines(eb, "server="+srv+" ", "password authentication failed")
		t.Logf("server %s: %d log lines about the failed login", srv, len(lines))
		if len(lines) < 1 || len(lines) > 2 {
			t.Errorf("server %s: %d log lines about the failed login after %d/%d failed checks, want 1 or 2:\n%s",
				srv, len(lines), failures(p), failures(r), strings.Join(lines, "\n"))
		}
	}
	for _, pw := range []string{good, bad} {
		if strings.Contains(e.logs.String(), pw) || strings.Contains(eb.logs.String(), pw) {
			t.Errorf("a password appears in pgfront's log")
		}
	}
}

// TestFailoverWaitOutlastsQueue: with the default timeouts, a primary-route client that arrives
// when there is no primary waits longer than timeouts.queue (5s) — a Patroni election takes
// ttl 30s — and is served by the server promoted 6s later.
func TestFailoverWaitOutlastsQueue(t *testing.T) {
	p, r := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, pairConfig(p, r, fastHealth, "", `
rw: {listen: "127.0.0.1:0", cluster: c, role: primary}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	expectOn(t, ctx, mustDial(t, ctx, e, "rw"), p.Port, false)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStateLog(t, e, 5*time.Second, "p", "up=false")

	type served struct {
		pl  placement
		err error
	}
	waiter := make(chan served, 1)
	arrived := time.Now()
	go func() {
		c, err := dialRoute(ctx, e, "rw")
		if err != nil {
			waiter <- served{err: err}
			return
		}
		defer c.Close(context.Background())
		pl, err := where(ctx, c)
		waiter <- served{pl: pl, err: err}
	}()
	// The failover outlasts timeouts.queue: the client must still be waiting after 6s.
	select {
	case w := <-waiter:
		t.Fatalf("the client gave up after %v (%+v); want it to wait timeouts.failover_wait (35s)", time.Since(arrived), w)
	case <-time.After(6 * time.Second):
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waiter:
		if w.err != nil || w.pl != (placement{port: r.Port}) {
			t.Fatalf("the client waiting through the failover: %v on %v, want served by the promoted server", w.err, w.pl)
		}
		t.Logf("served %v after arriving", time.Since(arrived).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting client was not served within 20s of the promotion")
	}
}
