package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// pipeHarness is a blind pipe between an application's end and a server's end.
type pipeHarness struct {
	t              *testing.T
	client, server *net.TCPConn
	p              *Pipe
	res            chan Result
}

func newPipeHarness(t *testing.T, opts PipeOptions) *pipeHarness {
	t.Helper()
	app, proxyClient := tcpPair(t)
	proxyServer, srv := tcpPair(t)
	h := &pipeHarness{t: t, client: app, server: srv, p: NewPipe(proxyClient, proxyServer, opts), res: make(chan Result, 1)}
	t.Cleanup(func() { app.Close(); srv.Close() })
	h.p.Start(func(r Result) { h.res <- r })
	return h
}

func (h *pipeHarness) result(within time.Duration) Result {
	h.t.Helper()
	select {
	case r := <-h.res:
		return r
	case <-time.After(within):
		h.t.Fatalf("pipe did not end within %s", within)
		return Result{}
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestPipeRelaysAndForwardsHalfClose(t *testing.T) {
	h := newPipeHarness(t, PipeOptions{ClientFin: 5 * time.Second, ServerFin: 5 * time.Second})
	// Bytes that are not PostgreSQL framing at all (a TLS record, say) go through untouched.
	hello := []byte{0x16, 0x03, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'}
	h.client.Write(hello)
	if got := readN(t, h.server, len(hello)); string(got) != string(hello) {
		t.Fatalf("server got %q", got)
	}
	h.server.Write([]byte("answer"))
	if got := readN(t, h.client, 6); string(got) != "answer" {
		t.Fatalf("client got %q", got)
	}
	st := h.p.State()
	if !st.Blind || !st.HalfClosedSince.IsZero() {
		t.Fatalf("state %+v", st)
	}
	h.client.CloseWrite()
	_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := h.server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("server did not see the client's FIN: %d %v", n, err)
	}
	if h.p.State().HalfClosedSince.IsZero() {
		t.Fatal("half-close not reported")
	}
	h.server.Write([]byte("last"))
	if got := readN(t, h.client, 4); string(got) != "last" {
		t.Fatalf("client got %q after its FIN", got)
	}
	h.server.Close()
	r := h.result(5 * time.Second)
	if r.Cause != CauseClientEOF || r.FromClient != int64(len(hello)) || r.FromServer != 10 {
		t.Fatalf("result %+v", r)
	}
}

func TestPipeServerFinBound(t *testing.T) {
	h := newPipeHarness(t, PipeOptions{ServerFin: 200 * time.Millisecond})
	start := time.Now()
	h.client.CloseWrite()
	r := h.result(5 * time.Second)
	if r.Cause != CauseServerFinTimeout || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("result %+v after %s", r, time.Since(start))
	}
	// Both of pgfront's sockets are closed: the server sees EOF.
	_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(h.server); err != nil {
		t.Fatalf("server end: %v", err)
	}
}

func TestPipeClientFinBound(t *testing.T) {
	h := newPipeHarness(t, PipeOptions{ClientFin: 200 * time.Millisecond})
	h.server.CloseWrite()
	r := h.result(5 * time.Second)
	if r.Cause != CauseClientFinTimeout {
		t.Fatalf("result %+v", r)
	}
}

func TestPipeIdleBound(t *testing.T) {
	h := newPipeHarness(t, PipeOptions{Idle: 300 * time.Millisecond})
	// Traffic keeps it alive past the bound...
	for range 4 {
		h.client.Write([]byte("x"))
		readN(t, h.server, 1)
		time.Sleep(100 * time.Millisecond) // traffic spaced under the bound, not synchronisation
	}
	select {
	case r := <-h.res:
		t.Fatalf("ended while active: %+v", r)
	default:
	}
	// ...silence ends it.
	if r := h.result(5 * time.Second); r.Cause != CauseClientIdleTimeout {
		t.Fatalf("result %+v", r)
	}
}

func TestPipeEnd(t *testing.T) {
	h := newPipeHarness(t, PipeOptions{})
	h.p.Drain(CauseShutdown) // no boundary to wait for: nothing happens
	h.p.End(CauseAdminKill)
	h.p.End(CauseShutdown) // the first cause wins
	if r := h.result(5 * time.Second); r.Cause != CauseAdminKill {
		t.Fatalf("result %+v", r)
	}
}

// TestPipeServerResetAfterClientFin: PostgreSQL exits after a TLS client's Terminate without
// reading the close_notify behind it, so its close arrives as a reset. After the client's FIN
// that is the client's clean end; a reset before it is the server's doing.
func TestPipeServerResetAfterClientFin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		clientFin bool
		want      Cause
	}{
		{"after the client's FIN", true, CauseClientEOF},
		{"while the client is open", false, CauseServerReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newPipeHarness(t, PipeOptions{ClientFin: 5 * time.Second, ServerFin: 5 * time.Second})
			h.client.Write([]byte("terminate"))
			readN(t, h.server, len("terminate"))
			if tc.clientFin {
				h.client.CloseWrite()
				_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := h.server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("server did not see the client's FIN: %d %v", n, err)
				}
			}
			_ = h.server.SetLinger(0) // close with a reset
			h.server.Close()
			if r := h.result(5 * time.Second); r.Cause != tc.want {
				t.Fatalf("result %+v, want %s", r, tc.want)
			}
		})
	}
}
