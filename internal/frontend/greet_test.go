package frontend

// Sessions of plain routes start on the event loops (greet.go); what the loop does not do
// itself it hands to the session's goroutine.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
)

// Clients that connected and have not sent their startup packet yet are held by the loops:
// no goroutine each (a goroutine per session used to wait for the packet).
func TestGreetingHoldsNoGoroutine(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontendWith(t, ln.Addr().String(), func(o *Options) { o.Routes[0].Startup = time.Minute })
	conns := wantGreetedOnLoops(t, f, 40)
	for _, c := range conns {
		_ = c.Close()
	}
	waitSessions(t, f, 0)
	// And a client that goes on is relayed from the loop.
	c := dialRW(t, f)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
}

// A server that refuses the loop's connect is marked failed and the session moves to the
// next server on its goroutine, as a failed dial always did.
func TestGreetingConnectRefusedMovesOn(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := refused.Addr().String()
	_ = refused.Close() // nothing listens there now: the connect is refused
	good := fakeServer(t)
	l := newLoggedFrontend(t, deadAddr, func(r *Route, adm *admission.Controller) {
		r.Cluster = cluster.NewCluster("c", []*cluster.Server{l0(r),
			cluster.NewServer("c", "t", good.Addr().String(), cluster.RolePrimary, 1, adm.NewLimit("t", 0))}, false)
		r.ConnectRetries = 1
	})
	c := l.dial(t)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	if lines := l.logs.Lines(`msg="server connect failed"`, "server=c/s "); len(lines) != 1 ||
		!strings.Contains(lines[0], "connection refused") {
		t.Fatalf("connect failure lines:\n%s", l.logs)
	}
	_ = c.Close()
	if rec := l.rec.waitEnded(t, c.LocalAddr().String()); rec.Server == nil || rec.Server.Name != "t" {
		t.Fatalf("end record %+v, want server t", rec)
	}
}

// l0 is the route's first server (newLoggedFrontend's "c/s").
func l0(r *Route) *cluster.Server { return r.Cluster.Servers()[0] }

// A server given by host name is dialled by name on the session's goroutine the first time (a
// loop cannot look a name up); later logins connect from the loops to the address that dial
// reached, without a goroutine each.
func TestGreetingHostNameServer(t *testing.T) {
	srv := newSilentServer(t)
	_, port, _ := net.SplitHostPort(srv.addr)
	name := "localhost:" + port
	var fails atomic.Int32
	f := newTestFrontendWith(t, name, func(o *Options) {
		o.OnConnectFail = func(*cluster.Server) { fails.Add(1) }
	})
	startup(t, dialRW(t, f), map[string]string{"user": "u"})
	srv.waitAccepted(t, 1)
	waitRemembered(t, f, name, srv.addr)

	for range 20 {
		startup(t, dialRW(t, f), map[string]string{"user": "u"})
	}
	srv.waitAccepted(t, 21)
	if n := handedOff(f); n != 1 {
		t.Fatalf("%d of 21 logins handed to a goroutine, want only the first", n)
	}

	// An address that went stale (a pod that came back elsewhere) is forgotten: the login
	// dials the name again, and the refused connect does not count against the server.
	f.resolved.Learn(name, netip.MustParseAddrPort(refusingAddr(t)))
	startup(t, dialRW(t, f), map[string]string{"user": "u"})
	srv.waitAccepted(t, 22)
	waitRemembered(t, f, name, srv.addr)
	if n := fails.Load(); n != 0 {
		t.Fatalf("%d connect failures reported for a stale remembered address", n)
	}
}

// A dial by host name whose address is remembered connects there without a lookup: a name
// no resolver knows still connects.
func TestDialServerRemembered(t *testing.T) {
	srv := newSilentServer(t)
	f := newTestFrontend(t, srv.addr)
	name := "pgfront-test.invalid:5432"
	f.resolved.Learn(name, netip.MustParseAddrPort(srv.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := f.dialServer(ctx, &net.Dialer{}, name)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	srv.waitAccepted(t, 1)

	// A remembered address that refuses is forgotten and the name dialled: it connects, and
	// the address it reached is remembered instead.
	_, port, _ := net.SplitHostPort(srv.addr)
	name = "localhost:" + port
	f.resolved.Learn(name, netip.MustParseAddrPort(refusingAddr(t)))
	if c, _, err = f.dialServer(ctx, &net.Dialer{}, name); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	srv.waitAccepted(t, 2)
	waitRemembered(t, f, name, srv.addr)
}

// handedOff counts f's sessions that a loop gave to a goroutine before they were relayed.
func handedOff(f *Frontend) int {
	n := 0
	for _, s := range f.registry.Snapshot() {
		s.mu.Lock()
		if s.mu.handedOff {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// waitRemembered waits (10s) until f remembers name as addr.
func waitRemembered(t *testing.T, f *Frontend, name, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		to, remembered, _ := f.resolved.Lookup(name)
		if remembered && to.String() == addr {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s remembered as %v (%v), want %s", name, to, remembered, addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refusingAddr is a loopback address nothing listens on now: a connect there is refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// silentServer accepts connections on loopback, counts them and never answers (each is held
// until its peer closes it).
type silentServer struct {
	addr     string
	accepted atomic.Int32
}

func newSilentServer(t *testing.T) *silentServer {
	t.Helper()
	s := &silentServer{}
	ln := serveEach(t, func(c net.Conn) {
		defer c.Close()
		s.accepted.Add(1)
		_, _ = io.Copy(io.Discard, c)
	})
	s.addr = ln.Addr().String()
	return s
}

// waitAccepted waits (10s) until the server has accepted n connections.
func (s *silentServer) waitAccepted(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.accepted.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.accepted.Load(); got != n {
		t.Fatalf("server accepted %d connections, want %d", got, n)
	}
}

// A client still sending its startup packet when its time runs out gets the goroutine's
// FATAL, in the config's words.
func TestGreetingStartupTimeout(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), func(r *Route, _ *admission.Controller) { r.Startup = 300 * time.Millisecond })
	c := l.dial(t)
	if _, err := c.Write([]byte{0, 0, 0, 40, 0, 3}); err != nil { // a packet's first bytes
		t.Fatal(err)
	}
	e := receiveUntil[*pgproto3.ErrorResponse](t, pgproto3Frontend(t, c))
	if e.Code != pgwire.CodeProtocolViolation || !strings.Contains(e.Message, "timed out") {
		t.Fatalf("client got %+v", e)
	}
	if rec := l.rec.waitEnded(t, c.LocalAddr().String()); rec.Cause != relay.CauseStartupTimeout {
		t.Fatalf("end record %+v", rec)
	}
}

// Stopping pgfront reaches a session the loop greets: its client is told at once, not when
// its startup time (a minute here) runs out.
func TestGreetingStoppedTellsClient(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontendWith(t, ln.Addr().String(), func(o *Options) { o.Routes[0].Startup = time.Minute })
	c := dialRW(t, f)
	waitSessions(t, f, 1)
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	e := receiveUntil[*pgproto3.ErrorResponse](t, pgproto3Frontend(t, c))
	if e.Code != pgwire.CodeAdminShutdown {
		t.Fatalf("client got %+v", e)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close still waits for a session in startup")
	}
}

// wantGreetedOnLoops connects n clients that stay in startup and checks that the loops hold
// them: no goroutine each (at most 5 more in all). It returns the clients (also closed when
// the test ends).
func wantGreetedOnLoops(t *testing.T, f *Frontend, n int) []net.Conn {
	t.Helper()
	base, open := runtime.NumGoroutine(), f.Sessions()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialRW(t, f)
	}
	waitSessions(t, f, open+n)
	if g := runtime.NumGoroutine(); g > base+5 {
		t.Fatalf("%d goroutines with %d clients in startup, %d before: not greeted on the loops", g, n, base)
	}
	return conns
}

func dialRW(t *testing.T, f *Frontend) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", f.Addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

func pgproto3Frontend(_ *testing.T, c net.Conn) *pgproto3.Frontend {
	return pgproto3.NewFrontend(c, io.Discard)
}

// waitSessions waits (10s) until f has n sessions.
func waitSessions(t *testing.T, f *Frontend, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.Sessions() != n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := f.Sessions(); got != n {
		t.Fatalf("%d sessions, want %d", got, n)
	}
}

// A client that resets before its startup packet ends as client_reset, not as a port probe's
// client_eof (the loop's peek takes the socket's error; the hand-off classifies it).
func TestGreetingResetBeforeStartup(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), nil)
	c, err := net.Dial("tcp", l.f.Addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	waitSessions(t, l.f, 1)
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close() // RST
	if rec := l.rec.waitEnded(t, local); rec.Cause != relay.CauseClientReset {
		t.Fatalf("end record cause %s (err %q), want client_reset", rec.Cause, rec.Err)
	}
}

// A stop while the loop connects to a server that does not answer tells the client and gives
// its maxconn slot back.
func TestGreetingStoppedWhileConnecting(t *testing.T) {
	hole := blackhole(t)
	f := newTestFrontendWith(t, hole, func(o *Options) { o.Routes[0].Connect = time.Minute })
	c := dialRW(t, f)
	fe := startup(t, c, map[string]string{"user": "u"})
	global := f.opts.Global
	deadline := time.Now().Add(10 * time.Second)
	for global.InUse() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if global.InUse() != 1 {
		t.Fatalf("%d slots in use, want the connecting session's", global.InUse())
	}
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	if e := receiveUntil[*pgproto3.ErrorResponse](t, fe); e.Code != pgwire.CodeAdminShutdown {
		t.Fatalf("client got %+v", e)
	}
	<-done
	if n := global.InUse(); n != 0 {
		t.Fatalf("%d slots in use after the session ended", n)
	}
}

// blackhole is a loopback address whose listener's accept queue is full: SYNs to it are
// dropped, so a connect stays under way.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	for range 2 { // fill the accept queue
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
	}
	return addr
}

// The event loops accept a plain route's clients; a reload that gives the listener a route
// that does not greet (TLS here) hands its clients to goroutines from the next accept on,
// and one back to a plain route has the loops accept again.
func TestGreetingRouteSwitchedByReload(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontend(t, ln.Addr().String())
	plain := f.opts.Routes[0]
	login := func() {
		t.Helper()
		c := dialRW(t, f)
		receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	}
	login()

	_, terminate := tlsRoute(t, false)
	tlsRW := *plain
	terminate(&tlsRW, nil)
	if _, err := f.Apply([]*Route{&tlsRW}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		sslRequest(t, dialRW(t, f)) // 'S' (a loop answers 'N')
	}

	if _, err := f.Apply([]*Route{plain}); err != nil {
		t.Fatal(err)
	}
	login() // through Go's accept, which hands the listener back to the loops
	login() // through a loop
	wantGreetedOnLoops(t, f, 20)
}

// An accept the loop cannot make (here on a listening socket shut down: EINVAL, as out of
// descriptors would fail) is logged and retried after a growing backoff, as Go's accept's:
// the loop neither spins on the socket nor gives it up.
func TestGreetingAcceptFailureBacksOff(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), nil)
	c := l.dial(t)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	l.f.mu.Lock()
	var tl *net.TCPListener
	for _, lst := range l.f.mu.listeners {
		tl = lst.ln.(*net.TCPListener)
	}
	l.f.mu.Unlock()
	rc, err := tl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RD) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	deadline := time.Now().Add(10 * time.Second)
	var lines []string
	for len(lines) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		lines = l.logs.Lines(`msg="accept failed"`, "invalid argument")
	}
	if len(lines) < 3 {
		t.Fatalf("accept failures logged:\n%s", l.logs)
	}
	if !strings.Contains(lines[0], "retry_in=5ms") || !strings.Contains(lines[1], "retry_in=10ms") || !strings.Contains(lines[2], "retry_in=20ms") {
		t.Errorf("backoff not growing:\n%s", strings.Join(lines, "\n"))
	}
	// Counted for the metrics too (pgfront_accept_errors_total).
	l.rec.mu.Lock()
	defer l.rec.mu.Unlock()
	if len(l.rec.acceptsFailed) < 3 || l.rec.acceptsFailed[0] != "rw" {
		t.Errorf("accept failures counted: %v", l.rec.acceptsFailed)
	}
}

// StopAccepting (an upgrade's hand-over) and a reload that drops an address leave nothing
// accepting on the socket when they return: the loop watching it has stopped and closed its
// duplicate, so the port can be bound again at once.
func TestGreetingStopAcceptingFreesPort(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontend(t, ln.Addr().String())
	c := dialRW(t, f)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	addr := f.Addr("rw").String()
	f.StopAccepting()
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s after StopAccepting: %v", addr, err)
	}
	_ = again.Close()
}

// A listener the loops could not take (no descriptor for the duplicate) is retried after the
// accept backoff, not left to Go's accept for good.
func TestGreetingListenerRetriedAfterDupFailure(t *testing.T) {
	failures := 2
	dup := dupSocket
	t.Cleanup(func() { dupSocket = dup })
	dupSocket = func(ln net.Listener) (int, error) {
		if failures > 0 {
			failures-- // only the accept loop's goroutine calls it
			return -1, unix.EMFILE
		}
		return dup(ln)
	}
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), nil)
	c := l.dial(t) // Go's accept does not take it meanwhile: it waits for the loop
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	if lines := l.logs.Lines(`msg="accept failed"`, "too many open files"); len(lines) != 2 {
		t.Fatalf("dup failures logged:\n%s", l.logs)
	}
	wantGreetedOnLoops(t, l.f, 20)
}

// Out of file descriptors for real (RLIMIT_NOFILE lowered to what is open, plus one for the
// client's dial): the loop's accept fails with EMFILE, the failure is logged and counted, and
// once descriptors are free again the client that waited in the backlog is accepted and logs
// in; the session already open goes on. (No test of this package runs in parallel: the limit
// is the process's.)
func TestGreetingAcceptOutOfDescriptors(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), nil)
	c := l.dial(t)
	fe := startup(t, c, map[string]string{"user": "u"})
	receiveUntil[*pgproto3.ReadyForQuery](t, fe)

	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Fill the table up to a lowered limit, leaving one descriptor for the client's dial.
	var fillers []int
	defer func() {
		for _, fd := range fillers {
			_ = unix.Close(fd)
		}
	}()
	low := lim
	low.Cur = 0
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			t.Skipf("cannot fill the descriptor table: %v", err)
		}
		fillers = append(fillers, fd)
		if uint64(fd) >= 200 { // far enough above what the test holds; the limit goes just above
			low.Cur = uint64(fd) + 2
			break
		}
	}
	// Descriptors below the lowered limit that are free are filled as well.
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(fd) >= low.Cur-1 {
			_ = unix.Close(fd) // the one left for the dial
			break
		}
		fillers = append(fillers, fd)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()

	c2, err := net.Dial("tcp", l.f.Addr("rw").String()) // the last descriptor: the kernel completes the handshake
	if err != nil {
		restore()
		t.Fatalf("dial with one descriptor left: %v", err)
	}
	defer c2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(l.logs.Lines(`msg="accept failed"`, "too many open files")) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(l.logs.Lines(`msg="accept failed"`, "too many open files")) == 0 {
		restore()
		t.Fatalf("no accept failure logged:\n%s", l.logs)
	}
	// Descriptors again: the waiting client is accepted and logs in.
	restore()
	for _, fd := range fillers {
		_ = unix.Close(fd)
	}
	fillers = nil
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c2, map[string]string{"user": "u"}))
	l.rec.mu.Lock()
	n := len(l.rec.acceptsFailed)
	l.rec.mu.Unlock()
	if n == 0 {
		t.Error("the accept failure was not counted")
	}
	// The first session was not disturbed.
	fe.Send(&pgproto3.Query{String: "select 1"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	receiveUntil[*pgproto3.ReadyForQuery](t, fe)
}

// A remembered address that no longer answers (a pod gone, its IP silent) gets half of
// timeouts.connect on the loop; the name is dialled in what is left, so the login still
// lands within the bound, and a name that fails too ends the login at the bound.
func TestGreetingRememberedAddressSilent(t *testing.T) {
	const connect = 3 * time.Second
	srv := newSilentServer(t)
	_, port, _ := net.SplitHostPort(srv.addr)
	name := "localhost:" + port
	l := newLoggedFrontend(t, name, func(r *Route, _ *admission.Controller) { r.Connect = connect })
	l.f.resolved.Learn(name, netip.MustParseAddrPort(blackhole(t)))
	start := time.Now()
	startup(t, l.dial(t), map[string]string{"user": "u"})
	srv.waitAccepted(t, 1)
	if took := time.Since(start); took > connect*5/8 {
		t.Fatalf("the login reached the server after %s: the silent address had more than half of %s", took, connect)
	}
	if lines := l.logs.Lines(`msg="server connect failed"`); len(lines) != 0 {
		t.Fatalf("a stale remembered address counted against the server:\n%s", l.logs)
	}
	waitRemembered(t, l.f, name, srv.addr)
}

// When the name's address is silent too, the login fails once timeouts.connect has passed in
// all, not after the remembered address's half plus a whole bound for the name.
func TestGreetingRememberedAddressBound(t *testing.T) {
	const connect = 3 * time.Second
	_, port, _ := net.SplitHostPort(blackhole(t))
	name := "localhost:" + port
	l := newLoggedFrontend(t, name, func(r *Route, _ *admission.Controller) { r.Connect = connect })
	l.f.resolved.Learn(name, netip.MustParseAddrPort(blackhole(t)))
	start := time.Now()
	c := l.dial(t)
	e := receiveUntil[*pgproto3.ErrorResponse](t, startup(t, c, map[string]string{"user": "u"}))
	if e.Code != pgwire.CodeConnectionFailure {
		t.Fatalf("client got %+v", e)
	}
	if took := time.Since(start); took > connect*5/4 {
		t.Fatalf("refused after %s, timeouts.connect is %s", took, connect)
	}
	if _, remembered, _ := l.f.resolved.Lookup(name); remembered {
		t.Fatal("the silent address is still remembered")
	}
}

// The same on a goroutine's dial (dialServer): the remembered address gets half of what is left.
func TestDialServerRememberedSilent(t *testing.T) {
	srv := newSilentServer(t)
	f := newTestFrontend(t, srv.addr)
	_, port, _ := net.SplitHostPort(srv.addr)
	name := "localhost:" + port
	f.resolved.Learn(name, netip.MustParseAddrPort(blackhole(t)))
	const bound = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	c, via, err := f.dialServer(ctx, &net.Dialer{}, name)
	if err != nil {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
	_ = c.Close()
	if via.IsValid() {
		t.Fatalf("connected via the silent address %s", via)
	}
	if took := time.Since(start); took > bound*5/8 {
		t.Fatalf("connected after %s: the silent address had more than half of %s", took, bound)
	}
}

// A dial given up by its caller leaves the remembered address alone (the address did not
// fail); one whose name fails as well forgets it.
func TestDialServerForgetsOnlyFailures(t *testing.T) {
	f := newTestFrontend(t, refusingAddr(t))
	srv := newSilentServer(t)
	name := "pgfront-test.invalid:5432"
	f.resolved.Learn(name, netip.MustParseAddrPort(srv.addr))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := f.dialServer(ctx, &net.Dialer{}, name); err == nil {
		t.Fatal("a dial with a cancelled context connected")
	}
	if _, remembered, _ := f.resolved.Lookup(name); !remembered {
		t.Fatal("a cancelled dial forgot the address")
	}

	_, port, _ := net.SplitHostPort(refusingAddr(t))
	name = "localhost:" + port
	f.resolved.Learn(name, netip.MustParseAddrPort(refusingAddr(t)))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := f.dialServer(ctx, &net.Dialer{}, name); err == nil {
		t.Fatal("connected to nothing")
	}
	if _, remembered, _ := f.resolved.Lookup(name); remembered {
		t.Fatal("an address that refused is still remembered")
	}
}

// A cancel request for a server given by host name goes to the remembered address: no lookup
// (the name here resolves nowhere).
func TestCancelToRememberedAddress(t *testing.T) {
	got := make(chan []byte, 1)
	srv := serveEach(t, func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 16)
		if _, err := io.ReadFull(c, b); err == nil {
			got <- b
		}
	})
	f := newTestFrontend(t, srv.Addr().String())
	name := "pgfront-test.invalid:5432"
	f.resolved.Learn(name, netip.MustParseAddrPort(srv.Addr().String()))
	key := pgwire.CancelKey{ProcessID: 42, Secret: "\x00\x00\x00\x07"}
	if err := f.sendCancel(&net.Dialer{}, name, nil, key); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != string(pgwire.EncodeCancelRequest(key)) {
		t.Fatalf("server got % x", b)
	}
}

// failingTLS fails the handshake with one address (a remembered IP now someone else's) and
// leaves every other conn as it is (a server that said no to TLS under sslmode=prefer).
type failingTLS struct{ bad string }

func (f failingTLS) Negotiate(_ context.Context, c net.Conn, _ string) (net.Conn, error) {
	if c.RemoteAddr().String() == f.bad {
		return nil, errors.New("tls: bad certificate")
	}
	return c, nil
}

// A remembered address that takes the connect but fails the TLS handshake is forgotten and
// the name dialled: the login goes on, and nothing counts against the server.
func TestDialRememberedTLSFailure(t *testing.T) {
	good := fakeServer(t)
	_, port, _ := net.SplitHostPort(good.Addr().String())
	name := "localhost:" + port
	other := newSilentServer(t) // took the pod's old IP
	l := newLoggedFrontend(t, name, func(r *Route, _ *admission.Controller) { r.ServerTLS = failingTLS{bad: other.addr} })
	l.f.resolved.Learn(name, netip.MustParseAddrPort(other.addr))
	c := l.dial(t)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	other.waitAccepted(t, 1)
	if lines := l.logs.Lines(`msg="server connect failed"`); len(lines) != 0 {
		t.Fatalf("the remembered address's handshake counted against the server:\n%s", l.logs)
	}
	waitRemembered(t, l.f, name, good.Addr().String())
}
