package frontend

// The one line per client connection and its end record: refusals, cancel requests, errors in
// the config's words, application_name, fallback, cancelled queries, server state changes.

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/logtest"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// recorder is the Events of a test: the end records and TLS handshakes, in order.
type recorder struct {
	noEvents
	mu            sync.Mutex
	ended         []Ended
	tls           []string // "route result"
	acceptsFailed []string // routes
}

func (r *recorder) AcceptFailed(route string) {
	r.mu.Lock()
	r.acceptsFailed = append(r.acceptsFailed, route)
	r.mu.Unlock()
}

func (r *recorder) SessionEnded(e Ended) {
	r.mu.Lock()
	r.ended = append(r.ended, e)
	r.mu.Unlock()
}

func (r *recorder) TLSHandshake(route, result string) {
	r.mu.Lock()
	r.tls = append(r.tls, route+" "+result)
	r.mu.Unlock()
}

// waitEnded waits (10s) for the end record of the connection whose client address is client.
func (r *recorder) waitEnded(t *testing.T, client string) Ended {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		for _, e := range r.ended {
			if e.Client == client {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no end record for client %s", client)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logged is a frontend whose log and events a test reads.
type logged struct {
	f    *Frontend
	logs *logtest.Buffer
	rec  *recorder
	r    *Route
	srv  *cluster.Server
}

// newLoggedFrontend serves route rw (primary, one server "c/s" at serverAddr, queue 1s) after
// adjust changed it.
func newLoggedFrontend(t *testing.T, serverAddr string, adjust func(r *Route, adm *admission.Controller)) *logged {
	t.Helper()
	adm := admission.New(10)
	l := &logged{logs: &logtest.Buffer{}, rec: &recorder{}}
	l.srv = cluster.NewServer("c", "s", serverAddr, cluster.RolePrimary, 1, adm.NewLimit("s", 0))
	l.r = &Route{
		Name: "rw", Listen: "127.0.0.1:0", Cluster: cluster.NewCluster("c", []*cluster.Server{l.srv}, false),
		Select: cluster.Selector{Role: cluster.RolePrimary}, Balancer: balance.New(balance.First), Limit: adm.NewLimit("rw", 0),
		Startup: 2 * time.Second, Connect: 2 * time.Second, Queue: time.Second, FailoverWait: time.Second,
		Relay: relay.Options{ClientIdle: time.Hour, ClientFin: time.Second, ServerFin: time.Second},
	}
	if adjust != nil {
		adjust(l.r, adm)
	}
	f, err := New(Options{Routes: []*Route{l.r}, Admission: adm, Global: adm.NewLimit("global", 0), Events: l.rec,
		Logger: slog.New(slog.NewTextHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Listen(); err != nil {
		t.Fatal(err)
	}
	f.Serve()
	t.Cleanup(f.Close)
	l.f = f
	return l
}

// dial connects a raw client to rw.
func (l *logged) dial(t *testing.T) net.Conn {
	t.Helper()
	return dialRW(t, l.f)
}

// startup sends a StartupMessage with params and returns the client's protocol end.
func startup(t testing.TB, c net.Conn, params map[string]string) *pgproto3.Frontend {
	t.Helper()
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return fe
}

// receiveUntil reads messages until one of type T.
func receiveUntil[T pgproto3.BackendMessage](t testing.TB, fe *pgproto3.Frontend) T {
	t.Helper()
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if v, ok := m.(T); ok {
			return v
		}
	}
}

// lines are the log lines about client (by its address).
func (l *logged) lines(client string) []string {
	return l.logs.Lines(" client=" + client + " ")
}

// TestRefusalIsOneLine: a refused client gets one WARN line, the session line itself with
// refused=true, and its error in the config's words.
func TestRefusalIsOneLine(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), func(r *Route, adm *admission.Controller) {
		r.Limit, r.Queue = adm.NewLimit("rw", 1), 0
	})
	first := l.dial(t)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, first, map[string]string{"user": "u"}))

	c := l.dial(t)
	e := receiveUntil[*pgproto3.ErrorResponse](t, startup(t, c, map[string]string{"user": "u"}))
	if e.Code != pgwire.CodeTooManyConnections {
		t.Fatalf("refused with %+v", e)
	}
	rec := l.rec.waitEnded(t, c.LocalAddr().String())
	if !rec.Refused || rec.Cause != relay.CauseMaxConn || rec.Err != "no free connection slot, and timeouts.queue is 0 (no wait)" {
		t.Fatalf("end record %+v", rec)
	}
	lines := l.lines(c.LocalAddr().String())
	if len(lines) != 1 || !strings.Contains(lines[0], `level=WARN msg="session ended"`) ||
		!strings.Contains(lines[0], " refused=true ") || !strings.Contains(lines[0], " cause=maxconn ") {
		t.Fatalf("lines for the refused client:\n%s", strings.Join(lines, "\n"))
	}
}

// TestQueueTimeoutInTheConfigsWords: a client that waited timeouts.queue for a slot is told
// that, and its line says which bound ran out rather than Go's "context deadline exceeded".
func TestQueueTimeoutInTheConfigsWords(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), func(r *Route, adm *admission.Controller) {
		r.Limit, r.Queue = adm.NewLimit("rw", 1), 100*time.Millisecond
	})
	first := l.dial(t)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, first, map[string]string{"user": "u"}))
	c := l.dial(t)
	receiveUntil[*pgproto3.ErrorResponse](t, startup(t, c, map[string]string{"user": "u"}))
	rec := l.rec.waitEnded(t, c.LocalAddr().String())
	if rec.Cause != relay.CauseQueueTimeout || rec.Err != "no free connection slot within timeouts.queue (100ms)" || rec.Queued < 100*time.Millisecond {
		t.Fatalf("end record %+v", rec)
	}
	line := l.lines(c.LocalAddr().String())[0]
	if strings.Contains(line, "deadline") || !strings.Contains(line, " queued_ms=") || !strings.Contains(line, " duration_ms=") {
		t.Fatalf("line %s", line)
	}
}

// TestNoServerSaysTLSVerificationFailed: with every server down because its certificate did
// not verify, the client hears that, not that a failover may be in progress.
func TestNoServerSaysTLSVerificationFailed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tlsFailed bool
		want      string // in the message and hint
		notWant   string
	}{
		{"tls verification", true, "every server failed TLS verification", "failover may be in progress"},
		{"down", false, "a failover may be in progress", "TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := fakeServer(t)
			l := newLoggedFrontend(t, ln.Addr().String(), func(r *Route, _ *admission.Controller) { r.Queue = 0 })
			l.r.Cluster.Modify(l.srv, func(st *cluster.State) {
				st.Up, st.TLSVerifyFailed = false, tc.tlsFailed
				st.LastErr = "x509: certificate signed by unknown authority"
			})
			c := l.dial(t)
			e := receiveUntil[*pgproto3.ErrorResponse](t, startup(t, c, map[string]string{"user": "u"}))
			told := e.Message + " / " + e.Hint
			if e.Code != pgwire.CodeCannotConnectNow || !strings.Contains(told, tc.want) || strings.Contains(told, tc.notWant) {
				t.Fatalf("client told %s %q", e.Code, told)
			}
			rec := l.rec.waitEnded(t, c.LocalAddr().String())
			if rec.Cause != relay.CauseNoServer || (tc.tlsFailed && !strings.Contains(rec.Err, "c/s: x509: certificate signed by unknown authority")) {
				t.Fatalf("end record %+v", rec)
			}
		})
	}
}

// TestSessionLineFields: application_name, a replica route's fallback to the primary, the
// queries the client cancelled and the server as cluster/server are on the session line and in
// its record; the CancelRequest's own connection gets one INFO line of its own.
func TestSessionLineFields(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), func(r *Route, _ *admission.Controller) {
		r.Select = cluster.Selector{Role: cluster.RoleReplica, FallbackPrimary: true}
	})
	c := l.dial(t)
	fe := startup(t, c, map[string]string{"user": "u", "application_name": "billing-" + strings.Repeat("x", 100)})
	key := receiveUntil[*pgproto3.BackendKeyData](t, fe)
	receiveUntil[*pgproto3.ReadyForQuery](t, fe)

	cc := l.dial(t)
	var req [16]byte
	binary.BigEndian.PutUint32(req[0:], 16)
	binary.BigEndian.PutUint32(req[4:], 80877102)
	binary.BigEndian.PutUint32(req[8:], key.ProcessID)
	copy(req[12:], key.SecretKey)
	if _, err := cc.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(cc)
	cancelRec := l.rec.waitEnded(t, cc.LocalAddr().String())
	if cancelRec.CancelResult != "forwarded" || cancelRec.Server != l.srv || cancelRec.CancelFor == 0 {
		t.Fatalf("cancel record %+v", cancelRec)
	}
	cancelLine := l.lines(cc.LocalAddr().String())
	if len(cancelLine) != 1 || !strings.Contains(cancelLine[0], `level=INFO msg="cancel request"`) ||
		!strings.Contains(cancelLine[0], " result=forwarded server=c/s ") || !strings.Contains(cancelLine[0], " duration_ms=") {
		t.Fatalf("cancel lines:\n%s", strings.Join(cancelLine, "\n"))
	}

	fe.Send(&pgproto3.Terminate{})
	_ = fe.Flush()
	c.Close()
	rec := l.rec.waitEnded(t, c.LocalAddr().String())
	if rec.ID != cancelRec.CancelFor || rec.ApplicationName != ("billing-"+strings.Repeat("x", maxNameLen-len("billing-"))) ||
		!rec.Fallback || rec.Cancels != 1 || rec.Cause != relay.CauseClientTerminate {
		t.Fatalf("end record %+v", rec)
	}
	line := l.lines(c.LocalAddr().String())
	if len(line) != 1 {
		t.Fatalf("lines:\n%s", strings.Join(line, "\n"))
	}
	for _, want := range []string{" server=c/s ", " application_name=billing-xxx", " fallback=true ", " cancels=1", " duration_ms="} {
		if !strings.Contains(line[0], want) {
			t.Errorf("line lacks %q: %s", want, line[0])
		}
	}
}

// TestServerStateChangeLoggedOnce: each state change is one line naming the server as
// cluster/server, with the health check's error when it went down; a lag change is none.
func TestServerStateChangeLoggedOnce(t *testing.T) {
	ln := fakeServer(t)
	l := newLoggedFrontend(t, ln.Addr().String(), nil)
	l.r.Cluster.Modify(l.srv, func(st *cluster.State) { st.Up, st.LastErr = false, "connection refused" })
	l.r.Cluster.Modify(l.srv, func(st *cluster.State) { st.LagSeconds = 3 })
	l.r.Cluster.Modify(l.srv, func(st *cluster.State) { st.Up, st.LastErr = true, "" })
	l.r.Cluster.Modify(l.srv, func(st *cluster.State) { st.Admin = cluster.AdminDrain })
	lines := l.logs.Lines(`msg="server state changed"`)
	if len(lines) != 3 {
		t.Fatalf("%d state lines, want 3:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, want := range []string{
		`level=WARN msg="server state changed" cluster=c server=c/s up=false`,
		`level=INFO msg="server state changed" cluster=c server=c/s up=true`,
		`level=INFO msg="server state changed" cluster=c server=c/s up=true role=primary admin=drain`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %s, want %s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], `err="connection refused"`) || !strings.Contains(lines[2], "was_admin=ready") {
		t.Errorf("lines lack the reason:\n%s", strings.Join(lines, "\n"))
	}
}

// TestConnLogAccountsForEveryConnection: WARN lines beyond the burst are not written but
// counted by cause and reported, INFO lines are never limited, and stopping reports what is
// pending.
func TestConnLogAccountsForEveryConnection(t *testing.T) {
	logs := &logtest.Buffer{}
	l := newConnLog(slog.New(slog.NewTextHandler(logs, nil)), 2, time.Hour, time.Hour)
	for i := range 5 {
		l.ended(&Ended{ID: uint64(i), Route: "rw", Cause: relay.CauseMaxConn, Refused: true})
		l.ended(&Ended{ID: uint64(100 + i), Route: "rw", Cause: relay.CauseClientTerminate})
	}
	l.ended(&Ended{ID: 200, Route: "rw", Cause: relay.CauseNoServer, Refused: true})
	if n := len(logs.Lines(`level=WARN msg="session ended"`)); n != 2 {
		t.Errorf("%d WARN lines, want the burst of 2", n)
	}
	if n := len(logs.Lines(`level=INFO msg="session ended"`)); n != 5 {
		t.Errorf("%d INFO lines, want every one (5)", n)
	}
	if n := len(logs.Lines("suppressed")); n != 0 {
		t.Fatalf("reported before the interval:\n%s", logs)
	}
	l.stop()
	got := logs.Lines(`msg="connection lines suppressed"`)
	if len(got) != 1 || !strings.Contains(got[0], "suppressed=4 by_cause.maxconn=3 by_cause.no_server=1 ") {
		t.Fatalf("report:\n%s", logs)
	}
	l.ended(&Ended{ID: 300, Route: "rw", Cause: relay.CauseMaxConn, Refused: true})
	if got := logs.Lines(`msg="connection lines suppressed"`, "suppressed=1 "); len(got) != 1 {
		t.Fatalf("a line suppressed after stop is not reported at once:\n%s", logs)
	}
}

// TestConnLogReportsAfterInterval: the counts are reported once the interval after the first
// suppressed line has passed, without anything else happening.
func TestConnLogReportsAfterInterval(t *testing.T) {
	logs := &logtest.Buffer{}
	l := newConnLog(slog.New(slog.NewTextHandler(logs, nil)), 1, time.Hour, 20*time.Millisecond)
	defer l.stop()
	for range 3 {
		l.ended(&Ended{Route: "rw", Cause: relay.CauseQueueTimeout, Refused: true})
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(logs.Lines(`msg="connection lines suppressed"`, "suppressed=2 by_cause.queue_timeout=2 ")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no report:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnectTimeoutInTheConfigsWords: a server that takes the TCP connection but never
// answers the SSLRequest runs out timeouts.connect, and the line says so.
func TestConnectTimeoutInTheConfigsWords(t *testing.T) {
	silent := serveEach(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // reads until pgfront gives up
	})
	serverTLS, err := tlsconf.NewClient(tlsconf.ClientOptions{Mode: tlsconf.ModeRequire})
	if err != nil {
		t.Fatal(err)
	}
	l := newLoggedFrontend(t, silent.Addr().String(), func(r *Route, _ *admission.Controller) {
		r.Connect, r.ServerTLS = 200*time.Millisecond, serverTLS
	})
	c := l.dial(t)
	e := receiveUntil[*pgproto3.ErrorResponse](t, startup(t, c, map[string]string{"user": "u"}))
	if e.Code != pgwire.CodeConnectionFailure {
		t.Fatalf("client got %+v", e)
	}
	rec := l.rec.waitEnded(t, c.LocalAddr().String())
	want := "connecting to server c/s (" + silent.Addr().String() + "): no connection within timeouts.connect (200ms)"
	if rec.Cause != relay.CauseConnectFailed || rec.Err != want {
		t.Fatalf("end record %+v, want connect_failed: %s", rec, want)
	}
	if lines := l.logs.Lines(`msg="server connect failed"`, "server=c/s "); len(lines) != 1 ||
		!strings.Contains(lines[0], `err="no connection within timeouts.connect (200ms)"`) {
		t.Fatalf("connect failure lines:\n%s", l.logs)
	}
}

// gateWriter is a log output that takes nothing until released: a full pipe, a stuck journald.
type gateWriter struct{ release chan struct{} }

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.release
	return len(p), nil
}

// A log output that takes nothing must not stall the event loops: a session that ends on its
// loop has its end line written elsewhere, and every other session on that loop goes on.
func TestStuckLogDoesNotStallLoops(t *testing.T) {
	ln := fakeServer(t)
	gate := &gateWriter{release: make(chan struct{})}
	f := newTestFrontendWith(t, ln.Addr().String(), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(gate, nil)) // info: one line per session end
	})
	t.Cleanup(func() { close(gate.release) }) // before f.Close (cleanups run last-first)
	// Sessions go to the loops in turn: with 2 per loop and one more, every loop has at
	// least one session besides the first.
	n := 2*runtime.GOMAXPROCS(0) + 1
	fes := make([]*pgproto3.Frontend, n)
	conns := make([]net.Conn, n)
	for i := range fes {
		c, err := net.Dial("tcp", f.Addr("rw").String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		conns[i], fes[i] = c, startup(t, c, map[string]string{"user": "u"})
		receiveUntil[*pgproto3.ReadyForQuery](t, fes[i])
	}
	// The first client leaves: its session ends on its loop, and its end line cannot be
	// written.
	fes[0].Send(&pgproto3.Terminate{})
	if err := fes[0].Flush(); err != nil {
		t.Fatal(err)
	}
	_ = conns[0].(*net.TCPConn).CloseWrite()
	waitSessions(t, f, n-1)
	for i := 1; i < n; i++ {
		fes[i].Send(&pgproto3.Query{String: "SELECT 1"})
		if err := fes[i].Flush(); err != nil {
			t.Fatal(err)
		}
		receiveUntil[*pgproto3.ReadyForQuery](t, fes[i]) // fails at the conn's deadline if stalled
	}
}
