package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
