package patronitest

import (
	"context"
	"testing"
	"time"
)

// TestPausePatroni: with the leader's Patroni frozen, its PostgreSQL stays a writable
// primary while the leader key expires and another node is promoted — two primaries at once.
// Resumed, Patroni demotes it.
func TestPausePatroni(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := New(t, Options{Nodes: 2})
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(ctx, t, leader, "CREATE TABLE t (x int)")
	if err := c.PausePatroni(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.PausePatroni(leader); err == nil {
		t.Error("paused twice")
	}
	started := time.Now()
	next, err := c.WaitLeader(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new leader %s after %v", next.Name, time.Since(started).Round(time.Millisecond))
	// The old primary still takes writes: its PostgreSQL never heard of the election.
	mustExec(ctx, t, leader, "INSERT INTO t VALUES (1)")
	if got, err := queryValue(ctx, next, "SELECT pg_is_in_recovery()"); err != nil || got != "f" {
		t.Fatalf("new leader in recovery: %q, %v", got, err)
	}
	if err := c.ResumePatroni(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.ResumePatroni(leader); err == nil {
		t.Error("resumed twice")
	}
	if err := c.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
}
