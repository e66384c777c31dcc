package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// (The startup bound during login is covered by TestBadInput's "startup trickle".)

// TestClientIdleTimeout: a client silent for client_idle outside a transaction is told
// FATAL 57P05 and its backend goes away.
func TestClientIdleTimeout(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_idle: 1s", ""))
	c := e.pgconnect("rw")
	pid, _ := sessionInfo(t, c)

	start := time.Now()
	err := waitUnsolicited(c, 10*time.Second)
	elapsed := time.Since(start)
	wantFatal(t, err, "57P05")
	if elapsed < 800*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("idle session ended after %s, want ~1s (client_idle)", elapsed)
	}
	waitFor(t, 3*time.Second, "the backend to exit", func() bool { return !backendAlive(t, p, pid) })
	wantCause(t, e, c.Conn().LocalAddr().String(), "client_idle_timeout")
}

// TestIdleInTransactionTimeout: inside a transaction the idle_in_transaction bound applies
// (client_idle is long): FATAL 25P03, and the open transaction's backend goes away.
func TestIdleInTransactionTimeout(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_idle: 1h\n  idle_in_transaction: 1s", ""))
	c := e.pgconnect("rw")
	pid, _ := sessionInfo(t, c)
	if _, err := c.Exec(context.Background(), "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if c.TxStatus() != 'T' {
		t.Fatalf("after BEGIN: tx status %q", c.TxStatus())
	}

	start := time.Now()
	err := waitUnsolicited(c, 10*time.Second)
	elapsed := time.Since(start)
	wantFatal(t, err, "25P03")
	if elapsed < 800*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("session idle in transaction ended after %s, want ~1s (idle_in_transaction)", elapsed)
	}
	waitFor(t, 3*time.Second, "the backend to exit", func() bool { return !backendAlive(t, p, pid) })
	wantCause(t, e, c.Conn().LocalAddr().String(), "idle_in_transaction_timeout")
}

// TestLongQueryNotIdle: a query running longer than client_idle is not cut (the client is
// waiting, not idle); once the session is idle again, the bound applies again.
func TestLongQueryNotIdle(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_idle: 1s", ""))
	c := e.pgconnect("rw")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Exec(ctx, "SELECT pg_sleep(2)").ReadAll(); err != nil {
		t.Fatalf("pg_sleep(2) with client_idle 1s: %v", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("pg_sleep(2) returned after %s", d)
	}
	if v := pgQuery(t, c, "SELECT 1"); v != "1" {
		t.Fatalf("query after the long one: %q", v)
	}

	start = time.Now()
	wantFatal(t, waitUnsolicited(c, 10*time.Second), "57P05")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle bound after the long query fired after %s, want ~1s", d)
	}
	wantCause(t, e, c.Conn().LocalAddr().String(), "client_idle_timeout")
}

// waitUnsolicited waits up to within for something the server sends on its own; a FATAL
// ErrorResponse comes back as its *pgconn.PgError.
func waitUnsolicited(c *pgconn.PgConn, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return c.WaitForNotification(ctx)
}

// wantFatal checks that err is a FATAL *pgconn.PgError with code.
func wantFatal(t *testing.T, err error, code string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code || pe.Severity != "FATAL" {
		t.Fatalf("got %v, want FATAL %s", err, code)
	}
}
