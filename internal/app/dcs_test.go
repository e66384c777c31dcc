package app_test

// The DCS role source end to end, with a real Patroni cluster (etcd and nodes from
// patronitest): leader changes reach pgfront from the etcd watch, before any node check
// could see them, and writes never go to a primary whose Patroni lost the leader key.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/patronitest"
)

// dcsConfig is a pgfront config for pc with the given health section, with or without the
// dcs role source. Node checks are slow on purpose (30 s, also when hurried): whatever pgfront
// learns within seconds it learned from the watch.
func dcsConfig(pc *patronitest.Cluster, health string, withDCS bool) string {
	var servers strings.Builder
	for _, n := range pc.Nodes {
		fmt.Fprintf(&servers, "      - {name: %s, address: %s, patroni: %s}\n", n.Name, n.PGAddr(), n.RESTAddr())
	}
	dcs := ""
	if withDCS {
		dcs = fmt.Sprintf("    dcs:\n      etcd: {hosts: [%q], namespace: %q, scope: %s}\n", pc.EtcdAddr(), pc.Namespace, pc.Scope)
	}
	return fmt.Sprintf(`
clusters:
  pc:
    health: %s
%s    servers:
%s
routes:
  rw: {listen: "127.0.0.1:0", cluster: pc, role: primary, timeouts: {failover_wait: 45s}}
`, health, dcs, servers.String())
}

const slowPostgresCheck = "{check: postgres, user: postgres, interval: 30s, fast_interval: 30s, timeout: 2s, rise: 1, fall: 1}"

// serverLeader is what the admin API says of server's leadership.
func serverLeader(t *testing.T, e *env, server string) admin.Server {
	t.Helper()
	var servers []admin.Server
	if code := e.api("GET", "/api/v1/servers", "", nil, &servers); code != 200 {
		t.Fatalf("GET servers: %d", code)
	}
	for _, s := range servers {
		if s.Name == server {
			return s
		}
	}
	t.Fatalf("no server %s", server)
	return admin.Server{}
}

// dcsState is the admin API's view of the cluster's DCS role source.
func dcsState(t *testing.T, e *env) admin.DCS {
	t.Helper()
	var ov admin.Overview
	if code := e.api("GET", "/api/v1/overview", "", nil, &ov); code != 200 {
		t.Fatalf("GET overview: %d", code)
	}
	if len(ov.DCS) != 1 {
		t.Fatalf("overview dcs: %+v, want one source", ov.DCS)
	}
	return ov.DCS[0]
}

// TestDCSFailover: with node checks every 30 s, a switchover and the loss of the leader are
// followed within seconds, from the leader key's watch; the admin API shows the leadership.
func TestDCSFailover(t *testing.T) {
	pc := patronitest.New(t, patronitest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := startProxy(t, dcsConfig(pc, slowPostgresCheck, true))
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the DCS view", func() bool {
		d := dcsState(t, e)
		return d.Up && d.Leader == leader.Name && len(d.Members) == len(pc.Nodes)
	})
	if s := serverLeader(t, e, leader.Name); s.Leader != "leader" || s.Role != "primary" {
		t.Fatalf("leader %s in the admin API: %+v", leader.Name, s)
	}
	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, leader.PGPort, false)
	if _, err := rw.Exec(ctx, "CREATE TABLE pf (port int, at timestamptz DEFAULT clock_timestamp())").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_ = rw.Close(ctx)

	// Switchover.
	candidate := pc.Nodes[0]
	if candidate == leader {
		candidate = pc.Nodes[1]
	}
	w := startWriter(t, e, "rw")
	swStart := time.Now()
	if err := pc.Switchover(ctx, candidate); err != nil {
		t.Fatal(err)
	}
	leaderSeen := time.Now()
	waitFor(t, 5*time.Second, "a write through rw on the new leader", func() bool {
		_, ok := w.firstOn(candidate.PGPort)
		return ok
	})
	w.halt()
	first, _ := w.firstOn(candidate.PGPort)
	t.Logf("switchover %s -> %s: new leader reported %v after the start; first write on it %v after that",
		leader.Name, candidate.Name, leaderSeen.Sub(swStart).Round(time.Millisecond), first.done.Sub(leaderSeen).Round(time.Millisecond))
	checkWrites(t, w, leaderSeen, candidate)
	if s := serverLeader(t, e, candidate.Name); s.Leader != "leader" {
		t.Errorf("new leader %s in the admin API: %+v", candidate.Name, s)
	}
	if s := serverLeader(t, e, leader.Name); s.Leader != "not_leader" {
		t.Errorf("old leader %s in the admin API: %+v", leader.Name, s)
	}
	if d := dcsState(t, e); d.LeaderChanges < 1 {
		t.Errorf("leader changes %d, want at least 1", d.LeaderChanges)
	}

	// Leader loss: Patroni promotes another node once the key expires; pgfront follows the
	// key, not its 30 s checks.
	if err := pc.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	w = startWriter(t, e, "rw")
	killAt := time.Now()
	if err := pc.KillNode(candidate); err != nil {
		t.Fatal(err)
	}
	next, err := pc.WaitLeader(ctx, candidate)
	if err != nil {
		t.Fatal(err)
	}
	leaderSeen = time.Now()
	waitFor(t, 5*time.Second, "a write through rw on the new leader", func() bool {
		_, ok := w.firstOn(next.PGPort)
		return ok
	})
	w.halt()
	first, _ = w.firstOn(next.PGPort)
	t.Logf("leader %s killed: %s reported the leader %v after the kill; first write on it %v after that",
		candidate.Name, next.Name, leaderSeen.Sub(killAt).Round(time.Millisecond), first.done.Sub(leaderSeen).Round(time.Millisecond))
	checkWrites(t, w, leaderSeen, next)
}

// TestDCSPatroniPaused: Patroni freezes on the leader while its PostgreSQL stays a writable
// primary; its leader key expires and another node is promoted. Writers through pgfront must
// not write to the old primary once the new leader is there: with the dcs role source (node
// checks by PostgreSQL login, which the old primary passes), and with check: patroni alone.
func TestDCSPatroniPaused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		health  string
		withDCS bool
	}{
		{"dcs", "{check: postgres, user: postgres, interval: 1s, fast_interval: 500ms, timeout: 900ms, rise: 1, fall: 1}", true},
		{"patroni", "{check: patroni, interval: 1s, fast_interval: 500ms, timeout: 900ms, rise: 1, fall: 1}", false},
		// Both primaries pass a PostgreSQL check: split-brain detection stops the writes.
		{"postgres", "{check: postgres, user: postgres, interval: 1s, fast_interval: 500ms, timeout: 900ms, rise: 1, fall: 1}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pausedPrimary(t, tc.health, tc.withDCS, tc.name == "postgres")
		})
	}
}

// pausedPrimary runs the scenario. With splitBrain (node checks that both primaries pass, no
// DCS) no server can be told the rightful one: pgfront must stop every write once it sees the
// second primary, and refuse writes until one remains.
func pausedPrimary(t *testing.T, health string, withDCS, splitBrain bool) {
	pc := patronitest.New(t, patronitest.Options{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conf := dcsConfig(pc, health, withDCS)
	if splitBrain {
		conf = strings.Replace(conf, "failover_wait: 45s", "failover_wait: 1s", 1)
	}
	e := startProxy(t, conf)
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a session through rw on the leader", func() bool {
		c, err := dialRoute(ctx, e, "rw")
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		pl, err := where(ctx, c)
		return err == nil && pl.port == leader.PGPort
	})
	rw := mustDial(t, ctx, e, "rw")
	if _, err := rw.Exec(ctx, "CREATE TABLE pf (port int, at timestamptz DEFAULT clock_timestamp())").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_ = rw.Close(ctx)
	w := startWriter(t, e, "rw")
	waitFor(t, 5*time.Second, "a write on the leader", func() bool {
		_, ok := w.firstOn(leader.PGPort)
		return ok
	})
	pauseAt := time.Now()
	if err := pc.PausePatroni(leader); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.ResumePatroni(leader) })
	next, err := pc.WaitLeader(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	leaderSeen := time.Now()
	if splitBrain {
		pausedSplitBrain(t, ctx, e, w, leader, next)
		return
	}
	waitFor(t, 10*time.Second, "a write through rw on the new leader", func() bool {
		_, ok := w.firstOn(next.PGPort)
		return ok
	})
	// Keep writing a while: the old primary is still writable, pgfront must keep away.
	waitFor(t, 10*time.Second, "more writes on the new leader", func() bool {
		writes, _, _ := w.snapshot()
		n := 0
		for _, wr := range writes {
			if wr.port == next.PGPort {
				n++
			}
		}
		return n >= 20
	})
	w.halt()
	// The new leader was promoted before it acknowledged its first write, and Patroni (the
	// REST API) may report it later than that: count from whichever came first.
	first, _ := w.firstOn(next.PGPort)
	promoted := leaderSeen
	if first.done.Before(promoted) {
		promoted = first.done
	}
	writes, _, _ := w.snapshot()
	var onOld, onOldLate int
	for _, wr := range writes {
		if wr.port == leader.PGPort && wr.done.After(pauseAt) {
			onOld++
			if wr.done.After(promoted) {
				onOldLate++
			}
		}
	}
	t.Logf("Patroni paused on %s: %s leader after %v; first write on it %v after the pause; writes on the old primary after the pause %d, after the new leader's first %d",
		leader.Name, next.Name, leaderSeen.Sub(pauseAt).Round(time.Millisecond), first.done.Sub(pauseAt).Round(time.Millisecond), onOld, onOldLate)
	if onOldLate != 0 {
		t.Errorf("%d writes landed on the old primary %s after %s took writes", onOldLate, leader.Name, next.Name)
	}
	// The old primary still accepts writes directly: the scenario really had two primaries.
	if got, err := queryOn(ctx, leader, "SELECT pg_is_in_recovery()"); err != nil || got != "f" {
		t.Errorf("old primary in recovery: %q, %v (the scenario needs it writable)", got, err)
	}
}

// pausedSplitBrain: the old primary stays writable and the new one is promoted; once pgfront
// sees both primaries no write lands on either, and writers are refused.
func pausedSplitBrain(t *testing.T, ctx context.Context, e *env, w *writer, old, next *patronitest.Node) {
	waitFor(t, 15*time.Second, "pgfront to see the split brain", func() bool {
		v, ok := e.metric("pgfront_split_brain", "cluster", "pc")
		return ok && v == 1
	})
	detected := time.Now()
	_, failedBefore, _ := w.snapshot()
	waitFor(t, 20*time.Second, "writes refused during the split brain", func() bool {
		_, failed, _ := w.snapshot()
		return failed >= failedBefore+3
	})
	w.halt()
	writes, _, lastErr := w.snapshot()
	var late int
	for _, wr := range writes {
		if wr.done.After(detected) {
			late++
		}
	}
	t.Logf("split brain seen; writes completed after it: %d; last refusal: %v", late, lastErr)
	if late != 0 {
		t.Errorf("%d writes landed after pgfront saw two primaries (%s and %s)", late, old.Name, next.Name)
	}
	var pe *pgconn.PgError
	if !errors.As(lastErr, &pe) || pe.Code != "57P03" || !strings.Contains(pe.Message, "split brain") {
		t.Errorf("writer refused with %v, want 57P03 naming the split brain", lastErr)
	}
	if got, err := queryOn(ctx, old, "SELECT pg_is_in_recovery()"); err != nil || got != "f" {
		t.Errorf("old primary in recovery: %q, %v (the scenario needs it writable)", got, err)
	}
}

// queryOn runs sql on n directly (not through pgfront) and returns the first value.
func queryOn(ctx context.Context, n *patronitest.Node, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, n.DSN())
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return "", res.Err
	}
	if len(res.Rows) == 0 {
		return "", nil
	}
	return string(res.Rows[0][0]), nil
}

// TestDCSEtcdLost: when etcd stops answering, pgfront says so (admin API, metric) and node
// checks alone decide (the leadership becomes unknown; writes still reach the primary, whose
// Patroni is frozen so that it does not demote it); when etcd is back it follows the key again.
func TestDCSEtcdLost(t *testing.T) {
	pc := patronitest.New(t, patronitest.Options{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := startProxy(t, dcsConfig(pc, "{check: postgres, user: postgres, interval: 500ms, fast_interval: 200ms, timeout: 400ms, rise: 1, fall: 1}", true))
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the DCS view", func() bool {
		d := dcsState(t, e)
		return d.Up && d.Leader == leader.Name && serverLeader(t, e, leader.Name).Leader == "leader"
	})
	if got, ok := e.metric("pgfront_dcs_up", "cluster", "pc"); !ok || got != 1 {
		t.Errorf("pgfront_dcs_up = %v (%v), want 1", got, ok)
	}
	// Patroni demotes a primary that cannot renew its key: frozen, it cannot, and the node
	// checks have a primary to find while etcd is away.
	for _, n := range pc.Nodes {
		if err := pc.PausePatroni(n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.ResumePatroni(n) })
	}
	if err := pc.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	waitFor(t, 10*time.Second, "the DCS view lost", func() bool { return !dcsState(t, e).Up })
	t.Logf("view lost %v after etcd stopped", time.Since(lost).Round(time.Millisecond))
	d := dcsState(t, e)
	if d.LastError == "" {
		t.Errorf("no error shown: %+v", d)
	}
	for _, n := range pc.Nodes {
		if s := serverLeader(t, e, n.Name); s.Leader != "unknown" {
			t.Errorf("%s: leader %q with etcd gone, want unknown", n.Name, s.Leader)
		}
	}
	if got, ok := e.metric("pgfront_dcs_up", "cluster", "pc"); !ok || got != 0 {
		t.Errorf("pgfront_dcs_up = %v (%v), want 0", got, ok)
	}
	if n := strings.Count(e.logs.String(), "dcs: no current view"); n != 1 {
		t.Errorf("%d WARN lines for one loss, want 1", n)
	}
	// Node checks decide: the primary (its Patroni frozen, so not demoted) takes writes.
	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, leader.PGPort, false)
	_ = rw.Close(ctx)

	if err := pc.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range pc.Nodes {
		if err := pc.ResumePatroni(n); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the DCS view again", func() bool {
		d := dcsState(t, e)
		if !d.Up || d.Leader == "" {
			return false
		}
		return serverLeader(t, e, d.Leader).Leader == "leader"
	})
}

// TestDCSServersFromMembers: a cluster with no servers in the file gets Patroni's members as
// servers, and a member that goes away leaves.
func TestDCSServersFromMembers(t *testing.T) {
	pc := patronitest.New(t, patronitest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One server listed (with a weight of its own), the others from the members.
	first := pc.Nodes[0]
	e := startProxy(t, fmt.Sprintf(`
clusters:
  pc:
    health: {check: postgres, user: postgres, interval: 500ms, fast_interval: 200ms, timeout: 400ms, rise: 1, fall: 1}
    dcs:
      etcd: {hosts: [%q], namespace: %q, scope: %s}
      servers_from_members: true
    servers:
      - {name: %s, address: %s, weight: 3}
routes:
  rw: {listen: "127.0.0.1:0", cluster: pc, role: primary, timeouts: {queue: 30s}}
`, pc.EtcdAddr(), pc.Namespace, pc.Scope, first.Name, first.PGAddr()))
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servers := func() map[string]admin.Server {
		var list []admin.Server
		if code := e.api("GET", "/api/v1/servers", "", nil, &list); code != 200 {
			t.Fatalf("GET servers: %d", code)
		}
		out := map[string]admin.Server{}
		for _, s := range list {
			out[s.Name] = s
		}
		return out
	}
	waitFor(t, 15*time.Second, "every member a server", func() bool {
		ss := servers()
		if len(ss) != len(pc.Nodes) {
			return false
		}
		for _, n := range pc.Nodes {
			if ss[n.Name].Address != n.PGAddr() {
				return false
			}
		}
		return ss[leader.Name].Leader == "leader" && ss[leader.Name].Role == "primary"
	})
	rw := mustDial(t, ctx, e, "rw")
	expectOn(t, ctx, rw, leader.PGPort, false)
	_ = rw.Close(ctx)

	// A replica that is not in the file goes away: its member key expires, it leaves.
	var gone *patronitest.Node
	for _, n := range pc.Nodes {
		if n != leader && n != first {
			gone = n
			break
		}
	}
	if err := pc.KillNode(gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 40*time.Second, gone.Name+" removed", func() bool {
		_, ok := servers()[gone.Name]
		return !ok
	})
	if _, ok := servers()[first.Name]; !ok {
		t.Errorf("the listed server %s left with the member's change", first.Name)
	}
}

// TestReloadDCS: a reload adds a cluster's dcs section (a watcher starts), changes it (the
// watcher is replaced) and removes it (stopped: no source, no series).
func TestReloadDCS(t *testing.T) {
	// An "etcd" that accepts and hangs up: the source exists and says it has no view.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cfg := func(dcs string) string {
		return `
clusters:
  c:
    health: {check: none}
` + dcs + `    servers:
      - {name: pg, address: "127.0.0.1:5432", role: primary}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary}
`
	}
	fe := startProxyFile(t, cfg(""))
	overview := func() admin.Overview {
		var ov admin.Overview
		if code := fe.api("GET", "/api/v1/overview", "", nil, &ov); code != 200 {
			t.Fatalf("GET overview: %d", code)
		}
		return ov
	}
	if ov := overview(); len(ov.DCS) != 0 {
		t.Fatalf("dcs before: %+v", ov.DCS)
	}
	changes := fe.reload(t, cfg(fmt.Sprintf("    dcs: {etcd: {hosts: [%q], scope: pg}}\n", ln.Addr())))
	if !slices.Contains(changes, "cluster c: dcs role source on /service/pg/") {
		t.Errorf("changes %q", changes)
	}
	waitFor(t, 10*time.Second, "the source's error", func() bool {
		ov := overview()
		return len(ov.DCS) == 1 && !ov.DCS[0].Up && ov.DCS[0].LastError != "" && ov.DCS[0].Prefix == "/service/pg/"
	})
	if v, ok := fe.metric("pgfront_dcs_up", "cluster", "c"); !ok || v != 0 {
		t.Errorf("pgfront_dcs_up = %v %v, want 0", v, ok)
	}
	changes = fe.reload(t, cfg(fmt.Sprintf("    dcs: {etcd: {hosts: [%q], scope: other, namespace: /db}}\n", ln.Addr())))
	if !slices.Contains(changes, "cluster c: dcs role source on /db/other/") {
		t.Errorf("changes %q", changes)
	}
	if ov := overview(); len(ov.DCS) != 1 || ov.DCS[0].Prefix != "/db/other/" {
		t.Errorf("dcs after the change: %+v", ov.DCS)
	}
	changes = fe.reload(t, cfg(""))
	if !slices.Contains(changes, "cluster c: dcs role source off (node checks decide)") {
		t.Errorf("changes %q", changes)
	}
	if ov := overview(); len(ov.DCS) != 0 {
		t.Errorf("dcs after removal: %+v", ov.DCS)
	}
	if _, ok := fe.metric("pgfront_dcs_up", "cluster", "c"); ok {
		t.Error("pgfront_dcs_up still exported")
	}
}
