package app_test

// Restart and upgrade end to end: a second App started with the same config takes the first
// one's listening sockets over the hand-over socket while clients connect without pause; the
// first one drains, and until its last session is gone it keeps checking its servers and
// ending sessions on a server marked down.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// churn connects, runs one query and disconnects, again and again, until stop: a
// connection-per-transaction client such as pgbench -C. Every failure is kept.
type churn struct {
	addr   string
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	mu     sync.Mutex
	failed []error
}

func startChurn(t *testing.T, addr string) *churn {
	c := &churn{addr: addr, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.halt)
	return c
}

func (c *churn) run() {
	defer close(c.done)
	host, port, _ := net.SplitHostPort(c.addr)
	dsn := fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=10", host, port)
	deadline := time.Now().Add(2 * time.Minute) // bounded whatever the test does
	for time.Now().Before(deadline) {
		select {
		case <-c.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
			_ = conn.Close(ctx)
		}
		cancel()
		if err != nil {
			c.mu.Lock()
			c.failed = append(c.failed, err)
			c.mu.Unlock()
			continue
		}
		c.ok.Add(1)
	}
}

func (c *churn) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *churn) failures() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.failed...)
}

// waitMore waits until n more successful rounds than now have run.
func (c *churn) waitMore(t *testing.T, n int64) {
	t.Helper()
	want := c.ok.Load() + n
	waitFor(t, 20*time.Second, fmt.Sprintf("%d more churn connections", n), func() bool { return c.ok.Load() >= want })
}

// TestUpgradeHandsOverListeners: a second App on the same config takes the route and admin
// listeners of the first over the hand-over socket; a connect-per-query client sees no failure
// throughout, a transaction open on the first App commits, and the first App then ends.
func TestUpgradeHandsOverListeners(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "handover.sock")
	yaml := oneServerConfig(p, "", "shutdown: {grace: 60s}")
	opts := app.RunOptions{HandoverSocket: sock}

	oldApp, oldLogs := newApp(t, yaml)
	old := runApp(t, oldApp, oldLogs, opts)
	waitFor(t, 10*time.Second, "the first pgfront to listen", func() bool { return oldApp.Addr("rw") != nil && oldApp.AdminAddr() != nil })
	addr, adminAddr := oldApp.Addr("rw").String(), oldApp.AdminAddr().String()

	tx, err := pgconn.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", oldApp.Addr("rw").(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close(context.Background())
	if _, err := tx.Exec(ctx, "BEGIN; CREATE TABLE upgraded (v int); INSERT INTO upgraded VALUES (1)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	c := startChurn(t, addr)
	c.waitMore(t, 20)

	for i := range 3 {
		na, naLogs := newApp(t, yaml)
		next := runApp(t, na, naLogs, opts)
		waitFor(t, 20*time.Second, "the new pgfront to serve the same addresses", func() bool {
			return na.Addr("rw") != nil && na.Addr("rw").String() == addr &&
				na.AdminAddr() != nil && na.AdminAddr().String() == adminAddr
		})
		c.waitMore(t, 20)
		if i == 0 {
			old.wantRunning(t) // its transaction is still open
			if _, err := tx.Exec(ctx, "INSERT INTO upgraded VALUES (2); COMMIT").ReadAll(); err != nil {
				t.Fatalf("a transaction open across the upgrade was cut: %v", err)
			}
		}
		old.wantReturned(t, 30*time.Second)
		old = next
	}
	c.halt()
	if f := c.failures(); len(f) > 0 {
		t.Fatalf("%d of %d connections failed during 3 upgrades; first: %v", len(f), int64(len(f))+c.ok.Load(), f[0])
	}
	if v, err := p.QueryValue(ctx, "SELECT count(*) FROM upgraded"); err != nil || v != "2" {
		t.Errorf("rows committed across the upgrade: %q, %v; want 2", v, err)
	}
}

// TestDrainingAdminHandedOver: a process draining after SIGTERM (its route listener closed,
// its admin listener kept to watch the drain) gives its admin listener to a new process, which
// therefore starts at once instead of failing with "address already in use".
func TestDrainingAdminHandedOver(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "handover.sock")
	yaml := oneServerConfig(p, "", "shutdown: {grace: 60s}")
	opts := app.RunOptions{HandoverSocket: sock}
	oldApp, oldLogs := newApp(t, yaml)
	old := runApp(t, oldApp, oldLogs, opts)
	waitFor(t, 10*time.Second, "the first pgfront to listen", func() bool { return oldApp.AdminAddr() != nil })
	adminAddr := oldApp.AdminAddr().String()
	tx, err := pgconn.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", oldApp.Addr("rw").(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close(context.Background())
	if _, err := tx.Exec(ctx, "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}
	old.sigs <- syscall.SIGTERM
	waitFor(t, 10*time.Second, "the first pgfront to drain", func() bool {
		e := &env{t: t, app: oldApp, logs: oldLogs}
		return e.api("GET", "/healthz", "", nil, nil) == 503
	})

	// The admin config names the address the draining process holds.
	na, naLogs := newApp(t, fmt.Sprintf("%s\nadmin:\n  listen: %s\n", yaml, adminAddr))
	runApp(t, na, naLogs, opts)
	waitFor(t, 20*time.Second, "the new pgfront to serve the admin address", func() bool {
		return na.AdminAddr() != nil && na.AdminAddr().String() == adminAddr
	})
	old.wantRunning(t)
	if _, err := tx.Exec(ctx, "COMMIT").ReadAll(); err != nil {
		t.Fatalf("the draining process's transaction: %v", err)
	}
	old.wantReturned(t, 20*time.Second)
}

// TestDrainKeepsHealthChecks: after handing its listeners over, the old process still checks
// its servers; when its server is marked down its remaining session ends within a second.
func TestDrainKeepsHealthChecks(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.CreateUser(ctx, "mon", "mon-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "handover.sock")
	yaml := fmt.Sprintf(`
shutdown: {grace: 60s}
clusters:
  c:
    health: {check: postgres, user: mon, password: mon-pw, interval: 300ms, fast_interval: 100ms, timeout: 250ms, rise: 1, fall: 1}
    servers:
      - {name: pg, address: %s}
routes:
  rw: {listen: 127.0.0.1:0, cluster: c, role: primary}
`, p.Addr())
	opts := app.RunOptions{HandoverSocket: sock}
	oldApp, oldLogs := newApp(t, yaml)
	old := runApp(t, oldApp, oldLogs, opts)
	oldEnv := &env{t: t, app: oldApp, logs: oldLogs}
	waitFor(t, 10*time.Second, "pg to be seen as primary", func() bool { return oldApp.Addr("rw") != nil && serverIs(t, oldEnv, "pg", "primary") })
	s, err := pgconn.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", oldApp.Addr("rw").(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := s.Exec(ctx, "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}

	na, naLogs := newApp(t, yaml)
	runApp(t, na, naLogs, opts)
	waitFor(t, 20*time.Second, "the new pgfront to take the route", func() bool {
		return na.Addr("rw") != nil && na.AdminAddr() != nil
	})
	old.wantRunning(t)

	// The monitoring user can no longer log in: the old process's checks fail and it marks the
	// server down; its open session (another user, still connected) must end.
	// (The check keeps its connection between checks: end it too.)
	if err := p.Exec(ctx, "ALTER ROLE mon NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mon'"); err != nil {
		t.Fatal(err)
	}
	markedDown := time.Now()
	ended := make(chan error, 1)
	go func() {
		_, err := s.Exec(ctx, "SELECT pg_sleep(30)").ReadAll()
		ended <- err
	}()
	select {
	case err := <-ended:
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
			t.Errorf("the draining process ended its session with %v, want 57P01", err)
		}
		// The check interval (300ms) plus one failed check (fall 1) plus the end itself.
		if d := time.Since(markedDown); d > 3*time.Second {
			t.Errorf("the session ended %v after the server started failing checks", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the draining process never ended its session on a server that went down: its checks stopped")
	}
	old.wantReturned(t, 20*time.Second)
}

// TestUpgradeRelaysCancel: a query running in the old process after a hand-over is cancelled by
// a CancelRequest that, like every new connection, reaches the new process.
func TestUpgradeRelaysCancel(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "handover.sock")
	yaml := oneServerConfig(p, "", "shutdown: {grace: 60s}")
	opts := app.RunOptions{HandoverSocket: sock}
	oldApp, oldLogs := newApp(t, yaml)
	old := runApp(t, oldApp, oldLogs, opts)
	waitFor(t, 10*time.Second, "the first pgfront to listen", func() bool { return oldApp.Addr("rw") != nil })
	addr := oldApp.Addr("rw").String()
	s, err := pgconn.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", oldApp.Addr("rw").(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())

	na, naLogs := newApp(t, yaml)
	runApp(t, na, naLogs, opts)
	waitFor(t, 20*time.Second, "the new pgfront to take the route", func() bool {
		return na.Addr("rw") != nil && na.Addr("rw").String() == addr
	})
	old.wantRunning(t)

	result := make(chan error, 1)
	go func() {
		_, err := s.Exec(ctx, "SELECT pg_sleep(30)").ReadAll()
		result <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep to run", func() bool {
		v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active'", s.PID()))
		return err == nil && v == "1"
	})
	// pgconn's CancelRequest dials the address the session was opened on: the new process now.
	if err := s.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("query after the relayed cancel: %v, want 57014 (canceled)", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the cancel sent to the new process did not reach the old process's session")
	}
	// The old process said it had the session: the new one did not fall back to the servers.
	waitFor(t, 10*time.Second, "the new process's cancel line with via=predecessor", func() bool {
		for _, l := range strings.Split(naLogs.String(), "\n") {
			if strings.Contains(l, `msg="cancel request"`) && strings.Contains(l, "result=forwarded") && strings.Contains(l, "via=predecessor") {
				return true
			}
		}
		return false
	})
}
