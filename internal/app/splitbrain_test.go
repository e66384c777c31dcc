package app_test

// Split brain end to end: two independent PostgreSQL primaries (two initdb's) configured as one
// cluster with check: postgres. Nothing decides which is real, so pgfront stops writes to both
// until one remains.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestSplitBrainStopsWrites: a second primary appears next to the first. The session on the
// first ends (FATAL 57P03, cause split_brain), a new primary-route client waits
// timeouts.failover_wait and is refused with 57P03 naming both servers, the gauge and the log
// say so, and checks run at fast_interval. When one primary stops, a client waiting meanwhile is served by the other and the
// gauge goes back to 0.
func TestSplitBrainStopsWrites(t *testing.T) {
	a := pgtest.NewPrimary(t, nil)
	b := pgtest.NewPrimary(t, nil)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: postgres, interval: 2s, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1, jitter: 0}
    servers:
      - {name: a, address: %s}
      - {name: b, address: %s}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 1s}}
  rwwait: {listen: "127.0.0.1:0", cluster: c, role: primary, timeouts: {failover_wait: 30s}}
`, a.Addr(), b.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waitStateLog(t, e, 5*time.Second, "a", "role=primary", "up=true")

	old := mustDial(t, ctx, e, "rw")
	if _, err := old.Exec(ctx, "CREATE TABLE sb (i int); INSERT INTO sb VALUES (1)").ReadAll(); err != nil {
		t.Fatalf("writing before the split brain: %v", err)
	}
	if v := e.value("pgfront_split_brain", "cluster", "c"); v != 0 {
		t.Fatalf("pgfront_split_brain = %g with one primary, want 0", v)
	}

	// The second primary comes up: both claim to be primary.
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pgErr, _ := waitFatal(t, old, 10*time.Second)
	if pgErr.Code != "57P03" || !strings.Contains(pgErr.Message, "split brain") {
		t.Fatalf("the session on a ended with %v, want FATAL 57P03 (split brain)", pgErr)
	}
	if cause := waitEndCause(t, e, old); cause != "split_brain" {
		t.Fatalf("the session on a ended with cause %s, want split_brain", cause)
	}
	e.waitMetric(5*time.Second, 1, "pgfront_split_brain", "cluster", "c")
	if lines := logLines(e, "level=WARN", "split brain: servers c/a and c/b both claim to be primary"); len(lines) != 1 {
		t.Errorf("split brain WARN lines: %q, want one", lines)
	}

	// Checks run at fast_interval (100ms), not interval (2s), while the split brain lasts.
	seen := map[float64]bool{}
	waitFor(t, 1500*time.Millisecond, "five checks of a within 1.5s (fast_interval)", func() bool {
		seen[e.value("pgfront_server_last_check_timestamp_seconds", "cluster", "c", "server", "a")] = true
		return len(seen) >= 5
	})

	refused, took := expectRefused(t, ctx, e, "rw", "57P03")
	if !strings.Contains(refused.Message, "servers c/a and c/b both claim to be primary") {
		t.Errorf("refusal %q does not name both servers", refused.Message)
	}
	if took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("refused after %v, want after timeouts.failover_wait (1s)", took)
	}
	waitFor(t, 5*time.Second, "the refusal's end record with cause split_brain", func() bool {
		return e.countEnded(func(r admin.EndedSession) bool { return r.Route == "rw" && r.Cause == "split_brain" }) == 2
	})
	var servers []admin.Server
	if code := e.api("GET", "/api/v1/servers", "", nil, &servers); code != 200 {
		t.Fatalf("GET servers: %d", code)
	}
	for _, s := range servers {
		if !s.SplitBrain {
			t.Errorf("admin API shows %s/%s with split_brain false", s.Cluster, s.Name)
		}
	}

	// A client waits meanwhile; b stops; the client writes on a.
	type served struct {
		port int
		err  error
	}
	waiter := make(chan served, 1)
	go func() {
		c, err := dialRoute(ctx, e, "rwwait")
		if err != nil {
			waiter <- served{err: err}
			return
		}
		defer c.Close(context.Background())
		_, err = c.Exec(ctx, "INSERT INTO sb VALUES (2)").ReadAll()
		pl, werr := where(ctx, c)
		waiter <- served{port: pl.port, err: errors.Join(err, werr)}
	}()
	waitSessions(t, e, 1)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waiter:
		if w.err != nil || w.port != a.Port {
			t.Fatalf("the client waiting through the split brain: port %d, %v; want served by a (port %d)", w.port, w.err, a.Port)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting client was not served within 20s of b stopping")
	}
	e.waitMetric(5*time.Second, 0, "pgfront_split_brain", "cluster", "c")
	waitFor(t, 5*time.Second, "the INFO line that the split brain is over", func() bool {
		return len(logLines(e, "level=INFO", "split brain over")) == 1
	})
}
