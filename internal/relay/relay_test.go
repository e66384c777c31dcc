package relay

// Unit tests of the session state machine over real loopback TCP, with scripted pgproto3 peers
// on both sides. End-to-end tests against real PostgreSQL live in internal/app.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// TestMain runs every test twice: with sessions on copier goroutines (TLS sessions, and any
// without Loops), then on event loops (plain TCP sessions in pgfront), so each behaviour is
// checked in both.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		harnessLoops = true
		code = m.Run()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// harnessLoops makes newHarness run its sessions on event loops.
var harnessLoops bool

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	acc := <-ch
	if acc == nil {
		t.Fatal("accept failed")
	}
	return d.(*net.TCPConn), acc.(*net.TCPConn)
}

// harness is a relay session between a scripted client and a scripted server.
type harness struct {
	t      *testing.T
	client *net.TCPConn // the application's end
	server *net.TCPConn // the PostgreSQL server's end
	fe     *pgproto3.Frontend
	be     *pgproto3.Backend
	s      *Session
	res    chan Result

	mu      sync.Mutex
	cancels []pgwire.CancelKey
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	return newHarnessWith(t, opts, nil)
}

// newHarnessWith is newHarness with prep run on pgfront's two sockets before the session
// takes them (socket options: once on an event loop, the net.Conns are closed).
func newHarnessWith(t *testing.T, opts Options, prep func(client, server *net.TCPConn)) *harness {
	t.Helper()
	appEnd, proxyClient := tcpPair(t)
	proxyServer, pgEnd := tcpPair(t)
	if prep != nil {
		prep(proxyClient, proxyServer)
	}
	h := &harness{t: t, client: appEnd, server: pgEnd, res: make(chan Result, 1)}
	h.fe = pgproto3.NewFrontend(appEnd, appEnd)
	h.be = pgproto3.NewBackend(pgEnd, pgEnd)
	hooks, _ := opts.Hooks.(*funcHooks)
	if hooks == nil {
		hooks = &funcHooks{}
	}
	then := hooks.cancel // a test's own cancel runs after the cancel is recorded
	hooks.cancel = func(k pgwire.CancelKey) {
		h.mu.Lock()
		h.cancels = append(h.cancels, k)
		h.mu.Unlock()
		if then != nil {
			then(k)
		}
	}
	opts.Hooks = hooks
	if harnessLoops && opts.Loops == nil {
		l, err := NewLoops()
		if err != nil {
			t.Fatal(err)
		}
		opts.Loops = l
		t.Cleanup(l.Close) // after the session's own cleanup (LIFO)
	}
	h.s = New(proxyClient, proxyServer, opts)
	go func() { h.res <- h.s.Run() }()
	t.Cleanup(func() {
		h.s.End(CauseAdminKill)
		_ = appEnd.Close()
		_ = pgEnd.Close()
		<-h.res
	})
	return h
}

// login plays the server's side of a login: AuthenticationOk, BackendKeyData, ReadyForQuery.
func (h *harness) login() {
	h.t.Helper()
	h.serverSend(&pgproto3.AuthenticationOk{}, &pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectClient[*pgproto3.AuthenticationOk](h)
	expectClient[*pgproto3.BackendKeyData](h)
	expectClient[*pgproto3.ReadyForQuery](h)
}

func (h *harness) serverSend(msgs ...pgproto3.BackendMessage) {
	h.t.Helper()
	for _, m := range msgs {
		h.be.Send(m)
	}
	if err := h.be.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) clientSend(msgs ...pgproto3.FrontendMessage) {
	h.t.Helper()
	for _, m := range msgs {
		h.fe.Send(m)
	}
	if err := h.fe.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// expectMsg reads the next message and checks its type.
func expectMsg[T any](t *testing.T, receive func() (any, error)) T {
	t.Helper()
	m, err := receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	v, ok := m.(T)
	if !ok {
		var zero T
		t.Fatalf("got %T %+v, want %T", m, m, zero)
	}
	return v
}

// expectClient reads the next message the application receives.
func expectClient[T pgproto3.BackendMessage](h *harness) T {
	h.t.Helper()
	_ = h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	return expectMsg[T](h.t, func() (any, error) { return h.fe.Receive() })
}

func (h *harness) result() Result {
	h.t.Helper()
	select {
	case r := <-h.res:
		h.res <- r // keep it for Cleanup
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("session did not end")
	}
	return Result{}
}

// readToEOF drains c until EOF and returns the error that ended the read (nil at EOF).
func readToEOF(t *testing.T, c net.Conn) error {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return err
}

// expectServer reads the next message the PostgreSQL end receives.
func expectServer[T pgproto3.FrontendMessage](h *harness) T {
	h.t.Helper()
	_ = h.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	return expectMsg[T](h.t, func() (any, error) { return h.be.Receive() })
}

// query plays one simple query through the session: the server sees it and answers with
// CommandComplete and ReadyForQuery(status), which the client receives.
func (h *harness) query(sql string, status byte) {
	h.t.Helper()
	h.clientSend(&pgproto3.Query{String: sql})
	expectServer[*pgproto3.Query](h)
	h.serverSend(&pgproto3.CommandComplete{CommandTag: []byte(sql)}, &pgproto3.ReadyForQuery{TxStatus: status})
	expectClient[*pgproto3.CommandComplete](h)
	expectClient[*pgproto3.ReadyForQuery](h)
}

func expectFatal(h *harness, code string) {
	h.t.Helper()
	e := expectClient[*pgproto3.ErrorResponse](h)
	if e.Severity != "FATAL" || e.Code != code {
		h.t.Fatalf("got %s %s %q, want FATAL %s", e.Severity, e.Code, e.Message, code)
	}
}

func TestClientIdleTimeout(t *testing.T) {
	h := newHarness(t, Options{ClientIdle: 200 * time.Millisecond})
	h.login()
	expectFatal(h, pgwire.CodeIdleSessionTimeout)
	if err := readToEOF(t, h.client); err != nil {
		t.Fatalf("client end not closed after the FATAL: %v", err)
	}
	if r := h.result(); r.Cause != CauseClientIdleTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
	expectServer[*pgproto3.Terminate](h) // a clean goodbye to the idle server
}

func TestIdleInTransactionTimeout(t *testing.T) {
	h := newHarness(t, Options{ClientIdle: time.Hour, IdleInTransaction: 200 * time.Millisecond})
	h.login()
	h.query("BEGIN", 'T')
	expectFatal(h, pgwire.CodeIdleInTransactionTimeout)
	if r := h.result(); r.Cause != CauseIdleInTransactionTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A query that runs longer than client_idle is not the client's idleness.
func TestBusySessionIsNotIdle(t *testing.T) {
	idle := 150 * time.Millisecond
	h := newHarness(t, Options{ClientIdle: idle})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(1)"})
	expectServer[*pgproto3.Query](h)
	time.Sleep(4 * idle) // the query runs: this is the behaviour under test, not synchronisation
	h.serverSend(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectClient[*pgproto3.CommandComplete](h)
	expectClient[*pgproto3.ReadyForQuery](h)
	// Idle again: now the bound applies.
	expectFatal(h, pgwire.CodeIdleSessionTimeout)
}

func (h *harness) cancelCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cancels)
}

// waitCancels waits until the session has sent at least n cancel requests.
func (h *harness) waitCancels(n int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.cancelCount() < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d cancels, want %d", h.cancelCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientFinAbortCancelsRunningQuery(t *testing.T) {
	h := newHarness(t, Options{ServerFin: 10 * time.Second})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	if err := h.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	h.waitCancels(1)
	want := pgwire.CancelKey{ProcessID: 42, Secret: string([]byte{1, 2, 3, 4})}
	h.mu.Lock()
	got := h.cancels[0]
	h.mu.Unlock()
	if got != want {
		t.Fatalf("cancel key %v, want %v", got, want)
	}
	// The client's socket is released at once, while the server finishes.
	if err := readToEOF(t, h.client); err != nil {
		t.Fatalf("client end: %v", err)
	}
	// The server obeys the cancel; pgfront then says goodbye.
	h.serverSend(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceling statement due to user request"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseClientEOF {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A cancel stops only the running statement: queries pipelined behind it are cancelled too.
func TestAbortCancelsPipelinedQueries(t *testing.T) {
	h := newHarness(t, Options{ServerFin: 10 * time.Second})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"}, &pgproto3.Query{String: "SELECT pg_sleep(61)"})
	expectServer[*pgproto3.Query](h)
	expectServer[*pgproto3.Query](h)
	_ = h.client.CloseWrite()
	h.waitCancels(1)
	n := h.cancelCount()
	h.serverSend(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceled"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	h.waitCancels(n + 1) // the second query gets its own cancel
	h.serverSend(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceled"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseClientEOF {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A server that ignores cancels is reset after server_fin, and cancelled again meanwhile.
func TestAbortBoundedWhenServerIgnoresCancel(t *testing.T) {
	h := newHarness(t, Options{ServerFin: 700 * time.Millisecond})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	_ = h.client.CloseWrite()
	if r := h.result(); r.Cause != CauseClientEOF {
		t.Fatalf("cause %s", r.Cause)
	}
	if n := h.cancelCount(); n < 2 {
		t.Fatalf("cancel sent %d times; a lost cancel must be repeated", n)
	}
	_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := h.server.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server end got %v, want a reset so the busy backend notices", err)
	}
}

func TestClientFinWhileIdleSaysGoodbye(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	if err := h.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseClientEOF {
		t.Fatalf("cause %s", r.Cause)
	}
	if len(h.cancels) != 0 {
		t.Fatalf("idle session was cancelled: %v", h.cancels)
	}
}

func TestServerClosesFirstClientFinBound(t *testing.T) {
	h := newHarness(t, Options{ClientFin: 200 * time.Millisecond})
	h.login()
	h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
	_ = h.server.Close()
	expectFatal(h, "57P01") // forwarded, not replaced
	if err := readToEOF(t, h.client); err != nil {
		t.Fatalf("client was not half-closed: %v", err)
	}
	// The application never closes: pgfront does, after client_fin.
	if r := h.result(); r.Cause != CauseClientFinTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestServerClosesFirstClientCloses(t *testing.T) {
	h := newHarness(t, Options{ClientFin: 10 * time.Second})
	h.login()
	_ = h.server.Close()
	if err := readToEOF(t, h.client); err != nil {
		t.Fatal(err)
	}
	h.clientSend(&pgproto3.Terminate{})
	_ = h.client.Close()
	if r := h.result(); r.Cause != CauseServerEOF {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestForwardModeBoundedByServerFin(t *testing.T) {
	h := newHarness(t, Options{OnClientFin: FinForward, ServerFin: 200 * time.Millisecond})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	if err := h.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The FIN is forwarded: the server end reads EOF.
	_ = h.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.be.Receive(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("server end: %v, want EOF", err)
	}
	h.mu.Lock()
	early := len(h.cancels)
	h.mu.Unlock()
	if early != 0 {
		t.Fatal("forward mode cancelled at the FIN; the server should get server_fin first")
	}
	if r := h.result(); r.Cause != CauseServerFinTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
	// server_fin ran out with the query still running: it is cancelled rather than left
	// working for nobody.
	if len(h.cancels) != 1 {
		t.Fatalf("cancels after server_fin: %v", h.cancels)
	}
}

func TestTerminate(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	h.clientSend(&pgproto3.Terminate{})
	_ = h.client.CloseWrite()
	expectServer[*pgproto3.Terminate](h)
	_ = h.server.Close()
	r := h.result()
	if r.Cause != CauseClientTerminate {
		t.Fatalf("cause %s", r.Cause)
	}
	if r.FromClient != 5 {
		t.Fatalf("bytes from client %d, want 5", r.FromClient)
	}
}

func TestDrainWaitsForTransactionEnd(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	h.query("BEGIN", 'T')

	h.s.Drain(CauseShutdown) // in a transaction: not yet
	h.query("COMMIT", 'I')
	expectFatal(h, pgwire.CodeAdminShutdown)
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestInvalidMessageTypeMidSession(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	if _, err := h.client.Write([]byte{0, 0, 0, 0, 4}); err != nil {
		t.Fatal(err)
	}
	e := expectClient[*pgproto3.ErrorResponse](h)
	if e.Code != pgwire.CodeProtocolViolation || e.Message != "invalid frontend message type 0" {
		t.Fatalf("got %s %q", e.Code, e.Message)
	}
	if r := h.result(); r.Cause != CauseProtocolError {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestEndDuringQueryCancelsAndTellsClient(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	h.s.End(CauseAdminKill)
	expectFatal(h, pgwire.CodeAdminShutdown)
	h.waitCancels(1)
	h.serverSend(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceled"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseAdminKill {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestLoginBoundedByStartup(t *testing.T) {
	h := newHarness(t, Options{LoginDeadline: time.Now().Add(200 * time.Millisecond)})
	// The server asks for a password; the client never answers.
	h.serverSend(&pgproto3.AuthenticationCleartextPassword{})
	expectClient[*pgproto3.AuthenticationCleartextPassword](h)
	e := expectClient[*pgproto3.ErrorResponse](h)
	if e.Code != pgwire.CodeQueryCanceled {
		t.Fatalf("code %s", e.Code)
	}
	if r := h.result(); r.Cause != CauseStartupTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestFenceStandbyBeforeClientSawAnything(t *testing.T) {
	fenced := make(chan struct{}, 1)
	h := newHarness(t, Options{FenceStandby: true, Hooks: &funcHooks{standby: func() { fenced <- struct{}{} }}})
	h.serverSend(&pgproto3.AuthenticationOk{}, &pgproto3.ParameterStatus{Name: "in_hot_standby", Value: "on"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	r := h.result()
	if r.Cause != CauseFencedStandby || !r.Retry {
		t.Fatalf("result %+v, want fenced and retryable", r)
	}
	<-fenced
	// The client connection is left open and untouched for another server.
	_ = h.client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := h.client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client got %d bytes, err %v; want nothing and still open", n, err)
	}
	// And handed back as a working conn (on an event loop, a new one on the same socket).
	if r.Client == nil {
		t.Fatal("no client conn handed back")
	}
	defer r.Client.Close()
	if _, err := r.Client.Write([]byte("R")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	_ = h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(h.client, got); err != nil || got[0] != 'R' {
		t.Fatalf("the application got %q, %v through the handed-back conn", got, err)
	}
}

func TestFenceStandbyAfterAuthTellsClient(t *testing.T) {
	h := newHarness(t, Options{FenceStandby: true})
	h.serverSend(&pgproto3.AuthenticationCleartextPassword{})
	expectClient[*pgproto3.AuthenticationCleartextPassword](h)
	h.clientSend(&pgproto3.PasswordMessage{Password: "secret"})
	expectServer[*pgproto3.PasswordMessage](h)
	h.serverSend(&pgproto3.AuthenticationOk{}, &pgproto3.ParameterStatus{Name: "in_hot_standby", Value: "on"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectFatal(h, pgwire.CodeCannotConnectNow)
	if r := h.result(); r.Cause != CauseFencedStandby || r.Retry {
		t.Fatalf("result %+v", r)
	}
}

func TestNoFenceOnPrimary(t *testing.T) {
	h := newHarness(t, Options{FenceStandby: true})
	h.serverSend(&pgproto3.AuthenticationOk{}, &pgproto3.ParameterStatus{Name: "in_hot_standby", Value: "off"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectClient[*pgproto3.AuthenticationOk](h)
	ps := expectClient[*pgproto3.ParameterStatus](h)
	if ps.Value != "off" {
		t.Fatal(ps)
	}
	expectClient[*pgproto3.ReadyForQuery](h)
}

// newParkHarness is newHarness on event loops, whose idle sessions count as parked.
func newParkHarness(t *testing.T, opts Options) (*harness, *Loops) {
	t.Helper()
	p, err := NewLoops()
	if err != nil {
		t.Fatal(err)
	}
	opts.Loops = p
	h := newHarness(t, opts)
	t.Cleanup(p.Close) // after the session's own cleanup (LIFO)
	return h, p
}

func waitParked(t *testing.T, p *Loops, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Parked() != n {
		if time.Now().After(deadline) {
			t.Fatalf("parked %d, want %d", p.Parked(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// An idle session is parked (no goroutine) and comes back on the next query, both ways.
func TestParkedSessionResumes(t *testing.T) {
	h, p := newParkHarness(t, Options{ClientIdle: time.Hour})
	h.login()
	for range 2 {
		waitParked(t, p, 1)
		h.clientSend(&pgproto3.Query{String: "SELECT 1"})
		expectServer[*pgproto3.Query](h)
		waitParked(t, p, 0)
		h.serverSend(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		expectClient[*pgproto3.CommandComplete](h)
		expectClient[*pgproto3.ReadyForQuery](h)
	}
	// A notification from the server wakes a parked session too.
	waitParked(t, p, 1)
	h.serverSend(&pgproto3.NotificationResponse{PID: 1, Channel: "c", Payload: "p"})
	expectClient[*pgproto3.NotificationResponse](h)
}

func TestParkedSessionIdleTimeout(t *testing.T) {
	h, p := newParkHarness(t, Options{ClientIdle: 300 * time.Millisecond})
	h.login()
	waitParked(t, p, 1)
	expectFatal(h, pgwire.CodeIdleSessionTimeout)
	if r := h.result(); r.Cause != CauseClientIdleTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
	if p.Parked() != 0 {
		t.Fatal("ended session still parked")
	}
}

func TestParkedSessionServerCloses(t *testing.T) {
	h, p := newParkHarness(t, Options{ClientFin: time.Second})
	h.login()
	waitParked(t, p, 1)
	h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
	_ = h.server.Close()
	expectFatal(h, "57P01")
	if err := readToEOF(t, h.client); err != nil {
		t.Fatal(err)
	}
	_ = h.client.Close()
	if r := h.result(); r.Cause != CauseServerEOF && r.Cause != CauseClientFinTimeout {
		t.Fatalf("cause %s", r.Cause)
	}
}

func TestParkedSessionEnd(t *testing.T) {
	h, p := newParkHarness(t, Options{})
	h.login()
	waitParked(t, p, 1)
	h.s.End(CauseAdminKill)
	expectFatal(h, pgwire.CodeAdminShutdown)
	if r := h.result(); r.Cause != CauseAdminKill {
		t.Fatalf("cause %s", r.Cause)
	}
	expectServer[*pgproto3.Terminate](h)
}

func TestParkedSessionClientFIN(t *testing.T) {
	h, p := newParkHarness(t, Options{})
	h.login()
	waitParked(t, p, 1)
	_ = h.client.CloseWrite()
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseClientEOF {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A login refused with 57P03 (the old primary shutting down in a failover) before the client
// saw anything is handed back for another server.
func TestLoginRefusedCannotConnectNowIsRetryable(t *testing.T) {
	refused := make(chan struct{}, 1)
	h := newHarness(t, Options{Hooks: &funcHooks{unavailable: func() { refused <- struct{}{} }}})
	h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P03", Message: "the database system is shutting down"})
	_ = h.server.Close()
	r := h.result()
	if r.Cause != CauseServerUnavailable || !r.Retry {
		t.Fatalf("result %+v, want server_unavailable and retryable", r)
	}
	<-refused
	if r.Client == nil {
		t.Fatal("no client conn handed back")
	}
	defer r.Client.Close()
	_ = h.client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := h.client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client got %d bytes, err %v; want nothing and still open", n, err)
	}
}

// Other login errors (a wrong password, say) reach the client as they are.
func TestLoginErrorForwarded(t *testing.T) {
	h := newHarness(t, Options{})
	h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
	_ = h.server.Close()
	expectFatal(h, "28P01")
}

// TestLoginFailed: a server that refuses the login sends an ErrorResponse and closes; the
// session ends as login_failed with the server's SQLSTATE and message, whichever side's close
// pgfront sees first.
func TestLoginFailed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		serverFirst bool
	}{
		{"server closes first", true},
		{"client closes first", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.serverSend(&pgproto3.AuthenticationCleartextPassword{})
			expectClient[*pgproto3.AuthenticationCleartextPassword](h)
			h.clientSend(&pgproto3.PasswordMessage{Password: "wrong"})
			expectServer[*pgproto3.PasswordMessage](h)
			h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
				Message: `password authentication failed for user "app"`})
			if e := expectClient[*pgproto3.ErrorResponse](h); e.Code != "28P01" {
				t.Fatalf("client got %+v", e)
			}
			if tc.serverFirst {
				h.server.Close()
				if err := readToEOF(t, h.client); err != nil {
					t.Fatalf("client after the server's close: %v", err)
				}
			}
			h.client.Close()
			r := h.result()
			var le *LoginError
			if r.Cause != CauseLoginFailed || !errors.As(r.Err, &le) || le.Code != "28P01" ||
				le.Message != `password authentication failed for user "app"` {
				t.Fatalf("result %+v (%v), want login_failed with the server's error", r, r.Err)
			}
		})
	}
}

func TestParseLoginError(t *testing.T) {
	body := []byte("SFATAL\x00VFATAL\x00C28000\x00Mno pg_hba.conf entry\x00\x00")
	if le := parseLoginError(body); le.Code != "28000" || le.Message != "no pg_hba.conf entry" {
		t.Fatalf("%+v", le)
	}
	if le := parseLoginError(nil); le.Error() != "the server refused the login" {
		t.Fatalf("too long to capture: %q", le.Error())
	}
	long := append([]byte("C28000\x00M"), bytes.Repeat([]byte("é"), 300)...)
	if le := parseLoginError(append(long, 0, 0)); len(le.Message) > maxLoginMessage || !utf8.ValidString(le.Message) {
		t.Fatalf("message of %d bytes, valid %v", len(le.Message), utf8.ValidString(le.Message))
	}
}

// TestServerResetAfterTerminate: once the client sent Terminate, a server that resets rather
// than closes ended a clean session.
func TestServerResetAfterTerminate(t *testing.T) {
	h := newHarness(t, Options{ServerFin: 5 * time.Second})
	h.login()
	h.clientSend(&pgproto3.Terminate{})
	expectServer[*pgproto3.Terminate](h)
	_ = h.server.SetLinger(0)
	h.server.Close()
	if r := h.result(); r.Cause != CauseClientTerminate || r.Err != nil {
		t.Fatalf("result %+v, want client_terminate", r)
	}
}

// TestIssuedKey: with IssueKey, the client gets the server's process id with the issued
// secret (a protocol 3.2 length here: 32 bytes), Hooks.BackendKey gets both keys, and the cancel
// of an aborted query carries the server's own key.
func TestIssuedKey(t *testing.T) {
	serverSecret := bytes.Repeat([]byte{0xAB}, 32)
	var mu sync.Mutex
	var gotServer, gotClient pgwire.CancelKey
	h := newHarness(t, Options{
		ServerFin: 10 * time.Second,
		IssueKey: func(pid uint32, secret []byte) {
			for i := range secret {
				secret[i] = byte(pid) + byte(i)
			}
		},
		Hooks: &funcHooks{backendKey: func(server, client pgwire.CancelKey) {
			mu.Lock()
			gotServer, gotClient = server, client
			mu.Unlock()
		}},
	})
	h.serverSend(&pgproto3.AuthenticationOk{}, &pgproto3.BackendKeyData{ProcessID: 42, SecretKey: serverSecret},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectClient[*pgproto3.AuthenticationOk](h)
	k := expectClient[*pgproto3.BackendKeyData](h)
	issued := make([]byte, 32)
	for i := range issued {
		issued[i] = 42 + byte(i)
	}
	if k.ProcessID != 42 || !bytes.Equal(k.SecretKey, issued) {
		t.Fatalf("client got key %d/%x, want 42/%x", k.ProcessID, k.SecretKey, issued)
	}
	expectClient[*pgproto3.ReadyForQuery](h)
	mu.Lock()
	if gotServer != (pgwire.CancelKey{ProcessID: 42, Secret: string(serverSecret)}) ||
		gotClient != (pgwire.CancelKey{ProcessID: 42, Secret: string(issued)}) {
		t.Fatalf("BackendKey(%v, %v)", gotServer, gotClient)
	}
	mu.Unlock()

	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	if err := h.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	h.waitCancels(1)
	h.mu.Lock()
	got := h.cancels[0]
	h.mu.Unlock()
	if got.Secret != string(serverSecret) {
		t.Fatalf("abort cancel carried secret %x, want the server's", got.Secret)
	}
}

// TestLifecycleHooks: LoggedIn runs once, when the login's ReadyForQuery arrives (not for
// later ones); ServerClosed runs once the server closed first and its FATAL went to a
// client that stays, long before client_fin lets the session end.
func TestLifecycleHooks(t *testing.T) {
	var loggedIn, serverClosed atomic.Int32
	closed := make(chan struct{})
	h := newHarness(t, Options{ClientFin: time.Minute,
		Hooks: &funcHooks{loggedIn: func() { loggedIn.Add(1) },
			serverClosed: func() {
				if serverClosed.Add(1) == 1 {
					close(closed)
				}
			}}})
	h.serverSend(&pgproto3.AuthenticationOk{})
	expectClient[*pgproto3.AuthenticationOk](h)
	if n := loggedIn.Load(); n != 0 {
		t.Fatalf("LoggedIn ran %d times before the login's ReadyForQuery", n)
	}
	h.serverSend(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectClient[*pgproto3.ReadyForQuery](h)
	h.query("SELECT 1", 'I')
	if n := loggedIn.Load(); n != 1 {
		t.Fatalf("LoggedIn ran %d times after a login and a query, want 1", n)
	}
	if n := serverClosed.Load(); n != 0 {
		t.Fatalf("ServerClosed ran %d times while the server is there", n)
	}
	h.serverSend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
	_ = h.server.Close()
	expectFatal(h, "57P01")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("ServerClosed not called after the server closed first (client_fin is 1m)")
	}
	if err := readToEOF(t, h.client); err != nil {
		t.Fatalf("client was not half-closed: %v", err)
	}
	h.s.End(CauseAdminKill)
	h.result()
	if n := serverClosed.Load(); n != 1 {
		t.Fatalf("ServerClosed ran %d times, want 1", n)
	}
}

// funcHooks is Hooks from optional functions.
type funcHooks struct {
	backendKey                                   func(server, client pgwire.CancelKey)
	cancel                                       func(pgwire.CancelKey)
	standby, unavailable, loggedIn, serverClosed func()
}

func (f *funcHooks) BackendKey(server, client pgwire.CancelKey) {
	if f.backendKey != nil {
		f.backendKey(server, client)
	}
}

func (f *funcHooks) Cancel(k pgwire.CancelKey) {
	if f.cancel != nil {
		f.cancel(k)
	}
}

func (f *funcHooks) Standby()      { call(f.standby) }
func (f *funcHooks) Unavailable()  { call(f.unavailable) }
func (f *funcHooks) LoggedIn()     { call(f.loggedIn) }
func (f *funcHooks) ServerClosed() { call(f.serverClosed) }

func call(f func()) {
	if f != nil {
		f()
	}
}
