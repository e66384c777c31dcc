package patronitest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestPausePatroni: with the leader's Patroni frozen, its PostgreSQL stays a writable
// primary while the leader key expires and another node is promoted — two primaries at once.
// Resumed, Patroni ends the two primaries (usually by demoting it).
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
	// Resumed, Patroni ends the two primaries: one leader again, the other node in recovery.
	// Usually the old leader is rewound into a replica of the new one, but a resumed Patroni
	// may also win the key back when the new leader missed a renewal (a loaded machine), so
	// the test asks for one writable primary, not for which.
	wctx, wcancel := context.WithTimeout(ctx, failoverTimeout)
	defer wcancel()
	var last string
	err = poll(wctx, func(ctx context.Context) (bool, error) {
		l, err := c.Leader(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		writable := 0
		for _, n := range c.Nodes {
			if got, err := queryValue(ctx, n, "SELECT pg_is_in_recovery()"); err == nil && got == "f" {
				writable++
			}
		}
		last = fmt.Sprintf("leader %s, %d writable", l.Name, writable)
		return writable == 1, nil
	}, func(err error) error { return fmt.Errorf("after the resume: %w (last: %s)", err, last) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the resume: %s", last)
}
