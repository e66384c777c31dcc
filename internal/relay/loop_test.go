package relay

import (
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// A client that does not read holds the server back: the loop stops reading the server while
// bytes for the client wait (no unbounded buffering), and every byte still arrives, in order,
// once the client reads again.
func TestLoopBackpressure(t *testing.T) {
	p, err := newLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	h, row := bigResultHarness(t, Options{Loops: p}, 64<<10)
	type flooded struct {
		rows    int
		written int64
		err     error
	}
	blocked := make(chan flooded, 1)
	done := make(chan error, 1)
	go func() {
		var f flooded
		for f.rows < 8192 { // 64 MiB at most
			_ = h.server.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := h.server.Write(row)
			f.written += int64(n)
			if err != nil {
				if !netx.IsTimeout(err) {
					f.err = err
					blocked <- f
					done <- err
					return
				}
				blocked <- f
				// Finish the row cut short, then end the result: the client reads again now.
				_ = h.server.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := h.server.Write(row[n:]); err != nil {
					done <- err
					return
				}
				f.rows++
				break
			}
			f.rows++
		}
		tail, _ := (&pgproto3.CommandComplete{CommandTag: []byte("SELECT")}).Encode(nil)
		tail, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(tail)
		_, err := h.server.Write(tail)
		if err == nil {
			blocked <- f // total rows, for the count below
		}
		done <- err
	}()

	var first flooded
	select {
	case first = <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("the server never blocked")
	}
	if first.err != nil {
		t.Fatal(first.err)
	}
	if first.written > 8<<20 {
		t.Fatalf("the server wrote %d bytes to a client that reads nothing: the relay buffered them", first.written)
	}
	got := h.readResult()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if total := <-blocked; got != total.rows {
		t.Fatalf("client got %d rows, server sent %d", got, total.rows)
	}
	waitParked(t, p, 1) // idle again, on the loop
}

// Idle sessions on a loop hold no goroutine each.
func TestLoopIdleSessionsHoldNoGoroutine(t *testing.T) {
	p, err := newLoops(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	const n = 50
	before := runtime.NumGoroutine()
	type end struct {
		app, pg *net.TCPConn
		s       *Session
		res     chan Result
	}
	var ends []end
	t.Cleanup(func() {
		for _, e := range ends {
			e.s.End(CauseAdminKill)
			_ = e.app.Close()
			_ = e.pg.Close()
			<-e.res
		}
	})
	login, err := (&pgproto3.AuthenticationOk{}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	login, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(login)
	for range n {
		app, proxyClient := tcpPair(t)
		proxyServer, pg := tcpPair(t)
		e := end{app: app, pg: pg, s: New(proxyClient, proxyServer, Options{Loops: p}), res: make(chan Result, 1)}
		ends = append(ends, e)
		e.s.Start(func(r Result) { e.res <- r })
		if _, err := pg.Write(login); err != nil {
			t.Fatal(err)
		}
		_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(app, make([]byte, len(login))); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, p, n)
	if grew := runtime.NumGoroutine() - before; grew > 5 {
		t.Fatalf("%d idle sessions on loops added %d goroutines", n, grew)
	}
	if p.Sessions() != n {
		t.Fatalf("loops hold %d sessions, want %d", p.Sessions(), n)
	}
	// And they still work.
	e := ends[0]
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	if _, err := e.app.Write(q); err != nil {
		t.Fatal(err)
	}
	_ = e.pg.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(q))
	if _, err := io.ReadFull(e.pg, got); err != nil || string(got) != string(q) {
		t.Fatalf("server got %q, %v", got, err)
	}
	if err := e.app.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
}

// BenchmarkLoopQuery is one query round trip through a session on an event loop (scripted
// client and server on loopback): the relay's own cost per message pair, allocations included.
func BenchmarkLoopQuery(b *testing.B) {
	p, err := newLoops(1)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	t := &testing.T{}
	app, proxyClient := tcpPair(t)
	proxyServer, pg := tcpPair(t)
	res := make(chan Result, 1)
	s := New(proxyClient, proxyServer, Options{Loops: p, ClientIdle: time.Hour, ServerIdle: time.Hour})
	s.Start(func(r Result) { res <- r })
	defer func() { s.End(CauseAdminKill); _ = app.Close(); _ = pg.Close(); <-res }()
	login, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	login, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(login)
	answer, _ := (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(nil)
	answer, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(answer)
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	buf := make([]byte, 256)
	if _, err := pg.Write(login); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(app, buf[:len(login)]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := app.Write(q); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(pg, buf[:len(q)]); err != nil {
			b.Fatal(err)
		}
		if _, err := pg.Write(answer); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(app, buf[:len(answer)]); err != nil {
			b.Fatal(err)
		}
	}
}

// Closing the loops ends the sessions still on them (CauseShutdown, the client told why)
// rather than leaving their sockets unwatched.
func TestLoopCloseEndsSessions(t *testing.T) {
	p, err := newLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Loops: p})
	h.login()
	p.Close()
	expectFatal(h, pgwire.CodeAdminShutdown)
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s, want shutdown", r.Cause)
	}
	if p.Sessions() != 0 {
		t.Fatalf("closed loops still hold %d sessions", p.Sessions())
	}
}

// End on another goroutine while the session joins its loop (the frontend publishes the relay
// before Begin, and an administrator's kill or a server going down may come at any moment):
// the session ends once, with that cause, and nothing crashes.
func TestLoopEndRacesBegin(t *testing.T) {
	p, err := newLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 200 {
		app, proxyClient := tcpPair(t)
		proxyServer, pg := tcpPair(t)
		s := New(proxyClient, proxyServer, Options{Loops: p})
		res := make(chan Result, 1)
		ended := make(chan struct{})
		go func() { s.End(CauseAdminKill); close(ended) }()
		s.Start(func(r Result) { res <- r })
		<-ended
		if r := <-res; r.Cause != CauseAdminKill {
			t.Fatalf("cause %s, want admin_kill", r.Cause)
		}
		_ = app.Close()
		_ = pg.Close()
	}
}

// A client that pauses in the middle of a large result longer than server_idle does not end
// the session: the server's idle bound runs from when the client took its bytes, as with a
// copier whose write returns only then.
func TestServerIdleSlowClient(t *testing.T) {
	h, row := bigResultHarness(t, Options{ServerIdle: 300 * time.Millisecond}, 32<<10)
	const rows = 200
	var all []byte
	for range rows {
		all = append(all, row...)
	}
	all, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT")}).Encode(all)
	all, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(all)
	wrote := make(chan error, 1)
	go func() {
		_ = h.server.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := h.server.Write(all)
		wrote <- err
	}()
	time.Sleep(time.Second) // the scenario: the client reads nothing for 1 s, > server_idle
	got := h.readResult()
	if got != rows {
		t.Fatalf("got %d rows, want %d", got, rows)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// The epoll set's deadline in Go's poller firing before any timer is due (what a step of the
// wall clock did when loop timers were wall-clock times) does not stall the loop.
func TestLoopEarlyDeadline(t *testing.T) {
	p, err := newLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	h := newHarness(t, Options{Loops: p, ClientIdle: 5 * time.Second})
	h.login()
	waitParked(t, p, 1) // the loop waits, its deadline the idle bound 5 s away
	_ = p.loops[0].epf.SetReadDeadline(time.Now().Add(-time.Millisecond))
	start := time.Now()
	h.query("SELECT 1", 'I')
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a query took %s to cross the loop", d)
	}
}

// readResult reads a query's DataRows up to its CommandComplete and ReadyForQuery, as the
// application, and returns how many rows came.
func (h *harness) readResult() int {
	h.t.Helper()
	rows := 0
	for {
		switch m := expectClient[pgproto3.BackendMessage](h).(type) {
		case *pgproto3.DataRow:
			rows++
		case *pgproto3.CommandComplete:
			expectClient[*pgproto3.ReadyForQuery](h)
			return rows
		default:
			h.t.Fatalf("got %T after %d rows", m, rows)
		}
	}
}

// A session that ends with nothing to write and nothing to wait for (its client's Terminate)
// finishes on its loop, with no goroutine of its own; one that must tell its client why (a
// FATAL the client may be slow to take) finishes on a goroutine, never on the loop.
func TestLoopFinishesOnLoopOnlyWithoutWaits(t *testing.T) {
	p, err := newLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for _, tc := range []struct {
		name   string
		end    func(s *Session, app, pg net.Conn)
		cause  Cause
		onLoop bool
	}{
		{"client terminates", func(_ *Session, app, pg net.Conn) {
			_, _ = app.Write([]byte{'X', 0, 0, 0, 4})
			_ = app.(*net.TCPConn).CloseWrite()
			readFull(t, pg, 5)
			_ = pg.Close()
		}, CauseClientTerminate, true},
		{"administrator kill", func(s *Session, app, _ net.Conn) {
			s.End(CauseAdminKill)
			readFull(t, app, 1) // the FATAL's first byte
		}, CauseAdminKill, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, proxyClient := tcpPair(t)
			proxyServer, pg := tcpPair(t)
			defer func() { _ = app.Close(); _ = pg.Close() }()
			s := New(proxyClient, proxyServer, Options{Loops: p})
			type ended struct {
				r     Result
				stack string
			}
			res := make(chan ended, 1)
			s.Start(func(r Result) {
				buf := make([]byte, 16<<10)
				res <- ended{r, string(buf[:runtime.Stack(buf, false)])}
			})
			login, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
			login, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(login)
			if _, err := pg.Write(login); err != nil {
				t.Fatal(err)
			}
			readFull(t, app, len(login))
			tc.end(s, app, pg)
			e := <-res
			if e.r.Cause != tc.cause {
				t.Fatalf("cause %s, want %s", e.r.Cause, tc.cause)
			}
			if got := strings.Contains(e.stack, "(*loop).run"); got != tc.onLoop {
				t.Fatalf("finished on the loop: %v, want %v; onEnd ran on:\n%s", got, tc.onLoop, e.stack)
			}
		})
	}
}

func readFull(t *testing.T, c net.Conn, n int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

// countingGreeter counts Connected calls and hands nothing off.
type countingGreeter struct{ connected int }

func (g *countingGreeter) Packet(*pgwire.FirstPacket) Greeting { return Greeting{} }
func (g *countingGreeter) Connected(*Session, int) (Options, func(Result)) {
	g.connected++
	return Options{}, func(Result) {}
}
func (g *countingGreeter) HandOff(c net.Conn, _ error) {
	if c != nil {
		_ = c.Close()
	}
}

// An event collected for a socket that was then closed is not given to the session whose
// socket got the same number within the same batch (a loop connects sockets mid-batch): a
// stale "writable" would make a connect that is still under way look done.
func TestLoopDropsStaleEvents(t *testing.T) {
	l, err := makeLoop()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.epf.Close(); _ = unix.Close(l.wakefd) })
	// Session A's socket is registered, an event for it collected, then it is closed.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := &Session{lp: l}
	if err := l.addFD(a, fd); err != nil {
		t.Fatal(err)
	}
	stale := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT, Fd: int32(fd), Pad: l.genByFD[fd]}
	_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.byFD[fd] = nil
	_ = unix.Close(fd)
	// Session B connects: its socket has A's number (a socket not yet connected: SO_ERROR is 0).
	nfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nfd != fd {
		if err := unix.Dup3(nfd, fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		_ = unix.Close(nfd)
	}
	g := &countingGreeter{}
	b := &Session{lp: l, greet: &greetState{g: g, connecting: true}}
	b.ls.fd = [2]int{-1, fd}
	b.ls.heapIdx = -1
	b.ls.registered, b.ls.done = true, true // done: nothing runs after the event
	if err := l.addFD(b, fd); err != nil {
		t.Fatal(err)
	}
	l.dispatch(stale)
	if g.connected != 0 {
		t.Fatal("a stale event made a connecting socket look connected")
	}
	l.dispatch(unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd), Pad: l.genByFD[fd]})
	if g.connected != 1 {
		t.Fatalf("the socket's own event: Connected called %d times, want 1", g.connected)
	}
	_ = unix.Close(fd)
}

// bigResultHarness is a logged-in session whose sockets have buf-sized kernel buffers, with a
// query sent and the 8 KB DataRow the test's server will answer it with, many times.
func bigResultHarness(t *testing.T, opts Options, buf int) (*harness, []byte) {
	t.Helper()
	h := newHarnessWith(t, opts, func(c, s *net.TCPConn) {
		_ = c.SetWriteBuffer(buf)
		_ = s.SetReadBuffer(buf)
	})
	_ = h.client.SetReadBuffer(buf)
	_ = h.server.SetWriteBuffer(buf)
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT big"})
	expectServer[*pgproto3.Query](h)
	row, err := (&pgproto3.DataRow{Values: [][]byte{make([]byte, 8000)}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, row
}
