package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/patronitest"
)

// TestFleetPatroni: two pgfront instances in front of one real Patroni cluster, each with the
// dcs role source, a fleet secret and no peers in its config. They find each other through
// the DCS (registered next to Patroni's keys); a CancelRequest for a session through A, sent
// to B, cancels A's query; and a switchover and the loss of the leader are followed by both
// from the leader key's watch (their node checks are 30 s apart).
func TestFleetPatroni(t *testing.T) {
	pc := patronitest.New(t, patronitest.Options{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	secret := fleetSecretFile(t)
	a := startProxy(t, dcsConfig(pc, slowPostgresCheck, true)+fleetYAML(secret, "pgfront-a"))
	b := startProxy(t, dcsConfig(pc, slowPostgresCheck, true)+fleetYAML(secret, "pgfront-b"))
	for _, e := range []struct {
		self  *env
		other *env
		name  string
	}{{a, b, "pgfront-b"}, {b, a, "pgfront-a"}} {
		waitFor(t, 15*time.Second, "each instance to discover the other through the DCS", func() bool {
			for _, p := range e.self.app.Fleet().Peers() {
				if p.Name == e.name && p.Addr == e.other.app.AdminAddr().String() {
					return true
				}
			}
			return false
		})
	}
	// The admin API shows the fleet: this instance, and the discovered peer with its tag.
	var ov admin.Overview
	if code := a.api("GET", "/api/v1/overview", "", nil, &ov); code != 200 {
		t.Fatalf("GET overview: %d", code)
	}
	if f := ov.Fleet; f.Name != "pgfront-a" || !f.Secret || len(f.Peers) != 1 || f.Peers[0].Name != "pgfront-b" ||
		f.Peers[0].Tag != int(fleet.TagOf("pgfront-b")) {
		t.Fatalf("overview fleet: %+v", f)
	}
	leader, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rw := mustDial(t, ctx, a, "rw")
	expectOn(t, ctx, rw, leader.PGPort, false)
	if _, err := rw.Exec(ctx, "CREATE TABLE pf (port int, at timestamptz DEFAULT clock_timestamp())").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_ = rw.Close(ctx)

	// A cancel for a session through A, sent to B.
	c := a.pgconnect("rw")
	key := keyOf(c)
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		done <- err
	}()
	waitFor(t, 5*time.Second, "A's pg_sleep to run on the leader", func() bool {
		v, err := queryOn(ctx, leader, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active'", key.ProcessID))
		return err == nil && v == "1"
	})
	sendCancelTo(t, b.addr("rw").String(), key)
	select {
	case err := <-done:
		if code := sqlstate(err); code != "57014" {
			t.Fatalf("A's query ended with %v, want 57014 (cancelled through B)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's pg_sleep(30) not cancelled within 10s of the cancel sent to B")
	}

	// A switchover, then the loss of the new leader: both instances follow the key.
	candidate := pc.Nodes[0]
	if candidate == leader {
		candidate = pc.Nodes[1]
	}
	wa, wb := startWriter(t, a, "rw"), startWriter(t, b, "rw")
	if err := pc.Switchover(ctx, candidate); err != nil {
		t.Fatal(err)
	}
	leaderSeen := time.Now()
	for _, w := range []*writer{wa, wb} {
		waitFor(t, 5*time.Second, "a write through each instance on the new leader", func() bool {
			_, ok := w.firstOn(candidate.PGPort)
			return ok
		})
		w.halt()
		checkWrites(t, w, leaderSeen, candidate)
	}
	if err := pc.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	wa, wb = startWriter(t, a, "rw"), startWriter(t, b, "rw")
	if err := pc.KillNode(candidate); err != nil {
		t.Fatal(err)
	}
	next, err := pc.WaitLeader(ctx, candidate)
	if err != nil {
		t.Fatal(err)
	}
	leaderSeen = time.Now()
	for _, w := range []*writer{wa, wb} {
		waitFor(t, 5*time.Second, "a write through each instance on the leader after the loss", func() bool {
			_, ok := w.firstOn(next.PGPort)
			return ok
		})
		w.halt()
		checkWrites(t, w, leaderSeen, next)
	}
}
