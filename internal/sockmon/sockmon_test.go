package sockmon

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

func listen(tb testing.TB, network, addr string) net.Listener {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// dialAccept dials ln at addr (ln's own address if empty) and accepts: dialled is the
// dialling end, accepted the listener's. Both are closed at the end of the test.
func dialAccept(tb testing.TB, ln net.Listener, addr string) (dialled, accepted *net.TCPConn) {
	tb.Helper()
	if addr == "" {
		addr = ln.Addr().String()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// track registers c as a server conn pgfront dialled.
func track(m *Monitor, c *net.TCPConn, route, cluster, server string) {
	m.TrackServerConn(addrPort(c.LocalAddr()), addrPort(c.RemoteAddr()), route, cluster, server)
}

// readEOF reads from c until the peer's FIN.
func readEOF(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if n, err := c.Read(make([]byte, 1)); n != 0 || !netx.IsEOF(err) {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
}

// waitCounts polls Sample until its counts are want.
func waitCounts(t *testing.T, m *Monitor, want map[Key]int) Sample {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := m.Sample()
		if err != nil {
			t.Fatal(err)
		}
		if maps.Equal(s.Counts, want) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for counts\n got %v\nwant %v", s.Counts, want)
		}
		time.Sleep(time.Millisecond) // states change asynchronously: poll
	}
}

func client(route string, st netx.TCPState) Key {
	return Key{Route: route, Side: SideClient, State: st}
}

func server(route, cluster, srv string, st netx.TCPState) Key {
	return Key{Route: route, Side: SideServer, Cluster: cluster, Server: srv, State: st}
}

func TestSampleStates(t *testing.T) {
	m := New(Options{})
	mainLn := listen(t, "tcp", "127.0.0.1:0")
	roLn := listen(t, "tcp", "127.0.0.1:0")
	pgLn := listen(t, "tcp", "127.0.0.1:0")    // the PostgreSQL servers' listener
	otherLn := listen(t, "tcp", "127.0.0.1:0") // someone else's service
	m.AddListener("main", addrPort(mainLn.Addr()))
	m.AddListener("ro", addrPort(roLn.Addr()))

	// Client side: pgfront's ends are the accepted ones.
	dialAccept(t, mainLn, "")
	dialAccept(t, roLn, "")
	// pgfront half-closes, the client keeps silent: FIN_WAIT2 on pgfront's end.
	_, finWait := dialAccept(t, mainLn, "")
	if err := finWait.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// pgfront closes first, the client after it: TIME_WAIT, held by no process.
	peer, timeWait := dialAccept(t, mainLn, "")
	timeWait.Close()
	readEOF(t, peer)
	peer.Close()

	// Server side: pgfront's ends are the dialled, tracked ones.
	est, _ := dialAccept(t, pgLn, "")
	track(m, est, "main", "pg", "pg-1")
	roEst, _ := dialAccept(t, pgLn, "")
	track(m, roEst, "ro", "pg", "pg-2")
	// The server closes, pgfront's end does not: CLOSE_WAIT.
	closeWait, srv := dialAccept(t, pgLn, "")
	track(m, closeWait, "main", "pg", "pg-1")
	srv.Close()
	// pgfront closes first, the server after it: TIME_WAIT.
	tw, srv2 := dialAccept(t, pgLn, "")
	track(m, tw, "main", "pg", "pg-1")
	tw.Close()
	readEOF(t, srv2)
	srv2.Close()

	// Another process's conn to the same server, in the same state as pgfront's
	// CLOSE_WAIT, and a conn to an unrelated listener: never counted.
	_, untrackedSrv := dialAccept(t, pgLn, "")
	untrackedSrv.Close()
	dialAccept(t, otherLn, "")

	s := waitCounts(t, m, map[Key]int{
		client("main", netx.TCPEstablished):               1,
		client("main", netx.TCPFinWait2):                  1,
		client("main", netx.TCPTimeWait):                  1,
		client("ro", netx.TCPEstablished):                 1,
		server("main", "pg", "pg-1", netx.TCPEstablished): 1,
		server("main", "pg", "pg-1", netx.TCPCloseWait):   1,
		server("main", "pg", "pg-1", netx.TCPTimeWait):    1,
		server("ro", "pg", "pg-2", netx.TCPEstablished):   1,
	})
	if s.Source != netx.SourceSockDiag && s.Source != netx.SourceProc {
		t.Errorf("source %q", s.Source)
	}
	// 4 listeners, 9 pairs (the TIME_WAIT ones as one socket each).
	if s.Scanned < 4+2*9-2 {
		t.Errorf("scanned %d sockets, fewer than this test's", s.Scanned)
	}
	if s.At.IsZero() || s.Took <= 0 {
		t.Errorf("at %v, took %v", s.At, s.Took)
	}
	if n := m.Tracked(); n != 4 {
		t.Errorf("tracked %d, want 4", n)
	}
	t.Logf("source %s, %d sockets scanned in %v", s.Source, s.Scanned, s.Took)
}

func TestSampleForgetsClosedConns(t *testing.T) {
	m := New(Options{})
	pgLn := listen(t, "tcp", "127.0.0.1:0")
	kept, _ := dialAccept(t, pgLn, "")
	track(m, kept, "main", "pg", "pg-1")
	gone, goneSrv := dialAccept(t, pgLn, "")
	track(m, gone, "main", "pg", "pg-1")
	waitCounts(t, m, map[Key]int{server("main", "pg", "pg-1", netx.TCPEstablished): 2})
	if n := m.Tracked(); n != 2 {
		t.Fatalf("tracked %d, want 2", n)
	}

	// A reset leaves neither end in the table (a clean close would leave TIME_WAIT for 60s).
	if err := gone.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	gone.Close()
	goneSrv.Close()
	waitCounts(t, m, map[Key]int{server("main", "pg", "pg-1", netx.TCPEstablished): 1})
	if _, err := m.Sample(); err != nil {
		t.Fatal(err)
	}
	if n := m.Tracked(); n != 1 {
		t.Errorf("tracked %d after the reset conn left the table, want 1", n)
	}
}

func TestSampleKeepsConnTrackedDuringIt(t *testing.T) {
	var m *Monitor
	registerDuringRead := true
	m = New(Options{Read: func(dst []netx.Socket) ([]netx.Socket, string, error) {
		if registerDuringRead {
			// Dialled while the table is read: the table cannot list it yet.
			m.TrackServerConn(ap("192.0.2.1:40000"), ap("192.0.2.2:5432"), "main", "pg", "pg-1")
		}
		return netx.ReadTCPSockets(dst)
	}})
	if _, err := m.Sample(); err != nil {
		t.Fatal(err)
	}
	if n := m.Tracked(); n != 1 {
		t.Fatalf("tracked %d after a sample during which a conn was tracked, want 1", n)
	}
	registerDuringRead = false
	if _, err := m.Sample(); err != nil {
		t.Fatal(err)
	}
	if n := m.Tracked(); n != 0 {
		t.Errorf("tracked %d after a sample that did not list the conn, want 0", n)
	}
}

func TestSampleIPv6(t *testing.T) {
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("cannot listen on ::1: %v", err)
	}
	defer ln6.Close()
	m := New(Options{})
	m.AddListener("v6", addrPort(ln6.Addr()))
	pg6 := listen(t, "tcp6", "[::1]:0")
	dialAccept(t, ln6, "")
	c, _ := dialAccept(t, pg6, "")
	track(m, c, "v6", "pg", "pg-6")
	want := map[Key]int{
		client("v6", netx.TCPEstablished):               1,
		server("v6", "pg", "pg-6", netx.TCPEstablished): 1,
	}
	waitCounts(t, m, want)

	// A dual-stack listener on [::]: IPv4 clients' sockets are listed IPv4-mapped.
	dual, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	defer dual.Close()
	port := addrPort(dual.Addr()).Port()
	m.AddListener("dual", netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	_, v4 := dialAccept(t, dual, fmt.Sprintf("127.0.0.1:%d", port))
	if a := addrPort(v4.LocalAddr()).Addr(); !a.Is4In6() && !a.Is4() {
		t.Fatalf("accepted local address %v", a)
	}
	dialAccept(t, dual, fmt.Sprintf("[::1]:%d", port))
	want[client("dual", netx.TCPEstablished)] = 2
	waitCounts(t, m, want)
}

// table is a Read seam returning a fixed table.
type table struct {
	socks  []netx.Socket
	source string
	err    error
}

func (tb *table) read(dst []netx.Socket) ([]netx.Socket, string, error) {
	if tb.err != nil {
		return dst, "", tb.err
	}
	return append(dst, tb.socks...), tb.source, nil
}

func sock(local, remote string, st netx.TCPState, inode uint64) netx.Socket {
	return netx.Socket{Local: ap(local), Remote: ap(remote), State: st, Inode: inode}
}

func TestAttribution(t *testing.T) {
	tab := &table{source: "test"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := t0
	m := New(Options{Read: tab.read, Now: func() time.Time { clock = clock.Add(5 * time.Millisecond); return clock }})
	m.AddListener("any4", ap("0.0.0.0:5432"))
	m.AddListener("any6", ap("[::]:6432"))
	m.AddListener("lo", ap("127.0.0.1:7432"))
	m.AddListener("lo-again", ap("127.0.0.1:7432")) // the first route keeps the address
	m.AddListener("v6", ap("[2001:db8::1]:8432"))
	m.AddListener("mapped", ap("[::ffff:10.0.0.9]:9432"))
	m.AddListener("zoned", ap("[fe80::1%eth0]:10432"))
	m.AddListener("invalid", netip.AddrPort{})
	// Server conns as the conns report them; the kernel lists them the other way round
	// (IPv4 vs IPv4-mapped) where the socket is dual-stack.
	m.TrackServerConn(ap("10.0.0.1:50000"), ap("10.0.0.2:15432"), "any4", "pg", "a")
	m.TrackServerConn(ap("[::ffff:10.0.0.1]:50001"), ap("[::ffff:10.0.0.2]:15432"), "any4", "pg", "b")
	m.TrackServerConn(ap("[2001:db8::5]:50002"), ap("[2001:db8::6]:15432"), "v6", "pg6", "c")
	m.TrackServerConn(ap("10.0.0.1:50003"), ap("10.0.0.2:15432"), "any4", "pg", "old")
	m.TrackServerConn(ap("10.0.0.1:50003"), ap("10.0.0.2:15432"), "any4", "pg", "a") // relabelled
	m.TrackServerConn(netip.AddrPort{}, ap("10.0.0.2:15432"), "any4", "pg", "a")     // ignored
	if n := m.Tracked(); n != 4 {
		t.Fatalf("tracked %d, want 4", n)
	}

	tab.socks = []netx.Socket{
		// Client sides.
		sock("0.0.0.0:5432", "0.0.0.0:0", netx.TCPListen, 1),
		sock("10.0.0.1:5432", "10.9.9.9:40000", netx.TCPEstablished, 2),
		sock("[::ffff:10.0.0.3]:5432", "[::ffff:10.9.9.9]:40001", netx.TCPEstablished, 3),
		sock("[2001:db8::5]:5432", "[2001:db8::9]:40002", netx.TCPEstablished, 4), // v6 on a v4 wildcard port
		sock("[::]:6432", "[::]:0", netx.TCPListen, 5),
		sock("10.0.0.1:6432", "10.9.9.9:40003", netx.TCPTimeWait, 0),
		sock("[2001:db8::5]:6432", "[2001:db8::9]:40004", netx.TCPCloseWait, 6),
		sock("127.0.0.1:7432", "127.0.0.1:40005", netx.TCPFinWait2, 0),
		sock("[::ffff:127.0.0.1]:7432", "[::ffff:127.0.0.1]:40006", netx.TCPFinWait2, 7),
		sock("127.0.0.2:7432", "127.0.0.1:40007", netx.TCPEstablished, 8), // another address
		sock("127.0.0.1:40005", "127.0.0.1:7432", netx.TCPCloseWait, 9),   // the client's end
		sock("[2001:db8::1]:8432", "[2001:db8::9]:40008", netx.TCPLastAck, 0),
		sock("[2001:db8::2]:8432", "[2001:db8::9]:40009", netx.TCPEstablished, 10),
		sock("10.0.0.9:9432", "10.9.9.9:40010", netx.TCPSynRecv, 0),
		sock("[fe80::1]:10432", "[fe80::2]:40011", netx.TCPEstablished, 11),
		sock("10.0.0.1:11432", "10.9.9.9:40012", netx.TCPEstablished, 12), // no listener
		// Server sides.
		sock("[::ffff:10.0.0.1]:50000", "[::ffff:10.0.0.2]:15432", netx.TCPCloseWait, 20),
		sock("10.0.0.1:50001", "10.0.0.2:15432", netx.TCPEstablished, 21),
		sock("10.0.0.1:50001", "10.0.0.2:15432", netx.TCPEstablished, 21), // listed twice
		sock("[2001:db8::5]:50002", "[2001:db8::6]:15432", netx.TCPFinWait1, 0),
		sock("10.0.0.1:50003", "10.0.0.2:15432", netx.TCPTimeWait, 0),
		sock("10.0.0.2:15432", "10.0.0.1:50000", netx.TCPFinWait2, 30),  // the server's end
		sock("10.0.0.1:50004", "10.0.0.2:15432", netx.TCPCloseWait, 31), // not tracked
		sock("10.0.0.1:50000", "10.0.0.3:15432", netx.TCPCloseWait, 32), // another remote
	}
	s, err := m.Sample()
	if err != nil {
		t.Fatal(err)
	}
	want := map[Key]int{
		client("any4", netx.TCPEstablished):            2,
		client("any6", netx.TCPTimeWait):               1,
		client("any6", netx.TCPCloseWait):              1,
		client("lo", netx.TCPFinWait2):                 2,
		client("v6", netx.TCPLastAck):                  1,
		client("mapped", netx.TCPSynRecv):              1,
		client("zoned", netx.TCPEstablished):           1,
		server("any4", "pg", "a", netx.TCPCloseWait):   1,
		server("any4", "pg", "b", netx.TCPEstablished): 1,
		server("v6", "pg6", "c", netx.TCPFinWait1):     1,
		server("any4", "pg", "a", netx.TCPTimeWait):    1,
	}
	if !maps.Equal(s.Counts, want) {
		t.Errorf("counts\n got %v\nwant %v", s.Counts, want)
	}
	wantSample := Sample{At: t0.Add(5 * time.Millisecond), Took: 5 * time.Millisecond, Source: "test", Scanned: len(tab.socks)}
	if s.At != wantSample.At || s.Took != wantSample.Took || s.Source != wantSample.Source || s.Scanned != wantSample.Scanned {
		t.Errorf("sample %v %v %q %d, want %v %v %q %d", s.At, s.Took, s.Source, s.Scanned,
			wantSample.At, wantSample.Took, wantSample.Source, wantSample.Scanned)
	}
	if n := m.Tracked(); n != 4 {
		t.Errorf("tracked %d, want 4", n)
	}

	// A failed read forgets nothing.
	tab.err = errors.New("no table")
	if _, err := m.Sample(); !errors.Is(err, tab.err) {
		t.Errorf("sample error %v, want %v wrapped", err, tab.err)
	}
	if n := m.Tracked(); n != 4 {
		t.Errorf("tracked %d after a failed read, want 4", n)
	}

	// A table without the server conns forgets them; the client sides are counted still.
	tab.err = nil
	tab.socks = tab.socks[:16]
	s, err = m.Sample()
	if err != nil {
		t.Fatal(err)
	}
	for k := range want {
		if k.Side == SideServer {
			delete(want, k)
		}
	}
	if !maps.Equal(s.Counts, want) {
		t.Errorf("counts\n got %v\nwant %v", s.Counts, want)
	}
	if n := m.Tracked(); n != 0 {
		t.Errorf("tracked %d, want 0", n)
	}
}

func TestAttributionInode(t *testing.T) {
	tab := &table{source: "test"}
	m := New(Options{Read: tab.read})
	local, remote := "10.0.0.1:50000", "10.0.0.2:15432"
	m.TrackServerConn(ap(local), ap(remote), "r", "c", "s")
	key := func(st netx.TCPState) Key { return server("r", "c", "s", st) }
	for i, step := range []struct {
		sock    netx.Socket
		want    map[Key]int
		tracked int
	}{
		// Held by pgfront: the first inode seen is pgfront's socket's.
		{sock(local, remote, netx.TCPEstablished, 100), map[Key]int{key(netx.TCPEstablished): 1}, 1},
		{sock(local, remote, netx.TCPCloseWait, 100), map[Key]int{key(netx.TCPCloseWait): 1}, 1},
		// Closed by pgfront: an orphan, with no inode, is still pgfront's.
		{sock(local, remote, netx.TCPLastAck, 0), map[Key]int{key(netx.TCPLastAck): 1}, 1},
		// Another inode on the same 4-tuple: a new socket, not pgfront's.
		{sock(local, remote, netx.TCPEstablished, 200), map[Key]int{}, 0},
		{sock(local, remote, netx.TCPEstablished, 200), map[Key]int{}, 0},
	} {
		tab.socks = []netx.Socket{step.sock}
		s, err := m.Sample()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(s.Counts, step.want) || m.Tracked() != step.tracked {
			t.Errorf("step %d: counts %v tracked %d, want %v tracked %d", i, s.Counts, m.Tracked(), step.want, step.tracked)
		}
	}
}

func TestSideString(t *testing.T) {
	for s, want := range map[Side]string{SideClient: "client", SideServer: "server", 0: "Side(0)", 7: "Side(7)"} {
		if got := s.String(); got != want {
			t.Errorf("Side(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

// TestConcurrent runs samples while conns are tracked (for the race detector).
func TestConcurrent(t *testing.T) {
	tab := &table{source: "test"}
	for i := range 1000 {
		tab.socks = append(tab.socks, sock(fmt.Sprintf("10.0.0.1:%d", 20000+i), "10.0.0.2:15432", netx.TCPEstablished, uint64(i+1)))
	}
	m := New(Options{Read: tab.read})
	m.AddListener("r", ap("10.0.0.1:6432"))
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range 1000 {
				m.TrackServerConn(ap(fmt.Sprintf("10.0.0.1:%d", 20000+i)), ap("10.0.0.2:15432"), "r", "c", fmt.Sprint("s", g))
			}
		})
	}
	for range 20 {
		if _, err := m.Sample(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	s, err := m.Sample()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range s.Counts {
		total += n
	}
	if total != 1000 || m.Tracked() != 1000 {
		t.Errorf("counted %d, tracked %d; want 1000 and 1000", total, m.Tracked())
	}
}

// TestTrackedMemory checks the memory a tracked conn costs.
func TestTrackedMemory(t *testing.T) {
	const n = 100_000
	m := New(Options{})
	m.TrackServerConn(ap("10.0.0.1:1"), ap("10.0.0.2:15432"), "r", "c", "s") // the label
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(i))
		m.TrackServerConn(local, ap("10.0.0.2:15432"), "r", "c", "s")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perConn := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per tracked conn", perConn)
	if perConn > 200 {
		t.Errorf("%.0f bytes per tracked conn, want at most 200", perConn)
	}
	runtime.KeepAlive(m)
}

// TestRemoveListener: a removed listening address no longer attributes sockets to its route.
func TestRemoveListener(t *testing.T) {
	m := New(Options{})
	a := netip.MustParseAddrPort("127.0.0.1:5000")
	b := netip.MustParseAddrPort("127.0.0.1:5001")
	m.AddListener("rw", a)
	m.AddListener("ro", b)
	m.RemoveListener(a)
	m.mu.Lock()
	_, okA := m.listenerLocked(a)
	_, okB := m.listenerLocked(b)
	m.mu.Unlock()
	if okA || !okB {
		t.Fatalf("after RemoveListener(rw): rw listed %v, ro listed %v; want false, true", okA, okB)
	}
}
