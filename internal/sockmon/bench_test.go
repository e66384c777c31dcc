package sockmon

import (
	"net/netip"
	"syscall"
	"testing"

	"github.com/pgfront/pgfront/internal/netx"
)

// raiseFileLimit lifts the soft limit on open files to the hard one if it is below need.
func raiseFileLimit(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		b.Skipf("open files hard limit %d, need %d", lim.Max, need)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSample samples a monitor with 1,000 sessions: 1,000 client conns accepted on a
// route listener and 1,000 tracked server conns, all held open with their peers (4,000
// sockets in this process) besides whatever else the namespace holds. "kernel" reads the
// table through netx.ReadTCPSockets; "attribution" replays the table read once, to show
// the cost of attributing alone.
func BenchmarkSample(b *testing.B) {
	const sessions = 1000
	raiseFileLimit(b, 4*sessions+100)
	m := New(Options{})
	routeLn := listen(b, "tcp", "127.0.0.1:0")
	pgLn := listen(b, "tcp", "127.0.0.1:0")
	m.AddListener("main", addrPort(routeLn.Addr()))
	for range sessions {
		dialAccept(b, routeLn, "")
		c, _ := dialAccept(b, pgLn, "")
		track(m, c, "main", "pg", "pg-1")
	}
	s, err := m.Sample()
	if err != nil {
		b.Fatal(err)
	}
	if c, sv := s.Counts[client("main", netx.TCPEstablished)], s.Counts[server("main", "pg", "pg-1", netx.TCPEstablished)]; c != sessions || sv != sessions {
		b.Fatalf("counted %d client and %d server sockets, want %d each", c, sv, sessions)
	}

	b.Run("kernel", func(b *testing.B) {
		b.ReportAllocs()
		var s Sample
		for b.Loop() {
			if s, err = m.Sample(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(s.Scanned), "sockets")
		b.Logf("source %s", s.Source)
	})

	b.Run("attribution", func(b *testing.B) {
		socks, source, err := netx.ReadTCPSockets(nil)
		if err != nil {
			b.Fatal(err)
		}
		tab := &table{socks: socks, source: source}
		replay := New(Options{Read: tab.read})
		replay.AddListener("main", addrPort(routeLn.Addr()))
		m.mu.Lock()
		for k, c := range m.mu.conns {
			l := m.mu.labels[c.label]
			replay.TrackServerConn(netip.AddrPortFrom(netip.AddrFrom16(k.local).Unmap(), k.lport),
				netip.AddrPortFrom(netip.AddrFrom16(k.remote).Unmap(), k.rport), l.route, l.cluster, l.server)
		}
		m.mu.Unlock()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := replay.Sample(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(socks)), "sockets")
	})
}

// BenchmarkTrackServerConn tracks new conns: "growing" into an ever larger map (the cost
// includes the map's growth), "steady" with as many conns forgotten as tracked, cycling
// through 10,000 4-tuples.
func BenchmarkTrackServerConn(b *testing.B) {
	remote := netip.MustParseAddrPort("10.0.0.2:5432")
	local := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 24), byte(i >> 16)}), uint16(i))
	}
	b.Run("growing", func(b *testing.B) {
		m := New(Options{})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			m.TrackServerConn(local(i), remote, "main", "pg", "pg-1")
			i++
		}
	})
	b.Run("steady", func(b *testing.B) {
		const live = 10000
		m := New(Options{})
		for i := range live {
			m.TrackServerConn(local(i), remote, "main", "pg", "pg-1")
		}
		b.ReportAllocs()
		i := live
		for b.Loop() {
			m.TrackServerConn(local(i), remote, "main", "pg", "pg-1")
			m.mu.Lock() // as a Sample would forget a gone conn
			delete(m.mu.conns, makeConnKey(local(i-live), remote))
			m.mu.Unlock()
			i++
		}
	})
}
