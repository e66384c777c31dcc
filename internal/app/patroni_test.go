package app_test

// Failover end to end with a real Patroni cluster (etcd and three nodes from patronitest) and
// pgfront's patroni health check: a planned switchover and the loss of the leader.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/patronitest"
)

// write is one successful write through the primary route, and where it landed: the server's
// port and whether it was in recovery, asked in the same transaction as the INSERT.
type write struct {
	start, done time.Time // the connect began; the COMMIT returned
	port        int
	inRecovery  bool
}

// writer opens a new session through a route again and again and writes once in each, recording
// the writes that succeeded, until halt.
type writer struct {
	dsn    string
	cancel context.CancelFunc
	done   chan struct{}

	mu struct {
		sync.Mutex
		writes   []write
		failures int
		lastErr  error
	}
}

// writeSQL inserts and reports, in the same transaction, where the insert ran.
const writeSQL = `BEGIN; INSERT INTO pf (port) SELECT inet_server_port();
SELECT inet_server_port(), pg_is_in_recovery(); COMMIT`

// startWriter starts a writer through route; it is halted at the end of the test at the latest.
func startWriter(t *testing.T, e *env, route string) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{dsn: routeDSN(e, route), cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	t.Cleanup(w.halt)
	return w
}

// run writes until ctx ends, pacing attempts so that fast failures (a connection refused by a
// dying node) do not spin.
func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	for ctx.Err() == nil {
		wr, err := w.writeOnce(ctx)
		w.mu.Lock()
		if err == nil {
			w.mu.writes = append(w.mu.writes, wr)
		} else if ctx.Err() == nil {
			w.mu.failures++
			w.mu.lastErr = err
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *writer) writeOnce(ctx context.Context) (write, error) {
	wr := write{start: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := pgconn.Connect(ctx, w.dsn)
	if err != nil {
		return wr, err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, writeSQL).ReadAll()
	if err != nil {
		return wr, err
	}
	wr.done = time.Now()
	if len(res) != 4 || len(res[2].Rows) != 1 {
		return wr, fmt.Errorf("unexpected results of the write: %d", len(res))
	}
	if _, err := fmt.Sscan(string(res[2].Rows[0][0]), &wr.port); err != nil {
		return wr, err
	}
	wr.inRecovery = string(res[2].Rows[0][1]) == "t"
	return wr, nil
}

// snapshot returns the writes so far, the number of failed attempts and the last failure.
func (w *writer) snapshot() ([]write, int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]write(nil), w.mu.writes...), w.mu.failures, w.mu.lastErr
}

// firstOn returns the first write that landed on port.
func (w *writer) firstOn(port int) (write, bool) {
	writes, _, _ := w.snapshot()
	for _, wr := range writes {
		if wr.port == port {
			return wr, true
		}
	}
	return write{}, false
}

// halt stops the writer and waits for it; it may be called more than once.
func (w *writer) halt() {
	w.cancel()
	<-w.done
}

// checkWrites fails for any write accepted by a server in recovery (impossible unless the
// result lies) and for any write begun after leaderKnown that landed elsewhere than on leader.
func checkWrites(t *testing.T, w *writer, leaderKnown time.Time, leader *patronitest.Node) {
	t.Helper()
	writes, failures, lastErr := w.snapshot()
	for _, wr := range writes {
		if wr.inRecovery {
			t.Errorf("a write was accepted on port %d while it was in recovery", wr.port)
		}
		if wr.start.After(leaderKnown) && wr.port != leader.PGPort {
			t.Errorf("a write begun %v after %s was the leader landed on port %d",
				wr.start.Sub(leaderKnown).Round(time.Millisecond), leader.Name, wr.port)
		}
	}
	t.Logf("writer: %d writes, %d failed attempts (last: %v)", len(writes), failures, lastErr)
}

// ended is how an idle session ended: the FATAL it received (nil if none) and when.
type ended struct {
	err *pgconn.PgError
	at  time.Time
}

// endWatch waits in the background for an idle session's FATAL.
type endWatch struct {
	c    chan ended
	stop context.CancelFunc
	done chan struct{}
}

// watchEnd starts waiting for c's FATAL; c must stay idle. The watch stops before c is closed
// at the end of the test.
func watchEnd(t *testing.T, ctx context.Context, c *pgconn.PgConn) *endWatch {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	w := &endWatch{c: make(chan ended, 1), stop: cancel, done: make(chan struct{})}
	t.Cleanup(func() { cancel(); <-w.done }) // runs before mustDial's close of c
	go func() {
		defer close(w.done)
		for {
			if _, err := c.ReceiveMessage(ctx); err != nil {
				var pgErr *pgconn.PgError
				errors.As(err, &pgErr)
				w.c <- ended{pgErr, time.Now()}
				return
			}
		}
	}()
	return w
}

// wait returns how the session ended, failing the test if it did not within d.
func (w *endWatch) wait(t *testing.T, d time.Duration) ended {
	t.Helper()
	select {
	case e := <-w.c:
		return e
	case <-time.After(d):
		t.Fatalf("the session did not end within %v", d)
		return ended{}
	}
}

// TestPatroniFailover: pgfront follows a Patroni cluster through its REST API: the primary route
// reaches the leader and the replica route a replica; across a planned switchover and the loss
// of the leader, sessions on the old leader end with FATAL 57P01 and new sessions reach the new
// leader, and no write is accepted by a server that is not the primary.
func TestPatroniFailover(t *testing.T) {
	pc := patronitest.New(t, patronitest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var servers strings.Builder
	for _, n := range pc.Nodes {
		fmt.Fprintf(&servers, "      - {name: %s, address: %s, patroni: %s}\n", n.Name, n.PGAddr(), n.RESTAddr())
	}
	e := startProxy(t, fmt.Sprintf(`
clusters:
  pc:
    health: {check: patroni, interval: 500ms, fast_interval: 200ms, timeout: 400ms, rise: 1, fall: 1}
    servers:
%s
routes:
  rw: {listen: "127.0.0.1:0", cluster: pc, role: primary, timeouts: {failover_wait: 45s}}
  ro: {listen: "127.0.0.1:0", cluster: pc, role: replica, fallback: none, timeouts: {failover_wait: 10s}}
`, servers.String()))

	// Roles: rw reaches the leader, ro a replica.
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, leader.PGPort, false)
	if _, err := rw.Exec(ctx, "CREATE TABLE pf (port int, at timestamptz DEFAULT clock_timestamp())").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_ = rw.Close(ctx)
	ro := mustDial(t, ctx, e, "ro")
	pl, err := where(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	if !pl.inRecovery || pl.port == leader.PGPort {
		t.Fatalf("ro session on %v, want a replica (the leader is on port %d)", pl, leader.PGPort)
	}
	_ = ro.Close(ctx)

	// Planned switchover to a replica.
	var candidate *patronitest.Node
	for _, n := range pc.Nodes {
		if n != leader {
			candidate = n
			break
		}
	}
	// A primary-route session on the leader, and a replica-route session on the candidate.
	old := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, old, leader.PGPort, false)
	var promoted *pgconn.PgConn
	for range 10 { // ro balances round robin over the two replicas
		c := mustDial(t, ctx, e, "ro")
		if pl, err := where(ctx, c); err == nil && pl.port == candidate.PGPort {
			promoted = c
			break
		}
		_ = c.Close(ctx)
	}
	if promoted == nil {
		t.Fatalf("route ro never placed a session on %s", candidate.Name)
	}
	oldEnd := watchEnd(t, ctx, old)
	promotedEnd := watchEnd(t, ctx, promoted)
	w := startWriter(t, e, "rw")
	swStart := time.Now()
	if err := pc.Switchover(ctx, candidate); err != nil {
		t.Fatal(err)
	}
	leaderSeen := time.Now() // the new leader runs as primary (Switchover polls every 100ms)
	waitFor(t, 30*time.Second, "a write through rw on the new leader", func() bool {
		_, ok := w.firstOn(candidate.PGPort)
		return ok
	})
	w.halt()
	first, _ := w.firstOn(candidate.PGPort)
	t.Logf("switchover %s -> %s: Patroni reported the new leader %v after the switchover began; first write through rw on it %v after (%v after the leader was reported)",
		leader.Name, candidate.Name, leaderSeen.Sub(swStart).Round(time.Millisecond),
		first.done.Sub(swStart).Round(time.Millisecond), first.done.Sub(leaderSeen).Round(time.Millisecond))
	checkWrites(t, w, leaderSeen, candidate)

	// The old leader's session ends with FATAL 57P01: from pgfront (role_changed or
	// server_down) if its check saw the demotion first, or from PostgreSQL itself, whose fast
	// shutdown (Patroni stops the old leader to restart it as a replica) pgfront forwards.
	end := oldEnd.wait(t, 10*time.Second)
	if end.err == nil || end.err.Code != "57P01" || end.err.Severity != "FATAL" {
		t.Fatalf("the session on the old leader ended with %v, want FATAL 57P01", end.err)
	}
	cause := waitEndCause(t, e, old)
	t.Logf("the session on the old leader ended %v after the switchover began (%v relative to the new leader being reported): cause %s, %q",
		end.at.Sub(swStart).Round(time.Millisecond), end.at.Sub(leaderSeen).Round(time.Millisecond), cause, end.err.Message)
	if end.at.After(leaderSeen.Add(2 * time.Second)) {
		t.Errorf("the session on the old leader ended %v after the new leader was reported, want within 2s", end.at.Sub(leaderSeen))
	}
	fromPgfront := cause == "role_changed" || cause == "server_down"
	fromServer := end.err.Message == "terminating connection due to administrator command"
	if !fromPgfront && !fromServer {
		t.Errorf("the session on the old leader ended with cause %s and %q: neither pgfront's nor the server's shutdown", cause, end.err.Message)
	}

	// The candidate was promoted in place (no restart): only pgfront can end the replica-route
	// session that is now on a primary. Usually a check sees the new role (role_changed); on a
	// slow machine (-race) a check may time out during the promotion first (server_down):
	// either way it is pgfront's FATAL 57P01.
	end = promotedEnd.wait(t, 10*time.Second)
	if end.err == nil || end.err.Code != "57P01" || !strings.Contains(end.err.Message, "changed role") && !strings.Contains(end.err.Message, "server is down") {
		t.Fatalf("the ro session on the promoted %s ended with %v, want pgfront's FATAL 57P01", candidate.Name, end.err)
	}
	if cause := waitEndCause(t, e, promoted); cause != "role_changed" && cause != "server_down" {
		t.Errorf("the ro session on the promoted %s ended with cause %s, want role_changed (or server_down)", candidate.Name, cause)
	}
	t.Logf("the ro session on the promoted %s ended %v after the switchover began (%v relative to the new leader being reported)",
		candidate.Name, end.at.Sub(swStart).Round(time.Millisecond), end.at.Sub(leaderSeen).Round(time.Millisecond))
	if end.at.After(leaderSeen.Add(2 * time.Second)) {
		t.Errorf("the ro session on the promoted %s ended %v after the new leader was reported, want within 2s", candidate.Name, end.at.Sub(leaderSeen))
	}

	// Losing the leader: its node is killed; Patroni elects another once the leader key expires.
	if err := pc.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	w = startWriter(t, e, "rw")
	killed := candidate
	killAt := time.Now()
	if err := pc.KillNode(killed); err != nil {
		t.Fatal(err)
	}
	// KillNode returns once the node's processes are reaped; a write begun before that may
	// still commit on it, as it is the leader until then.
	deadAt := time.Now()
	next, err := pc.WaitLeader(ctx, killed)
	if err != nil {
		t.Fatal(err)
	}
	leaderSeen = time.Now()
	waitFor(t, 30*time.Second, "a write through rw on the new leader", func() bool {
		_, ok := w.firstOn(next.PGPort)
		return ok
	})
	w.halt()
	first, _ = w.firstOn(next.PGPort)
	t.Logf("leader %s killed: Patroni reported %s the leader after %v; first write through rw on it %v after the kill (%v after the leader was reported)",
		killed.Name, next.Name, leaderSeen.Sub(killAt).Round(time.Millisecond),
		first.done.Sub(killAt).Round(time.Millisecond), first.done.Sub(leaderSeen).Round(time.Millisecond))
	checkWrites(t, w, leaderSeen, next)
	writes, _, _ := w.snapshot()
	for _, wr := range writes {
		if wr.start.After(deadAt) && wr.port == killed.PGPort {
			t.Errorf("a write begun after the kill landed on the killed node %s", killed.Name)
		}
	}
}
