package relay

// A peer that stops answering (no FIN, no RST) is given up by the kernel: keepalive probes or
// TCP_USER_TIMEOUT. On loopback a peer always answers, but TCP_USER_TIMEOUT also gives up on a
// receiver whose window stayed closed that long (Linux 5.11 and later), so a peer that never
// reads produces the very error a vanished one does. End-to-end tests with a real network cut
// are in internal/app (TestVanished*).

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/netx"
)

// userTimeout sets a 1s TCP_USER_TIMEOUT on one of the session's own sockets.
func userTimeout(t *testing.T, c net.Conn) {
	t.Helper()
	if err := (netx.KeepAlive{UserTimeout: time.Second}).ApplyUserTimeout(c.(*net.TCPConn)); err != nil {
		t.Fatal(err)
	}
}

// flood writes data to c until a write fails, on its own goroutine; the returned channel
// yields the error.
func flood(c net.Conn, data []byte) <-chan error {
	done := make(chan error, 1)
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	go func() {
		for {
			if _, err := c.Write(data); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// A client that stops reading a large result and answers nothing more: pgfront's write to it
// is given up (ETIMEDOUT), and whichever copier meets that first, the session ends as
// client_unreachable (not client_reset, not client_eof), with the running query cancelled.
func TestClientUnreachableWhileReceiving(t *testing.T) {
	h := newHarnessWith(t, Options{ServerFin: 500 * time.Millisecond}, func(c, _ *net.TCPConn) { userTimeout(t, c) })
	h.login()
	if err := h.client.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	h.clientSend(&pgproto3.Query{String: "SELECT repeat('x', 8000) FROM generate_series(1, 1e9)"})
	expectServer[*pgproto3.Query](h)
	row, err := (&pgproto3.DataRow{Values: [][]byte{make([]byte, 8000)}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	var rows []byte
	for range 8 {
		rows = append(rows, row...)
	}
	serverDone := flood(h.server, rows)

	r := h.result()
	if r.Cause != CauseClientUnreachable || !netx.IsUnreachable(r.Err) {
		t.Fatalf("cause %s (err %v), want client_unreachable with an unreachable error", r.Cause, r.Err)
	}
	if h.cancelCount() == 0 {
		t.Fatal("the running query of a vanished client was not cancelled")
	}
	select {
	case <-serverDone: // pgfront closed (reset) the server side
	case <-time.After(10 * time.Second):
		t.Fatal("the server side was never closed")
	}
}

// A server that stops reading and answers nothing more: pgfront's write to it is given up,
// the session ends as server_unreachable, and the client is told so with FATAL 08006. No
// cancel goes to a server that is gone.
func TestServerUnreachableWhileSending(t *testing.T) {
	h := newHarnessWith(t, Options{}, func(_, s *net.TCPConn) { userTimeout(t, s) })
	h.login()
	if err := h.server.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	h.clientSend(&pgproto3.Query{String: "COPY t FROM STDIN"})
	expectServer[*pgproto3.Query](h)
	copyData, err := (&pgproto3.CopyData{Data: make([]byte, 64<<10)}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	clientDone := flood(h.client, copyData)

	r := h.result()
	if r.Cause != CauseServerUnreachable || !netx.IsUnreachable(r.Err) {
		t.Fatalf("cause %s (err %v), want server_unreachable with an unreachable error", r.Cause, r.Err)
	}
	e := expectClient[*pgproto3.ErrorResponse](h)
	if e.Severity != "FATAL" || e.Code != "08006" || e.Message != "connection to server lost: server unreachable (it stopped answering without closing the connection)" {
		t.Fatalf("client told %s %s %q, want FATAL 08006 naming the unreachable server", e.Severity, e.Code, e.Message)
	}
	if n := h.cancelCount(); n != 0 {
		t.Fatalf("%d cancel requests sent to a server that stopped answering", n)
	}
	if err := <-clientDone; err == nil || errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("client's writes ended with %v", err)
	}
}

// The rule behind the two tests above, without their race: an EOF read from a socket the kernel
// aborted, while a write to it is in progress, is not a FIN; the reader leaves the cause to the
// write, which met the real error. A FIN, or an EOF with no write in progress, ends the session
// as before.
func TestEOFOnAbortedSocketLeavesCauseToWriter(t *testing.T) {
	// session returns an unstarted session whose client (or server) socket, peer is the far
	// end of it, and that side's write flag.
	session := func(t *testing.T, client bool) (*Session, *net.TCPConn, *atomic.Bool) {
		t.Helper()
		appEnd, proxyClient := tcpPair(t)
		proxyServer, pgEnd := tcpPair(t)
		for _, c := range []*net.TCPConn{appEnd, proxyClient, proxyServer, pgEnd} {
			t.Cleanup(func() { _ = c.Close() })
		}
		s := New(proxyClient, proxyServer, Options{OnClientFin: FinForward})
		s.mu.login = false
		if client {
			return s, appEnd, &s.writingClient
		}
		return s, pgEnd, &s.writingServer
	}
	readFailed := func(s *Session, client bool) {
		if client {
			s.clientReadFailed(io.EOF, false)
		} else {
			s.serverReadFailed(io.EOF)
		}
	}
	// reset makes the kernel abort the socket whose peer is peer, and takes the error as the
	// write in progress would.
	reset := func(t *testing.T, s *Session, client bool, peer *net.TCPConn) {
		t.Helper()
		if err := peer.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		_ = peer.Close()
		own := s.server
		if client {
			own = s.client
		}
		_ = own.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := own.Read(make([]byte, 1)); !netx.IsReset(err) {
			t.Fatalf("read after RST: %v", err)
		}
	}
	// tookEOF reports whether the session took the read's EOF as the peer's FIN (with
	// on_client_fin forward, neither side's FIN ends the session by itself), or ended.
	tookEOF := func(s *Session, client bool) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if client {
			return s.mu.clientEOF || s.mu.cause != CauseNone
		}
		return s.mu.serverEOF || s.mu.cause != CauseNone
	}
	for _, client := range []bool{true, false} {
		name := "server"
		if client {
			name = "client"
		}
		t.Run(name+" aborted while writing", func(t *testing.T) {
			s, peer, writing := session(t, client)
			reset(t, s, client, peer)
			writing.Store(true)
			readFailed(s, client)
			if tookEOF(s, client) {
				t.Fatal("the reader took the EOF of an aborted socket as a FIN; the writer's error decides")
			}
		})
		t.Run(name+" aborted, no write", func(t *testing.T) {
			s, peer, _ := session(t, client)
			reset(t, s, client, peer)
			readFailed(s, client)
			if !tookEOF(s, client) {
				t.Fatal("the reader left the EOF to a write that is not there")
			}
		})
		t.Run(name+" FIN while writing", func(t *testing.T) {
			s, peer, writing := session(t, client)
			if err := peer.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			own := s.server
			if client {
				own = s.client
			}
			_ = own.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := own.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("read after FIN: %v", err)
			}
			writing.Store(true)
			readFailed(s, client)
			if !tookEOF(s, client) {
				t.Fatal("a FIN was not taken as one while a write was in progress")
			}
		})
	}
}
