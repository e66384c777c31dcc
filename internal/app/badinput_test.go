package app_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestBadInput sends malformed and unusual start-ups to one route with raw sockets. Every
// malformed one gets a FATAL 08P01 and a close; SSLRequest and GSSENCRequest get 'N' and the
// start-up goes on; and after all of it, an ordinary client is still served.
func TestBadInput(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  startup: 1s", ""))

	startup := wireStartup(t, pgproto3.ProtocolVersion30)
	firstPackets := []struct {
		name string
		raw  []byte
	}{
		{"http request", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"length 0", []byte{0, 0, 0, 0}},
		{"length 3", []byte{0, 0, 0, 3}},
		{"length 2^31-1", []byte{0x7f, 0xff, 0xff, 0xff}},
		{"protocol 2.0", wireStartup(t, 2<<16)},
	}
	for _, tc := range firstPackets {
		t.Run(tc.name, func(t *testing.T) {
			c, fe := wireDial(t, e, "rw")
			if _, err := c.Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			wireFatal(t, c, fe, "08P01", "")
			wantCause(t, e, c.LocalAddr().String(), "protocol_error")
		})
	}

	t.Run("startup trickle", func(t *testing.T) {
		c, fe := wireDial(t, e, "rw")
		start := time.Now()
		_ = c.SetDeadline(start.Add(10 * time.Second))
		type reply struct {
			msg *pgproto3.ErrorResponse
			err error
		}
		got := make(chan reply, 1)
		go func() {
			m, err := fe.Receive()
			er, _ := m.(*pgproto3.ErrorResponse)
			if er != nil {
				cp := *er
				er = &cp
			} else if err == nil {
				err = fmt.Errorf("unexpected %T", m)
			}
			got <- reply{er, err}
		}()
		// One byte every 300ms: the whole packet would take ~12s, the bound is 1s.
		sent := 0
		var r reply
		received := false
		for sent < len(startup) && !received {
			if _, err := c.Write(startup[sent : sent+1]); err != nil {
				break
			}
			sent++
			select {
			case r = <-got:
				received = true
			case <-time.After(300 * time.Millisecond):
			}
		}
		if !received {
			r = <-got // bounded by the conn's deadline
		}
		elapsed := time.Since(start)
		if r.err != nil {
			t.Fatalf("waiting for the startup timeout's error: %v (after %s, %d bytes sent)", r.err, elapsed, sent)
		}
		if r.msg.Severity != "FATAL" || r.msg.Code == "" {
			t.Fatalf("startup timeout: got %+v, want a FATAL error with a SQLSTATE", r.msg)
		}
		if elapsed < 900*time.Millisecond || elapsed > 2500*time.Millisecond {
			t.Fatalf("startup cut after %s, want ~1s (timeouts.startup)", elapsed)
		}
		if sent >= len(startup) {
			t.Fatalf("the whole startup packet was sent before the cut")
		}
		wireClosed(t, c, fe)
		wantCause(t, e, c.LocalAddr().String(), "startup_timeout")
	})

	t.Run("SSLRequest", func(t *testing.T) {
		c, fe := wireDial(t, e, "rw")
		wireNegotiate(t, c, &pgproto3.SSLRequest{})
		wireLoginOn(t, c, fe)
		if v := wireQuery(t, c, fe, "SELECT 40 + 2"); v != "42" {
			t.Fatalf("query after SSLRequest: %q", v)
		}
	})

	t.Run("GSSENCRequest", func(t *testing.T) {
		c, fe := wireDial(t, e, "rw")
		wireNegotiate(t, c, &pgproto3.GSSEncRequest{})
		wireLoginOn(t, c, fe)
		if v := wireQuery(t, c, fe, "SELECT 40 + 2"); v != "42" {
			t.Fatalf("query after GSSENCRequest: %q", v)
		}
	})

	// libpq with gssencmode=prefer (its default when built with GSSAPI and a Kerberos
	// credential cache exists) and sslmode=prefer sends GSSENCRequest and, after 'N', an
	// SSLRequest on the same connection. PostgreSQL takes one request of each kind, in either
	// order (ProcessStartupPacket's ssl_done/gss_done: "client may negotiate in either order").
	t.Run("GSSENCRequest and SSLRequest", func(t *testing.T) {
		// PostgreSQL itself (built with GSSAPI, so it answers 'G' to GSSENC; no SSL): after
		// SSL 'N' it still answers a GSSENCRequest rather than refusing it.
		c, _ := wireDialAddr(t, p.Addr())
		wireNegotiate(t, c, &pgproto3.SSLRequest{})
		wireSend(t, c, &pgproto3.GSSEncRequest{})
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil || (b[0] != 'G' && b[0] != 'N') {
			t.Fatalf("PostgreSQL's answer to GSSENCRequest after SSLRequest: %q %v", b[:], err)
		}

		for _, order := range [][2]pgproto3.FrontendMessage{
			{&pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}},
			{&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{}},
		} {
			c, fe := wireDial(t, e, "rw")
			wireNegotiate(t, c, order[0])
			wireNegotiate(t, c, order[1])
			wireLoginOn(t, c, fe)
			if v := wireQuery(t, c, fe, "SELECT 40 + 2"); v != "42" {
				t.Fatalf("query after %T and %T: %q", order[0], order[1], v)
			}
		}
	})

	// A second SSLRequest is a client bug; PostgreSQL refuses it too.
	t.Run("SSLRequest twice", func(t *testing.T) {
		c, fe := wireDial(t, e, "rw")
		wireNegotiate(t, c, &pgproto3.SSLRequest{})
		wireSend(t, c, &pgproto3.SSLRequest{})
		wireFatal(t, c, fe, "08P01", "")
		wantCause(t, e, c.LocalAddr().String(), "protocol_error")
	})

	t.Run("invalid message type mid-session", func(t *testing.T) {
		c, fe := wireDial(t, e, "rw")
		wireLoginOn(t, c, fe)
		pid, err := strconv.Atoi(wireQuery(t, c, fe, "SELECT pg_backend_pid()"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte{0x00, 0, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
		wireFatal(t, c, fe, "08P01", "invalid frontend message type")
		waitFor(t, 3*time.Second, "the backend to exit", func() bool { return !backendAlive(t, p, uint32(pid)) })
		wantCause(t, e, c.LocalAddr().String(), "protocol_error")
	})

	// The proxy keeps serving after all of the above.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var one int
	if err := e.connect("rw").QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("an ordinary client after the bad input: %v %d", err, one)
	}
	if n := e.app.Frontend().Sessions(); n != 1 {
		t.Fatalf("sessions open: %d, want only the ordinary client's", n)
	}
}

// --- raw protocol helpers, shared by this package's tests ---

// wireStartup encodes a StartupMessage for user and database postgres with the given
// protocol version.
func wireStartup(t *testing.T, version uint32) []byte {
	t.Helper()
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: version,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wireDial opens a raw TCP connection to a route, closed at the end of the test, with a
// pgproto3 frontend on it and a 10s deadline on every I/O.
func wireDial(t *testing.T, e *env, route string) (*net.TCPConn, *pgproto3.Frontend) {
	t.Helper()
	return wireDialAddr(t, e.addr(route).String())
}

func wireDialAddr(t *testing.T, addr string) (*net.TCPConn, *pgproto3.Frontend) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, pgproto3.NewFrontend(c, c)
}

// wireSend encodes and writes one message.
func wireSend(t *testing.T, c net.Conn, msg pgproto3.FrontendMessage) {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatalf("writing %T: %v", msg, err)
	}
}

// wireNegotiate sends an SSLRequest or GSSENCRequest and expects the single byte 'N'.
func wireNegotiate(t *testing.T, c net.Conn, req pgproto3.FrontendMessage) {
	t.Helper()
	wireSend(t, c, req)
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("answer from %s to %T: %q %v, want 'N'", c.RemoteAddr(), req, b[:], err)
	}
}

// wireLoginOn sends the StartupMessage (user and database postgres, trust) and reads until
// the first ReadyForQuery.
func wireLoginOn(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
	t.Helper()
	if _, err := c.Write(wireStartup(t, pgproto3.ProtocolVersion30)); err != nil {
		t.Fatalf("writing the startup: %v", err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return
		case *pgproto3.ErrorResponse:
			t.Fatalf("login: %s %s: %s", m.Severity, m.Code, m.Message)
		}
	}
}

// wireQuery runs a simple query and returns the first column of the first row.
func wireQuery(t *testing.T, c net.Conn, fe *pgproto3.Frontend, sql string) string {
	t.Helper()
	wireSend(t, c, &pgproto3.Query{String: sql})
	var v string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("query %q: %v", sql, err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if v == "" && len(m.Values) > 0 {
				v = string(m.Values[0])
			}
		case *pgproto3.ErrorResponse:
			t.Fatalf("query %q: %s %s: %s", sql, m.Severity, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return v
		}
	}
}

// wireFatal reads until an ErrorResponse, which must be FATAL with code (and, if msgPart is
// set, contain it), then expects the connection to be closed.
func wireFatal(t *testing.T, c net.Conn, fe *pgproto3.Frontend, code, msgPart string) pgproto3.ErrorResponse {
	t.Helper()
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("waiting for FATAL %s: %v", code, err)
		}
		er, ok := m.(*pgproto3.ErrorResponse)
		if !ok {
			continue
		}
		got := *er
		if got.Severity != "FATAL" || got.Code != code || !strings.Contains(got.Message, msgPart) {
			t.Fatalf("got %s %s %q, want FATAL %s containing %q", got.Severity, got.Code, got.Message, code, msgPart)
		}
		wireClosed(t, c, fe)
		return got
	}
}

// wireClosed expects the peer to have closed: the next read fails, and not by our deadline.
func wireClosed(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := fe.Receive()
	if err == nil {
		t.Fatalf("after the FATAL error: got %T, want the connection closed", m)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open 5s after the FATAL error")
	}
}

// sqlstate is the SQLSTATE of the *pgconn.PgError in err's chain, or "".
func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// logLine waits (5s) for a log line with msg and client=client, and returns it.
func logLine(t *testing.T, logs *syncBuffer, msg, client string) string {
	t.Helper()
	var line string
	find := func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, msg) && strings.Contains(l, " client="+client+" ") {
				line = l
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(5 * time.Second)
	for !find() {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %s for client %s", msg, client)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return line
}

// wantCause checks the cause in the end record of a client's session.
func wantCause(t *testing.T, e *env, client, cause string) {
	t.Helper()
	if rec := e.ended(client); rec.Cause != cause {
		t.Fatalf("session of %s ended with cause %q, want %q: %+v", client, rec.Cause, cause, rec)
	}
}

// logAttr is the value of key in a text-handler log line ("" when absent).
func logAttr(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	rest := line[i+len(key)+2:]
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return ""
		}
		v, _ := strconv.Unquote(q)
		return v
	}
	if j := strings.IndexByte(rest, ' '); j >= 0 {
		return rest[:j]
	}
	return rest
}
