package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestConnectMovesOnToNextServer: the first server of a route is down, the second is up; the
// client is served by the second. With every server down the client gets FATAL 08006 that says
// so, and the proxy logs connect_failed.
func TestConnectMovesOnToNextServer(t *testing.T) {
	down := pgtest.NewPrimary(t, nil)
	up := pgtest.NewPrimary(t, nil)
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: none} # static: the connect itself finds the dead server
    servers:
      - {name: down, address: %s, role: primary}
      - {name: up, address: %s, role: primary}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary, balance: first, connect_retries: 1}
`, down.Addr(), up.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.connect("rw")
	var port int
	if err := c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != up.Port {
		t.Fatalf("served by port %d, want the live server %d", port, up.Port)
	}
	if !strings.Contains(e.logs.String(), "server connect failed") {
		t.Fatal("the failed connect was not logged")
	}

	if err := up.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := pgconn.Connect(ctx, e.dsn("rw"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08006" || pgErr.Severity != "FATAL" {
		t.Fatalf("with every server down: %v, want FATAL 08006", err)
	}
	waitFor(t, 5*time.Second, "connect_failed log line", func() bool {
		return strings.Contains(e.logs.String(), "cause=connect_failed")
	})
}

// TestClientLeavesWhileWaitingAfterFailedConnect: a client whose connect was refused waits
// (timeouts.failover_wait, 30s here) for a server to appear, and is watched meanwhile as in the first
// queue wait: one that closes ends its session at once (client_eof) instead of being held and
// then connected for nobody; one that speaks out of turn gets FATAL 08P01.
func TestClientLeavesWhileWaitingAfterFailedConnect(t *testing.T) {
	down := pgtest.NewPrimary(t, nil)
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	e := startProxy(t, waitingConfig(down, "only the connect finds the server dead"))
	wantLeaveNoticed(t, e, "server connect failed")

	c, fe := wireDial(t, e, "rw")
	if _, err := c.Write(append(wireStartup(t, pgproto3.ProtocolVersion30), 'Q')); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	wireFatal(t, c, fe, "08P01", "unexpected message")
}

// TestClientLeavesWhileWaitingAfterStandbyRetry: the same watch while a session waits for
// another server after its first one turned out to be a standby (a primary route's in-band
// fence).
func TestClientLeavesWhileWaitingAfterStandbyRetry(t *testing.T) {
	_, standby := pgtest.NewPrimaryReplica(t)
	e := startProxy(t, waitingConfig(standby, "only the login finds the standby"))
	wantLeaveNoticed(t, e, "trying another server")
}

// waitingConfig is route rw on a cluster of the one server srv, given as the primary, with a
// 30s wait for a server.
func waitingConfig(srv *pgtest.Server, why string) string {
	return fmt.Sprintf(`
clusters:
  c:
    health: {check: none} # static: %s
    servers:
      - {name: s, address: %s, role: primary}
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary, connect_retries: 1, timeouts: {failover_wait: 30s}}
`, why, srv.Addr())
}

// wantLeaveNoticed sends a StartupMessage through route rw, waits for pgfront to log after
// (the first server failed the session: it now waits for another), closes, and expects the
// session to end at once with client_eof.
func wantLeaveNoticed(t *testing.T, e *env, after string) {
	t.Helper()
	c, _ := wireDial(t, e, "rw")
	if _, err := c.Write(wireStartup(t, pgproto3.ProtocolVersion30)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("pgfront to log %q", after), func() bool {
		return strings.Contains(e.logs.String(), after)
	})
	_ = c.Close()
	waitFor(t, 3*time.Second, "the session of the client that left to end", func() bool {
		return e.app.Frontend().Sessions() == 0
	})
	wantCause(t, e, c.LocalAddr().String(), "client_eof")
}
