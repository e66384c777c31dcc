package app_test

// The half-close matrix, end to end: real PostgreSQL, real pgfront, real sockets. Each case
// makes one side of a session go away (FIN, Terminate, pg_terminate_backend, SIGKILL) and
// checks that pgfront lets go of both sockets within the session's bound, that the backend
// is gone, that the session's log line names the right cause, and that a new client still
// gets in. This is the HAProxy failure pgfront exists to prevent: sessions stuck half-closed
// (CLOSE_WAIT / FIN_WAIT2) holding maxconn slots.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// hcFinTimeouts are short FIN bounds so the cases that wait for them stay fast.
const hcFinTimeouts = `
timeouts:
  client_fin: 1s
  server_fin: 1s
`

// TestHalfCloseMatrix runs the half-close cases against one shared PostgreSQL primary; each
// case starts its own pgfront. Case (f) kills a server, so it runs on its own in
// TestServerKilledMidQuery.
func TestHalfCloseMatrix(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	halfCloseMatrix(t, p, func(t *testing.T, routeExtra string) *env {
		return startProxy(t, oneServerConfig(p, routeExtra, ""))
	})
}

// halfCloseMatrix runs the cases against p, each with a pgfront that start builds from the
// route's extra YAML (plain, or TLS-terminating in TestHalfCloseMatrixTLS).
func halfCloseMatrix(t *testing.T, p *pgtest.Server, start func(t *testing.T, routeExtra string) *env) {

	// (a) A client sends a long query, then FIN, and never reads again. In abort mode (the
	// default) pgfront cancels the query and closes the server side at once: the backend is
	// gone in well under the query's 60s. Without the cancel the backend would sleep on: it
	// does not notice a closed socket during pg_sleep.
	t.Run("abort_busy_client_fin", func(t *testing.T) {
		e := start(t, hcFinTimeouts)
		c := hcDial(t, e, "rw")
		c.send(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
		hcWaitSleeping(t, p, c.pid)

		start := time.Now()
		c.closeWrite()
		hcWaitNoSockets(t, c, start, 3*time.Second)
		hcWaitBackendGone(t, p, c.pid, start, 3*time.Second)
		hcWantCause(t, e, c.local(), "client_eof")
		hcNewClientWorks(t, e, "rw")
	})

	// (a') The same abort with two queries pipelined (legal in the simple protocol, and what
	// libpq's pipeline mode does with Sync-separated batches). A CancelRequest only ends the
	// statement running when it arrives, so one cancel is not enough: the backend goes on to
	// the second query, which nobody will read, unless pgfront keeps cancelling until the
	// server is idle. The first statement survives the cancel for 0.5s, so the backend's
	// answer to it is written after pgfront closed the socket and succeeds; without that, a
	// reset from pgfront's closed socket sometimes arrives between the backend's two writes
	// ("could not send data to client: Broken pipe") and ends the backend by luck.
	t.Run("abort_busy_pipelined_client_fin", func(t *testing.T) {
		e := start(t, hcFinTimeouts)
		c := hcDial(t, e, "rw")
		c.fe.Send(&pgproto3.Query{String: "DO $$BEGIN PERFORM pg_sleep(60); " +
			"EXCEPTION WHEN query_canceled THEN PERFORM pg_sleep(0.5); END$$"})
		c.send(&pgproto3.Query{String: "SELECT pg_sleep(60) AS second"})
		hcWaitSleeping(t, p, c.pid)

		start := time.Now()
		c.closeWrite()
		hcWaitNoSockets(t, c, start, 3*time.Second)
		hcWantCause(t, e, c.local(), "client_eof")
		hcNewClientWorks(t, e, "rw")
		hcWaitBackendGone(t, p, c.pid, start, 3*time.Second)
	})

	// (b) An idle client whose backend is killed (pg_terminate_backend) and which never reads
	// nor closes. pgfront forwards the server's FATAL and its FIN, holds the half-closed
	// client side for client_fin (1s) and then lets go. The FATAL must still be in the
	// client's socket buffer afterwards: pgfront did not close before forwarding it.
	t.Run("server_terminated_idle_client_never_closes", func(t *testing.T) {
		e := start(t, hcFinTimeouts)
		c := hcDial(t, e, "rw")

		start := time.Now()
		hcTerminateBackend(t, p, c.pid)
		// The HAProxy state, but bounded: pgfront's client side half-closed (FIN_WAIT2), its
		// server side with the server's FIN read (CLOSE_WAIT).
		waitFor(t, 3*time.Second, "pgfront holding the session half-closed", func() bool {
			var cliFinWait2, srvCloseWait bool
			for _, s := range c.sockets() {
				cliFinWait2 = cliFinWait2 || (s.Remote == c.local() && s.State == netx.TCPFinWait2)
				srvCloseWait = srvCloseWait || (s.Local.Port() == c.serverPort && s.State == netx.TCPCloseWait)
			}
			return cliFinWait2 && srvCloseWait
		})
		gone := hcWaitNoSockets(t, c, start, 4*time.Second)
		if gone < 950*time.Millisecond {
			t.Errorf("sockets gone %s after the backend was terminated; client_fin is 1s", gone)
		}
		hcWaitBackendGone(t, p, c.pid, start, 4*time.Second)

		msgs := c.readToEOF()
		if len(msgs) != 1 || msgs[0].typ != 'E' {
			t.Fatalf("client read %v after the backend was terminated, want one ErrorResponse then EOF", msgs)
		}
		if er := msgs[0].errorResponse(t); er.Severity != "FATAL" || er.Code != "57P01" {
			t.Fatalf("forwarded error: %s %s %q, want FATAL 57P01", er.Severity, er.Code, er.Message)
		}
		hcWantCause(t, e, c.local(), "client_fin_timeout")
		hcNewClientWorks(t, e, "rw")
	})

	// (b') Scenario (b) under maxconn: the silent client's session holds its socket for
	// client_fin (30s here) but not its maxconn slot, which is freed once the server's FATAL
	// and FIN were passed on: the next client gets in long before client_fin and before its
	// own queue wait (10s) runs out, and the silent client still finds the FATAL.
	t.Run("server_terminated_slot_freed_before_client_fin", func(t *testing.T) {
		e := start(t, "maxconn: 1\ntimeouts:\n  client_fin: 30s\n  queue: 10s\n")
		c := hcDial(t, e, "rw")

		start := time.Now()
		hcTerminateBackend(t, p, c.pid)
		hcNewClientWorks(t, e, "rw")
		if took := time.Since(start); took > 8*time.Second {
			t.Fatalf("next client admitted %s after the backend was terminated; its slot was held", took)
		}
		msgs := c.readToEOF()
		if len(msgs) != 1 {
			t.Fatalf("silent client read %v, want the server's FATAL then EOF", msgs)
		}
		if er := msgs[0].errorResponse(t); er.Severity != "FATAL" || er.Code != "57P01" {
			t.Fatalf("forwarded error: %s %s %q, want FATAL 57P01", er.Severity, er.Code, er.Message)
		}
	})

	// (c) An idle client half-closes: abort mode ends the session at once, says goodbye to
	// the server, and sends the client nothing but its own FIN.
	t.Run("abort_idle_client_fin", func(t *testing.T) {
		e := start(t, hcFinTimeouts)
		c := hcDial(t, e, "rw")

		start := time.Now()
		c.closeWrite()
		hcWaitNoSockets(t, c, start, 2*time.Second)
		hcWaitBackendGone(t, p, c.pid, start, 3*time.Second)
		if msgs := c.readToEOF(); len(msgs) != 0 {
			t.Fatalf("client read %v after its FIN, want a bare EOF", msgs)
		}
		hcWantCause(t, e, c.local(), "client_eof")
		hcNewClientWorks(t, e, "rw")
	})

	// (d) With maxconn 1, the stuck sessions of (a) and (b) hold the only slot; a client
	// queued behind each is admitted as soon as pgfront cleans the stuck one, well before
	// timeouts.queue (10s).
	t.Run("maxconn_slot_freed", func(t *testing.T) {
		e := start(t, "maxconn: 1\n"+hcFinTimeouts+"  queue: 10s\n")
		fe := e.app.Frontend()

		// (a)-style: busy client sends FIN.
		a := hcDial(t, e, "rw")
		a.send(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
		hcWaitSleeping(t, p, a.pid)
		queued := hcQueueClient(t, e, "rw")
		waitFor(t, 5*time.Second, "a second client accepted", func() bool { return fe.Sessions() == 2 })
		start := time.Now()
		a.closeWrite()
		res := queued.wait(t)
		if res.err != nil {
			t.Fatalf("queued client behind a busy client's FIN: %v", res.err)
		}
		if d := res.at.Sub(start); d > 3*time.Second {
			t.Fatalf("queued client admitted %s after the stuck client's FIN, want within 3s", d)
		}
		hcWaitNoSockets(t, a, time.Now(), time.Second) // already gone: the slot was freed
		hcWaitBackendGone(t, p, a.pid, start, 3*time.Second)
		hcWantCause(t, e, a.local(), "client_eof")
		closeConn(res.conn)

		// (b)-style: idle client whose backend is terminated, client never reads nor closes.
		b := hcDial(t, e, "rw") // may queue briefly while the closed pgx session ends
		queued = hcQueueClient(t, e, "rw")
		waitFor(t, 5*time.Second, "a second client accepted", func() bool { return fe.Sessions() == 2 })
		start = time.Now()
		hcTerminateBackend(t, p, b.pid)
		res = queued.wait(t)
		if res.err != nil {
			t.Fatalf("queued client behind a terminated backend: %v", res.err)
		}
		if d := res.at.Sub(start); d > 4*time.Second {
			t.Fatalf("queued client admitted %s after the backend was terminated, want within 4s", d)
		}
		// The slot was freed with the server's FIN; the silent client's socket stays until
		// client_fin (1s).
		hcWaitNoSockets(t, b, start, 4*time.Second)
		hcWaitBackendGone(t, p, b.pid, start, 4*time.Second)
		hcWantCause(t, e, b.local(), "client_fin_timeout")
		closeConn(res.conn)
		hcNewClientWorks(t, e, "rw")
	})

	// (e) on_client_fin: forward keeps TCP half-close semantics.
	forward := "on_client_fin: forward\n" + hcFinTimeouts

	// An idle client's FIN reaches the server, which exits on EOF; then pgfront lets go.
	t.Run("forward_idle_client_fin", func(t *testing.T) {
		e := start(t, forward)
		c := hcDial(t, e, "rw")

		start := time.Now()
		c.closeWrite()
		hcWaitNoSockets(t, c, start, 2*time.Second)
		hcWaitBackendGone(t, p, c.pid, start, 3*time.Second)
		if msgs := c.readToEOF(); len(msgs) != 0 {
			t.Fatalf("client read %v after its FIN, want a bare EOF", msgs)
		}
		hcWantCause(t, e, c.local(), "client_eof")
		hcNewClientWorks(t, e, "rw")
	})

	// Half-close proper: a query sent right before the FIN is still answered, because the FIN
	// is passed on behind it rather than treated as an abort.
	t.Run("forward_query_then_fin_still_answered", func(t *testing.T) {
		e := start(t, forward)
		c := hcDial(t, e, "rw")

		c.send(&pgproto3.Query{String: "SELECT 40 + 2"})
		c.closeWrite()
		msgs := c.readToEOF()
		var types []byte
		for _, m := range msgs {
			types = append(types, m.typ)
		}
		if string(types) != "TDCZ" {
			t.Fatalf("client read message types %q after Query+FIN, want %q", types, "TDCZ")
		}
		var row pgproto3.DataRow
		if err := row.Decode(msgs[1].body); err != nil || len(row.Values) != 1 || string(row.Values[0]) != "42" {
			t.Fatalf("answer to a query sent before the FIN: %v %q", err, row.Values)
		}
		hcWaitNoSockets(t, c, time.Now(), 2*time.Second)
		hcWaitBackendGone(t, p, c.pid, time.Now(), 3*time.Second)
		hcWantCause(t, e, c.local(), "client_eof")
		hcNewClientWorks(t, e, "rw")
	})

	// A busy query plus FIN in forward mode: pgfront does not cancel at the FIN (the server
	// gets server_fin to finish and close); after server_fin (1s) it ends the session.
	t.Run("forward_busy_client_fin_server_fin", func(t *testing.T) {
		e := start(t, forward)
		c := hcDial(t, e, "rw")
		c.send(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
		hcWaitSleeping(t, p, c.pid)

		start := time.Now()
		c.closeWrite()
		gone := hcWaitNoSockets(t, c, start, 4*time.Second)
		// Had pgfront cancelled at the FIN, the server would have answered, read the FIN and
		// closed: cause client_eof, well before server_fin.
		if gone < 950*time.Millisecond {
			t.Errorf("sockets gone %s after the FIN; forward mode must wait server_fin (1s)", gone)
		}
		hcWantCause(t, e, c.local(), "server_fin_timeout")
		hcWaitBackendGone(t, p, c.pid, start, 4*time.Second)
		hcNewClientWorks(t, e, "rw")

		// The client only half-closed and may still read: pgfront ends the session itself, so
		// it owes the client a FATAL saying why (relay's fatalServerFin, 08006).
		msgs := c.readToEOF()
		if len(msgs) != 1 || msgs[0].typ != 'E' {
			t.Fatalf("half-closed client read %v when server_fin expired, want pgfront's FATAL 08006 then EOF", msgs)
		}
		if er := msgs[0].errorResponse(t); er.Severity != "FATAL" || er.Code != "08006" {
			t.Fatalf("error when server_fin expired: %s %s %q, want FATAL 08006", er.Severity, er.Code, er.Message)
		}
	})

	// (g) Terminate then close: the clean goodbye.
	t.Run("client_terminate", func(t *testing.T) {
		e := start(t, hcFinTimeouts)
		c := hcDial(t, e, "rw")

		start := time.Now()
		c.send(&pgproto3.Terminate{})
		if err := c.conn.Close(); err != nil {
			t.Fatal(err)
		}
		hcWaitNoSockets(t, c, start, 2*time.Second)
		hcWaitBackendGone(t, p, c.pid, start, 3*time.Second)
		hcWantCause(t, e, c.local(), "client_terminate")
		hcNewClientWorks(t, e, "rw")
	})
}

// TestServerKilledMidQuery is case (f): the server dies (SIGKILL) while a client waits for a
// query. The client gets an error instead of hanging, pgfront holds nothing for the session,
// and once the server is back a new client logs in through pgfront.
func TestServerKilledMidQuery(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_fin: 2s\n", ""))
	c := e.connect("rw")
	pid, serverPort := sessionInfo(t, c.PgConn())
	local := localAddrPort(c.PgConn().Conn())
	socks := func() []netx.Socket { return hcDistinct(proxySockets(t, local, serverPort)) }
	if n := len(socks()); n != 2 {
		t.Fatalf("pgfront holds %d sockets for the session before the kill, want 2", n)
	}

	errc := make(chan error, 1)
	go func() {
		// Far longer than the bound below: an error within it is not a timeout of ours.
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "SELECT pg_sleep(60)")
		errc <- err
	}()
	hcWaitSleeping(t, p, pid)

	start := time.Now()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("query on a killed server succeeded")
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("query on a killed server: %v", err)
		}
		t.Logf("client error after the kill (after %s): %v", time.Since(start), err)
	case <-time.After(5 * time.Second):
		t.Fatal("client still waiting 5s after its server was killed")
	}
	hcWaitNone(t, start, 4*time.Second, socks)
	if hcProcessAlive(pid) {
		t.Fatalf("backend %d still running after the kill", pid)
	}
	hcWantCause(t, e, local, "server_eof")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	hcNewClientWorks(t, e, "rw")
}

// hcClient is a client driven by hand through pgfront: it logs in, then misbehaves as a test
// needs (half-closes, never reads, never closes). Its conn is closed at the end of the test.
type hcClient struct {
	t          *testing.T
	conn       net.Conn     // raw, or TLS over raw when the env's client uses TLS
	raw        *net.TCPConn // the TCP connection
	fe         *pgproto3.Frontend
	pid        uint32 // backend pid
	serverPort uint16 // pgfront's server-side local port
}

// hcDial connects to route and logs in (hcLogin); it checks that pgfront holds both sockets of
// the session.
func hcDial(t *testing.T, e *env, route string) *hcClient {
	t.Helper()
	raw, err := net.DialTCP("tcp", nil, e.addr(route))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	c := hcLogin(t, e, raw)
	socks := c.sockets()
	if len(socks) != 2 || socks[0].State != netx.TCPEstablished || socks[1].State != netx.TCPEstablished {
		t.Fatalf("pgfront's sockets for a fresh session: %v, want 2 ESTABLISHED", socks)
	}
	return c
}

// hcLogin logs in as postgres (trust) on raw, a connection to a route the caller owns, and
// learns the session's backend pid and the backend's view of its client port.
func hcLogin(t *testing.T, e *env, raw *net.TCPConn) *hcClient {
	t.Helper()
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second)) // login may queue under maxconn
	var conn net.Conn = raw
	if e.clientTLS != nil {
		conn = startClientTLS(t, raw, e.clientTLS)
	}
	c := &hcClient{t: t, conn: conn, raw: raw, fe: pgproto3.NewFrontend(conn, conn)}
	c.send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": "postgres", "database": "postgres"},
	})
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("raw client login: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("raw client login: %s %s %s", m.Severity, m.Code, m.Message)
		case *pgproto3.BackendKeyData:
			c.pid = m.ProcessID
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	rows := c.query("SELECT pg_backend_pid(), inet_client_port()")
	var pid, port int
	if len(rows) != 1 || len(rows[0]) != 2 {
		t.Fatalf("session info rows: %q", rows)
	}
	fmt.Sscan(rows[0][0], &pid)
	fmt.Sscan(rows[0][1], &port)
	if uint32(pid) != c.pid || port == 0 {
		t.Fatalf("session info: pid %d port %d, BackendKeyData pid %d", pid, port, c.pid)
	}
	c.serverPort = uint16(port)
	_ = conn.SetDeadline(time.Time{})
	return c
}

func (c *hcClient) send(msg pgproto3.FrontendMessage) {
	c.t.Helper()
	c.fe.Send(msg)
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("raw client send %T: %v", msg, err)
	}
}

// query runs sql with the simple protocol and returns the rows as text.
func (c *hcClient) query(sql string) [][]string {
	c.t.Helper()
	c.send(&pgproto3.Query{String: sql})
	var rows [][]string
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("raw client query %q: %v", sql, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			c.t.Fatalf("raw client query %q: %s %s", sql, m.Code, m.Message)
		case *pgproto3.DataRow:
			row := make([]string, len(m.Values))
			for i, v := range m.Values {
				row[i] = string(v)
			}
			rows = append(rows, row)
		case *pgproto3.ReadyForQuery:
			return rows
		}
	}
}

func (c *hcClient) closeWrite() {
	c.t.Helper()
	if tc, ok := c.conn.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil { // close_notify, then the FIN below
			c.t.Fatal(err)
		}
	}
	if err := c.raw.CloseWrite(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *hcClient) local() netip.AddrPort { return localAddrPort(c.raw) }

// sockets are the sockets pgfront holds for this client's session.
func (c *hcClient) sockets() []netx.Socket {
	c.t.Helper()
	return hcDistinct(proxySockets(c.t, c.local(), c.serverPort))
}

// hcDistinct drops repeated sockets (same inode). /proc/net/tcp is read in several read()
// calls and the kernel resumes each by position, so a table that changes in between can list
// a socket twice (or skip one: see hcWaitNoSockets).
func hcDistinct(socks []netx.Socket) []netx.Socket {
	seen := make(map[uint64]bool, len(socks))
	out := socks[:0]
	for _, s := range socks {
		if !seen[s.Inode] {
			seen[s.Inode] = true
			out = append(out, s)
		}
	}
	return out
}

// hcMsg is one backend message as read off the wire.
type hcMsg struct {
	typ  byte
	body []byte
}

func (m hcMsg) String() string { return fmt.Sprintf("%c(%d bytes)", m.typ, len(m.body)) }

func (m hcMsg) errorResponse(t *testing.T) *pgproto3.ErrorResponse {
	t.Helper()
	var er pgproto3.ErrorResponse
	if err := er.Decode(m.body); err != nil {
		t.Fatalf("decoding ErrorResponse: %v", err)
	}
	return &er
}

// readToEOF reads what is left in the client's socket until a clean EOF (a reset, a timeout
// or a message cut short fails the test) and splits it into messages.
func (c *hcClient) readToEOF() []hcMsg {
	c.t.Helper()
	if n := c.fe.ReadBufferLen(); n != 0 {
		c.t.Fatalf("raw client has %d unread buffered bytes", n)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(c.conn)
	if err != nil {
		c.t.Fatalf("reading to EOF: %v (after %d bytes)", err, len(data))
	}
	var msgs []hcMsg
	for len(data) > 0 {
		if len(data) < 5 {
			c.t.Fatalf("%d trailing bytes, not a message", len(data))
		}
		n := int(binary.BigEndian.Uint32(data[1:5]))
		if n < 4 || len(data) < 1+n {
			c.t.Fatalf("message %c of length %d cut short (%d bytes left)", data[0], n, len(data))
		}
		msgs = append(msgs, hcMsg{typ: data[0], body: data[5 : 1+n]})
		data = data[1+n:]
	}
	return msgs
}

// hcWaitNoSockets waits until pgfront holds no socket of c's session, failing once within has
// passed since start; it returns how long after start the sockets were seen gone.
func hcWaitNoSockets(t *testing.T, c *hcClient, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	return hcWaitNone(t, start, within, c.sockets)
}

// hcWaitNone polls list until two reads in a row are empty, so a socket skipped by one read
// of a changing /proc/net/tcp does not pass for a closed one.
func hcWaitNone(t *testing.T, start time.Time, within time.Duration, list func() []netx.Socket) time.Duration {
	t.Helper()
	var gone time.Duration
	empty := 0
	waitFor(t, time.Until(start.Add(within)), "pgfront releasing the session's sockets", func() bool {
		if len(list()) != 0 {
			empty = 0
			return false
		}
		if empty++; empty == 1 {
			gone = time.Since(start)
		}
		return empty == 2
	})
	return gone
}

// hcWaitBackendGone waits until backend pid has exited, failing once within has passed since
// start.
func hcWaitBackendGone(t *testing.T, p *pgtest.Server, pid uint32, start time.Time, within time.Duration) {
	t.Helper()
	waitFor(t, time.Until(start.Add(within)), fmt.Sprintf("backend %d to exit", pid), func() bool {
		return !backendAlive(t, p, pid)
	})
}

// hcWaitSleeping waits until backend pid is inside pg_sleep, so a cancel or a FIN that follows
// meets a running query, not one still on its way.
func hcWaitSleeping(t *testing.T, p *pgtest.Server, pid uint32) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("backend %d in pg_sleep", pid), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT wait_event FROM pg_stat_activity WHERE pid = %d", pid))
		if err != nil {
			t.Fatal(err)
		}
		return v == "PgSleep"
	})
}

// hcTerminateBackend ends backend pid from a direct connection to the server.
func hcTerminateBackend(t *testing.T, p *pgtest.Server, pid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := p.QueryValue(ctx, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid))
	if err != nil || v != "t" {
		t.Fatalf("pg_terminate_backend(%d): %q %v", pid, v, err)
	}
}

// hcWantCause waits for the end record of the session whose client address is client and
// checks its cause.
func hcWantCause(t *testing.T, e *env, client netip.AddrPort, want string) {
	t.Helper()
	if rec := e.ended(client.String()); rec.Cause != want {
		t.Fatalf("session ended with the wrong cause, want %s: %+v", want, rec)
	}
}

// hcNewClientWorks logs a new client in through route and runs a query.
func hcNewClientWorks(t *testing.T, e *env, route string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dsn(route))
	if err != nil {
		t.Fatalf("new client through %s: %v", route, err)
	}
	defer closeConn(c)
	var n int
	if err := c.QueryRow(ctx, "SELECT 7 * 6").Scan(&n); err != nil || n != 42 {
		t.Fatalf("new client query: %v %d", err, n)
	}
}

func closeConn(c *pgx.Conn) {
	if c != nil {
		_ = c.Close(context.Background())
	}
}

// hcQueued is a pgx client connecting (and querying) in the background.
type hcQueued struct{ done chan hcQueuedResult }

type hcQueuedResult struct {
	conn *pgx.Conn // open on success; the caller closes it
	at   time.Time // when the connect and query finished
	err  error
}

// hcQueueClient starts a client that connects through route and runs a query; the test must
// call wait.
func hcQueueClient(t *testing.T, e *env, route string) *hcQueued {
	q := &hcQueued{done: make(chan hcQueuedResult, 1)}
	dsn := e.dsn(route)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			var n int
			if err = c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				closeConn(c)
				c = nil
			}
		}
		q.done <- hcQueuedResult{conn: c, at: time.Now(), err: err}
	}()
	return q
}

func (q *hcQueued) wait(t *testing.T) hcQueuedResult {
	t.Helper()
	select {
	case r := <-q.done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("queued client never finished")
		return hcQueuedResult{}
	}
}

// hcProcessAlive reports whether process pid exists and is not a zombie.
func hcProcessAlive(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
