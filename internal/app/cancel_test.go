package app_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestCancelRoutedToSessionServer: two servers behind a roundrobin route; a CancelRequest
// sent to pgfront's listener reaches the server of the session whose key it carries, never
// the balancer's next pick, and cancels that session's query only. Cancelling A, A, B, B
// makes a cancel that followed the roundrobin miss at least once. An unknown key is dropped
// and counted. Both servers are primaries by the config (check: none): with checks that ask
// the servers, two primaries would be a split brain and the route would use neither.
func TestCancelRoutedToSessionServer(t *testing.T) {
	p1 := pgtest.NewPrimary(t, nil)
	p2 := pgtest.NewPrimary(t, nil)
	e := startProxy(t, fmt.Sprintf(`
clusters:
  c:
    health: {check: none}
    servers:
      - name: a
        address: %s
        role: primary
      - name: b
        address: %s
        role: primary
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
    balance: roundrobin
`, p1.Addr(), p2.Addr()))

	// One session on each server (roundrobin alternates; a few tries are plenty).
	byPort := map[int]*pgconn.PgConn{}
	for i := 0; i < 6 && len(byPort) < 2; i++ {
		c := e.pgconnect("rw")
		port, err := strconv.Atoi(pgQuery(t, c, "SELECT current_setting('port')"))
		if err != nil {
			t.Fatal(err)
		}
		if byPort[port] == nil {
			byPort[port] = c
		}
	}
	sessions := []*cancelSession{
		{name: "A", conn: byPort[p1.Port], server: p1},
		{name: "B", conn: byPort[p2.Port], server: p2},
	}
	for _, s := range sessions {
		if s.conn == nil {
			t.Fatalf("roundrobin never placed a session on server %s (port %d)", s.server.Name, s.server.Port)
		}
	}
	t.Cleanup(func() {
		// Never leave a pg_sleep(30) running behind the test.
		for _, s := range sessions {
			if s.done != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = s.conn.CancelRequest(ctx)
				cancel()
				<-s.done
			}
		}
	})

	// An unknown key (A's pid with a wrong secret) is counted and cancels nothing: no session
	// has it, so it goes as received to the route's servers (the fallback), which ignore it.
	for _, s := range sessions {
		s.start(t)
	}
	before := e.app.Frontend().UnknownCancels()
	c, _ := wireDial(t, e, "rw")
	wireSend(t, c, &pgproto3.CancelRequest{ProcessID: sessions[0].conn.PID(), SecretKey: []byte("wrong-secret")})
	if n, err := io.ReadFull(c, make([]byte, 1)); n != 0 || isTimeout(err) {
		t.Fatalf("after an unknown CancelRequest: read %d bytes, %v; want the connection closed", n, err)
	}
	waitFor(t, 3*time.Second, "the unknown cancel to be counted", func() bool {
		return e.app.Frontend().UnknownCancels() == before+1
	})
	for _, s := range sessions {
		s.stillRunning(t)
	}
	if line := logLine(t, e.logs, `msg="cancel request"`, c.LocalAddr().String()); logAttr(line, "result") != "fallback" || logAttr(line, "servers") != "2" ||
		logAttr(line, "level") != "INFO" || logAttr(line, "duration_ms") == "" {
		t.Fatalf("unknown cancel logged as %s", line)
	}

	for round, target := range []int{0, 0, 1, 1} {
		for _, s := range sessions {
			s.start(t)
		}
		s, other := sessions[target], sessions[1-target]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.conn.CancelRequest(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: cancel request for %s: %v", round, s.name, err)
		}
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: %s's pg_sleep(30) not cancelled within 5s", round, s.name)
		}
		if code := sqlstate(s.err); code != "57014" {
			t.Fatalf("round %d: %s's query ended with %v, want SQLSTATE 57014", round, s.name, s.err)
		}
		s.done = nil
		other.stillRunning(t)
		// The cancelled session goes on.
		if v := pgQuery(t, s.conn, "SELECT 1"); v != "1" {
			t.Fatalf("round %d: %s after its cancel: %q", round, s.name, v)
		}
	}
}

// cancelSession is a pgconn session running SELECT pg_sleep(30) in the background.
type cancelSession struct {
	name   string
	conn   *pgconn.PgConn
	server *pgtest.Server
	done   chan struct{} // nil when no query runs; closed when it returned
	err    error         // valid once done is closed
}

// start runs pg_sleep(30) unless it already runs, and waits until the server shows it active.
func (s *cancelSession) start(t *testing.T) {
	t.Helper()
	if s.done != nil {
		return
	}
	done := make(chan struct{})
	s.done = done
	go func() {
		defer close(done)
		_, s.err = s.conn.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
	}()
	waitFor(t, 5*time.Second, s.name+"'s pg_sleep to run on its server", func() bool { return s.sleeping(t) })
}

// sleeping reports whether the session's backend is running its pg_sleep.
func (s *cancelSession) sleeping(t *testing.T) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.server.QueryValue(ctx, fmt.Sprintf(
		"SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'", s.conn.PID()))
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return v == "1"
}

// stillRunning checks that the session's query was not cancelled.
func (s *cancelSession) stillRunning(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		t.Fatalf("%s's pg_sleep ended (%v) though nobody cancelled it", s.name, s.err)
	default:
	}
	if !s.sleeping(t) {
		t.Fatalf("%s's pg_sleep no longer runs on %s", s.name, s.server.Name)
	}
}
