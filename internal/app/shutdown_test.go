package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestShutdownAtIdlePoints: after the first signal pgfront stops accepting, ends an idle
// session and a queued client at once with FATAL 57P01, lets a running query finish and a
// session in a transaction work until it commits, ending each at that idle point; Run
// returns nil once no session is left.
func TestShutdownAtIdlePoints(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	r := startRun(t, oneServerConfig(p, "maxconn: 3\ntimeouts:\n  queue: 30s", ""))
	idle := pgconnectTo(t, r.dsn())
	tx := pgconnectTo(t, r.dsn())
	if _, err := tx.Exec(context.Background(), "BEGIN; CREATE TABLE drained (v int); INSERT INTO drained VALUES (1)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	busy := pgconnectTo(t, r.dsn())
	busyPID, _ := sessionInfo(t, busy)
	queued := startConnect(t, r.dsn())
	waitFor(t, 5*time.Second, "the fourth client to be accepted", func() bool { return r.app.Frontend().Sessions() == 4 })

	// A query running at the signal completes; the session ends after its result.
	busyDone := make(chan error, 1)
	go func() {
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(1.5)").ReadAll()
		busyDone <- err
	}()
	waitFor(t, 5*time.Second, "pg_sleep to run", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active'", busyPID))
		return err == nil && v == "1"
	})

	r.sigs <- syscall.SIGTERM
	start := time.Now()
	wantFatal(t, waitUnsolicited(idle, 5*time.Second), "57P01")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle session ended %s after the signal, want at once", d)
	}
	// The queued client connected before the signal: it is not refused. It gets the slot the
	// idle session freed, logs in, and ends at its own idle point like the others.
	select {
	case <-queued.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("queued client still waiting 5s after the signal")
	}
	if queued.err != nil {
		t.Fatalf("a client queued before the signal was refused: %v", queued.err)
	}
	defer queued.conn.Close(context.Background())
	wantFatal(t, waitUnsolicited(queued.conn, 5*time.Second), "57P01")
	select {
	case err := <-busyDone:
		if err != nil {
			t.Fatalf("query running at the signal: %v, want its result", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("query running at the signal did not return")
	}
	wantFatal(t, waitUnsolicited(busy, 5*time.Second), "57P01")

	// The listener closed before idle sessions were drained: new clients are refused.
	if c := connectNow(r.dsn()); c.err == nil || !errors.Is(c.err, syscall.ECONNREFUSED) {
		if c.conn != nil {
			_ = c.conn.Close(context.Background())
		}
		t.Fatalf("connecting after the signal: %v, want connection refused", c.err)
	}

	// The transaction goes on until it ends.
	if v := pgQuery(t, tx, "SELECT count(*) FROM drained"); v != "1" {
		t.Fatalf("in the open transaction: %q", v)
	}
	r.wantRunning(t)
	if _, err := tx.Exec(context.Background(), "COMMIT").ReadAll(); err != nil {
		t.Fatalf("COMMIT during shutdown: %v", err)
	}
	wantFatal(t, waitUnsolicited(tx, 5*time.Second), "57P01")
	r.wantReturned(t, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := p.QueryValue(ctx, "SELECT count(*) FROM drained"); err != nil || v != "1" {
		t.Fatalf("the committed row: %q %v", v, err)
	}
	for _, c := range []*pgconn.PgConn{idle, busy, tx} {
		line := logLine(t, r.logs, `msg="session ended"`, c.Conn().LocalAddr().String())
		if got := logAttr(line, "cause"); got != "shutdown" {
			t.Fatalf("cause %q, want shutdown\n%s", got, line)
		}
	}
}

// TestShutdownGrace: a session that stays in its transaction is ended when shutdown.grace
// runs out.
func TestShutdownGrace(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	r := startRun(t, oneServerConfig(p, "", "shutdown:\n  grace: 1s"))
	tx := pgconnectTo(t, r.dsn())
	pid, _ := sessionInfo(t, tx)
	if _, err := tx.Exec(context.Background(), "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}

	r.sigs <- syscall.SIGTERM
	start := time.Now()
	wantFatal(t, waitUnsolicited(tx, 10*time.Second), "57P01")
	if d := time.Since(start); d < 800*time.Millisecond || d > 3*time.Second {
		t.Fatalf("session in a transaction ended %s after the signal, want ~1s (shutdown.grace)", d)
	}
	r.wantReturned(t, 3*time.Second)
	waitFor(t, 3*time.Second, "the backend to exit", func() bool { return !backendAlive(t, p, pid) })
}

// TestShutdownSecondSignal: a second signal ends every session at once, long before the grace
// period.
func TestShutdownSecondSignal(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	r := startRun(t, oneServerConfig(p, "", "shutdown:\n  grace: 30s"))
	tx := pgconnectTo(t, r.dsn())
	if _, err := tx.Exec(context.Background(), "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}

	r.sigs <- syscall.SIGTERM
	waitFor(t, 5*time.Second, "the shutdown to begin", func() bool {
		return strings.Contains(r.logs.String(), "draining:")
	})
	if v := pgQuery(t, tx, "SELECT 1"); v != "1" {
		t.Fatalf("in the transaction after the first signal: %q", v)
	}
	r.wantRunning(t)

	r.sigs <- syscall.SIGINT
	start := time.Now()
	wantFatal(t, waitUnsolicited(tx, 10*time.Second), "57P01")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("session ended %s after the second signal, want at once", d)
	}
	r.wantReturned(t, 3*time.Second)
	if !strings.Contains(r.logs.String(), "second signal") {
		t.Fatalf("no log line for the second signal")
	}
}

// runningApp is an App inside Run, as cmd/pgfront runs it.
type runningApp struct {
	app  *app.App
	logs *syncBuffer
	sigs chan os.Signal
	addr *net.TCPAddr // route rw
	done chan struct{}
	err  error // Run's result, valid once done is closed
}

// newApp builds an App from yamlText, written to a file as pgfront run reads it (so SIGHUP can
// re-read it), with a debug logger writing to the returned buffer.
func newApp(t *testing.T, yamlText string) (*app.App, *syncBuffer) {
	t.Helper()
	parseTestConfig(t, yamlText) // fails the test with the text on a bad config
	path := filepath.Join(t.TempDir(), "pgfront.yaml")
	if err := os.WriteFile(path, []byte(yamlWithAdmin(yamlText)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return a, logs
}

// startRun runs an App built from yamlText (route rw on 127.0.0.1:0) and waits until it
// listens.
func startRun(t *testing.T, yamlText string) *runningApp {
	t.Helper()
	a, logs := newApp(t, yamlText)
	r := runApp(t, a, logs)
	// Poll Addr while Run starts the listeners in its goroutine (under -race this also checks
	// that Addr is safe for concurrent use).
	var addr net.Addr
	waitFor(t, 5*time.Second, "Run to listen", func() bool {
		select {
		case <-r.done:
			t.Fatalf("Run returned early: %v", r.err)
		default:
		}
		addr = a.Addr("rw")
		return addr != nil
	})
	r.addr = addr.(*net.TCPAddr)
	return r
}

// runApp calls a.Run in a goroutine. At the end of the test Run is signalled (twice, if
// still running) and waited for.
func runApp(t *testing.T, a *app.App, logs *syncBuffer, opts ...app.RunOptions) *runningApp {
	r := &runningApp{app: a, logs: logs, sigs: make(chan os.Signal, 2), done: make(chan struct{})}
	var o app.RunOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	go func() {
		defer close(r.done)
		r.err = a.Run(r.sigs, o)
	}()
	t.Cleanup(func() {
		for range 2 {
			select {
			case r.sigs <- syscall.SIGTERM:
			default:
			}
		}
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return at the end of the test")
			a.Close()
			<-r.done
		}
		if t.Failed() {
			t.Logf("pgfront log:\n%s", logs.String())
		}
	})
	return r
}

func (r *runningApp) dsn() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=10", r.addr.IP, r.addr.Port)
}

// wantRunning checks that Run has not returned.
func (r *runningApp) wantRunning(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		t.Fatalf("Run returned (%v) while a session was still open", r.err)
	default:
	}
}

// wantReturned waits for Run to return nil.
func (r *runningApp) wantReturned(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		t.Fatalf("Run did not return within %s", within)
	}
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
}

// drainTrigger starts pgfront in front of p and says how to start a drain of its sessions: a
// SIGTERM, or an administrator's drain of the server.
type drainTrigger struct {
	name  string
	start func(t *testing.T, p *pgtest.Server) (dsn string, fe *frontend.Frontend, drain func())
}

var drainTriggers = []drainTrigger{
	{"sigterm", func(t *testing.T, p *pgtest.Server) (string, *frontend.Frontend, func()) {
		r := startRun(t, oneServerConfig(p, "", ""))
		return r.dsn(), r.app.Frontend(), func() {
			r.sigs <- syscall.SIGTERM
			// Shutdown closes the listener, then drains: once a connect is refused, it has.
			waitFor(t, 5*time.Second, "the listener to close", func() bool {
				c, err := net.Dial("tcp", r.addr.String())
				if err == nil {
					_ = c.Close()
				}
				return errors.Is(err, syscall.ECONNREFUSED)
			})
		}
	}},
	{"admin", func(t *testing.T, p *pgtest.Server) (string, *frontend.Frontend, func()) {
		e := startProxy(t, oneServerConfig(p, "", ""))
		return e.dsn("rw"), e.app.Frontend(), func() {
			if code := e.api("POST", "/api/v1/servers/c/pg/state", "", map[string]string{"state": "drain"}, nil); code != 200 {
				t.Fatalf("drain: %d", code)
			}
		}
	}},
}

// TestDrainKeepsTransactionPastParkDelay: a session idle inside a transaction for less than the
// 2s parking delay when the drain starts keeps its transaction past that delay (it used to be
// ended there with idle_in_transaction_timeout and rolled back): it may be parked, its COMMIT
// succeeds, and it ends at that boundary with 57P01.
func TestDrainKeepsTransactionPastParkDelay(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	for _, tr := range drainTriggers {
		t.Run(tr.name, func(t *testing.T) {
			dsn, fe, drain := tr.start(t, p)
			c := pgconnectTo(t, dsn)
			table := "drained_" + tr.name
			if _, err := c.Exec(context.Background(), fmt.Sprintf("BEGIN; CREATE TABLE %s (v int); INSERT INTO %[1]s VALUES (1)", table)).ReadAll(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			drain()
			// Past the park deadline (2s after the INSERT): the session parks there.
			for fe.Parked() == 0 && time.Since(start) < 2500*time.Millisecond {
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("parked sessions %s after the drain began: %d", time.Since(start).Round(time.Millisecond), fe.Parked())
			if _, err := c.Exec(context.Background(), "COMMIT").ReadAll(); err != nil {
				t.Fatalf("COMMIT %s after the drain began: %v", time.Since(start).Round(time.Millisecond), err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if v, err := p.QueryValue(ctx, "SELECT count(*) FROM "+table); err != nil || v != "1" {
				t.Fatalf("the committed row: %q %v", v, err)
			}
			wantFatal(t, waitUnsolicited(c, 5*time.Second), "57P01")
		})
	}
}

// TestDrainLetsNewClientRunFirstQuery: a drain that begins right after a client logged in does
// not cut it before its first query (a connect-per-transaction client would see an error): the
// session ends once the client has been quiet at a transaction boundary for a moment.
func TestDrainLetsNewClientRunFirstQuery(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	for _, tr := range drainTriggers {
		t.Run(tr.name, func(t *testing.T) {
			dsn, _, drain := tr.start(t, p)
			c := pgconnectTo(t, dsn)
			drain()
			if v := pgQuery(t, c, "SELECT 41 + 1"); v != "42" {
				t.Fatalf("first query after the drain began: %q", v)
			}
			wantFatal(t, waitUnsolicited(c, 5*time.Second), "57P01")
		})
	}
}

// TestShutdownGraceCancelsRunningQuery: a query still running when shutdown.grace runs out is
// cancelled on the server (the backend used to run on for nobody), and Run returns promptly
// after the grace period rather than after server_fin more.
func TestShutdownGraceCancelsRunningQuery(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	r := startRun(t, oneServerConfig(p, "", "shutdown:\n  grace: 2s"))
	c := pgconnectTo(t, r.dsn())
	pid, _ := sessionInfo(t, c)
	queryDone := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		queryDone <- err
	}()
	waitFor(t, 5*time.Second, "pg_sleep to run", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active'", pid))
		return err == nil && v == "1"
	})

	r.sigs <- syscall.SIGTERM
	start := time.Now()
	r.wantReturned(t, 5*time.Second) // grace + 3s
	t.Logf("Run returned %s after the signal", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-queryDone:
		wantFatal(t, err, "57P01")
	case <-time.After(5 * time.Second):
		t.Fatal("the client's query did not end")
	}
	waitFor(t, 5*time.Second, "the pg_sleep backend to exit", func() bool { return !backendAlive(t, p, pid) })
}
