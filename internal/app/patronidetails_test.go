package app_test

// Patroni details end to end, with scripted Patroni REST APIs (httptest) in front of real
// PostgreSQL servers: the noloadbalance tag, sync_standby_only routes and max_lag.time from
// Patroni's replayed_timestamp.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// scriptedNode is a fake Patroni REST API whose GET /patroni answer the test changes.
type scriptedNode struct {
	mu      sync.Mutex
	role    string        // "master" or "replica"
	lag     time.Duration // replica: replay behind receive by this much time; 0 = caught up
	noLB    bool          // tags.noloadbalance
	syncStb bool          // sync_standby
}

func (n *scriptedNode) set(fn func(*scriptedNode)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fn(n)
}

func (n *scriptedNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/patroni" {
		http.NotFound(w, r)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, `{"state": "running", "role": %q, "patroni": {"version": "3.0.2", "scope": "demo"}`, n.role)
	switch {
	case n.role == "master":
		b.WriteString(`, "xlog": {"location": 1000}`)
	case n.lag == 0:
		b.WriteString(`, "xlog": {"received_location": 1000, "replayed_location": 1000, "replayed_timestamp": null, "paused": false}`)
	default:
		// Python's str() of an aware datetime, as Patroni sends it.
		ts := time.Now().Add(-n.lag).UTC().Format("2006-01-02 15:04:05.000000-07:00")
		fmt.Fprintf(&b, `, "xlog": {"received_location": 2000, "replayed_location": 1000, "replayed_timestamp": %q, "paused": false}`, ts)
	}
	if n.syncStb {
		b.WriteString(`, "sync_standby": true`)
	}
	if n.noLB {
		b.WriteString(`, "tags": {"noloadbalance": true}`)
	}
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(b.String()))
}

// TestPatroniDetails: replica a is busy (replay 2s behind receive: with max_lag.time 10s it
// qualifies, as Patroni's replayed_timestamp says) and a synchronous standby; replica b is tagged
// noloadbalance. The replica route uses a only and the sync-only route a only. When a falls 60s
// behind, the replica route has no server; when b loses its tag and becomes the synchronous
// standby, both routes move to b.
func TestPatroniDetails(t *testing.T) {
	pgP, pgA, pgB := pgtest.NewPrimary(t, nil), pgtest.NewPrimary(t, nil), pgtest.NewPrimary(t, nil)
	nodes := map[string]*scriptedNode{
		"p": {role: "master"},
		"a": {role: "replica", lag: 2 * time.Second, syncStb: true},
		"b": {role: "replica", noLB: true},
	}
	rest := map[string]string{}
	for name, n := range nodes {
		srv := httptest.NewServer(n)
		t.Cleanup(srv.Close)
		rest[name] = strings.TrimPrefix(srv.URL, "http://")
	}
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: patroni, interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1}
    servers:
      - {name: p, address: %s, patroni: %s}
      - {name: a, address: %s, patroni: %s}
      - {name: b, address: %s, patroni: %s}
routes:
  ro: {listen: "127.0.0.1:0", cluster: c, role: replica, max_lag: {time: 10s}, fallback: none, timeouts: {failover_wait: 1s}}
  sync: {listen: "127.0.0.1:0", cluster: c, role: replica, sync_standby_only: true, fallback: none, timeouts: {failover_wait: 1s}}
  rofb: {listen: "127.0.0.1:0", cluster: c, role: replica, sync_standby_only: true, fallback: primary, timeouts: {failover_wait: 1s}}
`, pgP.Addr(), rest["p"], pgA.Addr(), rest["a"], pgB.Addr(), rest["b"]))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitServers(t, e, "a a sync standby, b tagged noloadbalance", func(s map[string]admin.Server) bool {
		return s["a"].Role == "replica" && s["a"].SyncStandby && s["a"].LagSeconds > 0 && s["b"].Role == "replica" && s["b"].NoLoadBalance
	})

	// onlyOn dials route n times (round robin would alternate) and fails unless every session
	// runs on port.
	onlyOn := func(route string, port int) {
		t.Helper()
		for range 4 {
			c := mustDial(t, ctx, e, route)
			pl, err := where(ctx, c)
			_ = c.Close(ctx)
			if err != nil || pl.port != port {
				t.Fatalf("route %s placed a session on %v (%v), want port %d", route, pl, err, port)
			}
		}
	}
	onlyOn("ro", pgA.Port)
	onlyOn("sync", pgA.Port)
	if v := e.value("pgfront_server_lag_seconds", "cluster", "c", "server", "a"); v < 1.5 || v > 5 {
		t.Errorf("pgfront_server_lag_seconds of a = %g, want about 2 (from replayed_timestamp)", v)
	}

	// a falls 60s behind: over max_lag.time, and b is tagged noloadbalance.
	nodes["a"].set(func(n *scriptedNode) { n.lag = time.Minute })
	waitFor(t, 5*time.Second, "a to be over max_lag.time", func() bool {
		return e.value("pgfront_server_lag_seconds", "cluster", "c", "server", "a") > 30
	})
	pgErr, _ := expectRefused(t, ctx, e, "ro", "57P03")
	if !strings.Contains(pgErr.Message, `no replica server available for route "ro"`) {
		t.Errorf("refusal %q", pgErr.Message)
	}
	onlyOn("sync", pgA.Port) // no lag bound on this route

	// b loses its tag and becomes the synchronous standby; a is no longer one.
	nodes["a"].set(func(n *scriptedNode) { n.syncStb = false })
	nodes["b"].set(func(n *scriptedNode) { n.noLB, n.syncStb = false, true })
	waitServers(t, e, "a no longer a sync standby, b one and untagged", func(s map[string]admin.Server) bool {
		return !s["a"].SyncStandby && s["b"].SyncStandby && !s["b"].NoLoadBalance
	})
	onlyOn("sync", pgB.Port)
	onlyOn("ro", pgB.Port)

	// No synchronous standby: the sync-only route with fallback primary uses the primary.
	nodes["b"].set(func(n *scriptedNode) { n.syncStb = false })
	waitServers(t, e, "b no longer a sync standby", func(s map[string]admin.Server) bool { return !s["b"].SyncStandby })
	onlyOn("rofb", pgP.Port)
}

// waitServers waits until the admin API's servers of cluster c (by name) satisfy cond.
func waitServers(t *testing.T, e *env, what string, cond func(map[string]admin.Server) bool) {
	t.Helper()
	waitFor(t, 5*time.Second, what, func() bool {
		var list []admin.Server
		if code := e.api("GET", "/api/v1/servers", "", nil, &list); code != 200 {
			t.Fatalf("GET servers: %d", code)
		}
		byName := map[string]admin.Server{}
		for _, s := range list {
			byName[s.Name] = s
		}
		return cond(byName)
	})
}
