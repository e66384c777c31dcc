package frontend

// Unit tests with a scripted PostgreSQL peer (pgproto3) on loopback; the end-to-end tests
// against real PostgreSQL live in internal/app.

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeServer accepts connections and logs every client in with trust auth, then answers
// each Query with CommandComplete + ReadyForQuery until the client leaves.
func fakeServer(t testing.TB) net.Listener { return serveEach(t, serveFake) }

// serveEach listens on loopback and runs handle on its own goroutine for every connection
// until the test ends.
func serveEach(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln
}

func serveFake(c net.Conn) {
	defer c.Close()
	be := pgproto3.NewBackend(c, c)
	if _, err := be.ReceiveStartupMessage(); err != nil {
		return
	}
	serveLoggedIn(be)
}

// serveLoggedIn is serveFake after the startup packet: the login's answer, then queries.
func serveLoggedIn(be *pgproto3.Backend) {
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{0, 0, 0, 9}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	for {
		m, err := be.Receive()
		if err != nil {
			return
		}
		switch m.(type) {
		case *pgproto3.Query:
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

func newTestFrontend(t testing.TB, serverAddr string) *Frontend {
	t.Helper()
	return newTestFrontendWith(t, serverAddr, nil)
}

// newTestFrontendWith is newTestFrontend with its options changed by with (nil: none).
func newTestFrontendWith(t testing.TB, serverAddr string, with func(*Options)) *Frontend {
	t.Helper()
	adm := admission.New(10)
	srv := cluster.NewServer("c", "s", serverAddr, cluster.RolePrimary, 1, adm.NewLimit("s", 0))
	r := &Route{
		Name: "rw", Listen: "127.0.0.1:0", Cluster: cluster.NewCluster("c", []*cluster.Server{srv}, false),
		Select: cluster.Selector{Role: cluster.RolePrimary}, Balancer: balance.New(balance.First), Limit: adm.NewLimit("rw", 0),
		Startup: 2 * time.Second, Connect: 2 * time.Second, Queue: time.Second, FailoverWait: time.Second,
		Relay: relay.Options{ClientIdle: time.Hour, ClientFin: time.Second, ServerFin: time.Second},
	}
	o := Options{Routes: []*Route{r}, Admission: adm, Global: adm.NewLimit("global", 0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if with != nil {
		with(&o)
	}
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Listen(); err != nil {
		t.Fatal(err)
	}
	f.Serve()
	t.Cleanup(f.Close)
	return f
}

func TestNegotiationThenQueryThenShutdown(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontend(t, ln.Addr().String())
	c, err := net.Dial("tcp", f.Addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))

	// SSLRequest and GSSENCRequest are both answered 'N' (TLS comes later).
	for _, code := range []uint32{80877103, 80877104} {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:], 8)
		binary.BigEndian.PutUint32(req[4:], code)
		if _, err := c.Write(req[:]); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
			t.Fatalf("answer to request %d: %q %v", code, b[0], err)
		}
		if code == 80877103 {
			break // a second negotiation request is a protocol violation, tested below
		}
	}
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}})
	fe.Send(&pgproto3.Query{String: "SELECT"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.CommandComplete); ok {
			break
		}
	}
	if _, err := fe.Receive(); err != nil { // ReadyForQuery: idle now
		t.Fatal(err)
	}
	if f.Sessions() != 1 {
		t.Fatalf("sessions %d", f.Sessions())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := f.Addr("rw").String()
	f.Shutdown(ctx)
	if f.Addr("rw") != nil {
		t.Error("a route still has an address after shutdown")
	}
	m, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.(*pgproto3.ErrorResponse); !ok || e.Code != pgwire.CodeAdminShutdown {
		t.Fatalf("after shutdown got %T %+v", m, m)
	}
	if f.Sessions() != 0 {
		t.Fatalf("sessions after shutdown %d", f.Sessions())
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestDoubleNegotiationIsRefused(t *testing.T) {
	ln := fakeServer(t)
	f := newTestFrontend(t, ln.Addr().String())
	c, err := net.Dial("tcp", f.Addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], 80877103)
	_, _ = c.Write(req[:])
	_, _ = c.Write(req[:])
	b, _ := io.ReadAll(c)
	if len(b) < 2 || b[0] != 'N' || b[1] != 'E' {
		t.Fatalf("got %q, want 'N' then an ErrorResponse", b)
	}
}

// refusingServer answers every StartupMessage with FATAL 57P03 (a PostgreSQL shutting down).
func refusingServer(t *testing.T) net.Listener {
	return serveEach(t, func(c net.Conn) {
		defer c.Close()
		be := pgproto3.NewBackend(c, c)
		if _, err := be.ReceiveStartupMessage(); err == nil {
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P03", Message: "the database system is shutting down"})
			_ = be.Flush()
		}
	})
}

// A login refused with 57P03 before the client saw anything moves to the next server.
func TestLoginRefusedMovesToNextServer(t *testing.T) {
	bad, good := refusingServer(t), fakeServer(t)
	adm := admission.New(10)
	srvs := []*cluster.Server{
		cluster.NewServer("c", "bad", bad.Addr().String(), cluster.RolePrimary, 1, adm.NewLimit("bad", 0)),
		cluster.NewServer("c", "good", good.Addr().String(), cluster.RolePrimary, 1, adm.NewLimit("good", 0)),
	}
	var checked []string
	r := &Route{
		Name: "rw", Listen: "127.0.0.1:0", Cluster: cluster.NewCluster("c", srvs, false),
		Select: cluster.Selector{Role: cluster.RolePrimary}, Balancer: balance.New(balance.First), Limit: adm.NewLimit("rw", 0),
		Startup: 2 * time.Second, Connect: 2 * time.Second, Queue: time.Second, FailoverWait: time.Second,
	}
	f, err := New(Options{Routes: []*Route{r}, Admission: adm, Global: adm.NewLimit("global", 0),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnConnectFail: func(srv *cluster.Server) { checked = append(checked, srv.Name) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Listen(); err != nil {
		t.Fatal(err)
	}
	f.Serve()
	defer f.Close()

	c, err := net.Dial("tcp", f.Addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*pgproto3.AuthenticationOk); !ok {
		t.Fatalf("first message %T %+v, want AuthenticationOk from the next server", m, m)
	}
	if len(checked) != 1 || checked[0] != "bad" {
		t.Fatalf("health check asked for %v, want [bad]", checked)
	}
}

// loginKey logs a client in through f's route rw and returns the backend key it was given;
// the connection stays open until the test ends.
func loginKey(t *testing.T, f *Frontend) pgproto3.BackendKeyData {
	t.Helper()
	fe := startup(t, dialRW(t, f), map[string]string{"user": "u"})
	var key pgproto3.BackendKeyData
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.BackendKeyData:
			key = pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
		case *pgproto3.ReadyForQuery:
			return key
		}
	}
}

// TestIssuedKeyNeverShared: two sessions whose servers announce the same pid, and an issuer
// that draws the same secret twice: the second session's key is issued again, so no two live
// clients share a key (one's cancel would reach the other's query).
func TestIssuedKeyNeverShared(t *testing.T) {
	ln := fakeServer(t) // every backend announces pid 7
	var calls atomic.Int32
	f := newTestFrontendWith(t, ln.Addr().String(), func(o *Options) {
		o.IssueKey = func(_ uint32, secret []byte) {
			b := byte(1)
			if calls.Add(1) > 2 {
				b = 2
			}
			for i := range secret {
				secret[i] = b
			}
		}
	})
	k1, k2 := loginKey(t, f), loginKey(t, f)
	if k1.ProcessID != 7 || k2.ProcessID != 7 {
		t.Fatalf("pids %d and %d, want the server's 7", k1.ProcessID, k2.ProcessID)
	}
	if string(k1.SecretKey) == string(k2.SecretKey) {
		t.Fatalf("two live sessions got the same key %v", k1.SecretKey)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("IssueKey called %d times, want 3 (the second session's first draw collided)", n)
	}
}
