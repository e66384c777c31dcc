package netx

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialAccept dials ln and accepts the connection; both ends are closed at the end of the test.
func dialAccept(tb testing.TB, ln net.Listener, network, addr string) (client, server *net.TCPConn) {
	tb.Helper()
	c, err := net.Dial(network, addr)
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

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// sockKey is a socket's identity in the kernel's table.
type sockKey struct{ local, remote netip.AddrPort }

func key(c *net.TCPConn) sockKey {
	return sockKey{addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())}
}

// mapped is k as a dual-stack socket lists it: both addresses IPv4-mapped.
func (k sockKey) mapped() sockKey {
	m := func(ap netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	}
	return sockKey{m(k.local), m(k.remote)}
}

// readDiagOrSkip reads the table through sock_diag, skipping the test if netlink is denied.
func readDiagOrSkip(t *testing.T) []Socket {
	t.Helper()
	socks, err := readTCPSocketsDiag(nil)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPROTONOSUPPORT) {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

// pick returns the sockets of socks whose identity is in want, keyed by it.
func pick(socks []Socket, want map[sockKey]TCPState) map[sockKey]Socket {
	got := make(map[sockKey]Socket)
	for _, s := range socks {
		k := sockKey{s.Local, s.Remote}
		if _, ok := want[k]; ok {
			got[k] = s
		}
	}
	return got
}

// statesMatch reports whether every wanted socket is in socks in its wanted state.
func statesMatch(got map[sockKey]Socket, want map[sockKey]TCPState) bool {
	if len(got) != len(want) {
		return false
	}
	for k, st := range want {
		if got[k].State != st {
			return false
		}
	}
	return true
}

func TestReadTCPSockets(t *testing.T) {
	for _, tc := range []struct {
		name, network, listenAddr string
		dialNetwork, dialHost     string
		mapped                    bool // the listener is dual-stack and the client IPv4
	}{
		{"ipv4", "tcp4", "127.0.0.1:0", "tcp4", "127.0.0.1", false},
		{"ipv6", "tcp6", "[::1]:0", "tcp6", "::1", false},
		{"dual-stack", "tcp", "[::]:0", "tcp4", "127.0.0.1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.listenAddr)
			if err != nil {
				if tc.network != "tcp4" {
					t.Skipf("cannot listen on %s: %v", tc.listenAddr, err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			dialAddr := net.JoinHostPort(tc.dialHost, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			want := map[sockKey]TCPState{}
			// The accepted ends of a dual-stack listener are IPv6 sockets: the kernel
			// lists them with IPv4-mapped addresses.
			server := func(c *net.TCPConn, st TCPState) {
				k := key(c)
				if tc.mapped {
					k = k.mapped()
				}
				want[k] = st
			}

			lnKey := sockKey{local: addrPort(ln.Addr())}
			if lnKey.local.Addr().Is4() {
				lnKey.remote = netip.MustParseAddrPort("0.0.0.0:0")
			} else {
				lnKey.remote = netip.MustParseAddrPort("[::]:0")
			}
			want[lnKey] = TCPListen

			c1, s1 := dialAccept(t, ln, tc.dialNetwork, dialAddr)
			want[key(c1)] = TCPEstablished
			server(s1, TCPEstablished)

			// The server half-closes; the client reads the FIN and keeps silent.
			c2, s2 := dialAccept(t, ln, tc.dialNetwork, dialAddr)
			if err := s2.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n, err := c2.Read(make([]byte, 1)); n != 0 || !IsEOF(err) {
				t.Fatalf("client read = %d, %v; want EOF", n, err)
			}
			want[key(c2)] = TCPCloseWait
			server(s2, TCPFinWait2)

			// The server closes first, the client after it: the server's end lingers in
			// TIME_WAIT, held by no process.
			c3, s3 := dialAccept(t, ln, tc.dialNetwork, dialAddr)
			s3.Close()
			if n, err := c3.Read(make([]byte, 1)); n != 0 || !IsEOF(err) {
				t.Fatalf("client read = %d, %v; want EOF", n, err)
			}
			c3.Close()
			server(s3, TCPTimeWait)

			var diag map[sockKey]Socket
			deadline := time.Now().Add(20 * time.Second)
			for {
				socks, source, err := ReadTCPSockets(nil)
				if err != nil {
					t.Fatal(err)
				}
				if source != SourceSockDiag && source != SourceProc {
					t.Fatalf("source %q", source)
				}
				diag = pick(readDiagOrSkip(t), want)
				if statesMatch(diag, want) && statesMatch(pick(socks, want), want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("timed out: want %v\ngot %v", want, diag)
				}
				time.Sleep(time.Millisecond)
			}
			for k, s := range diag {
				if (s.Inode == 0) != (want[k] == TCPTimeWait) {
					t.Errorf("%v: inode %d in state %v", k, s.Inode, s.State)
				}
			}
			// The states are stable now: /proc must list the same sockets, inodes
			// included.
			procSocks, err := readTCPSocketsProc(nil)
			if err != nil {
				t.Fatal(err)
			}
			if proc := pick(procSocks, want); !maps2Equal(proc, diag) {
				t.Errorf("sources disagree:\nsock_diag %v\nproc      %v", diag, proc)
			}
		})
	}
}

func maps2Equal(a, b map[sockKey]Socket) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestReadTCPSocketsAppends(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sentinel := Socket{State: TCPClosing, Inode: 42}
	socks, source, err := ReadTCPSockets([]Socket{sentinel})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("source %s, %d sockets", source, len(socks)-1)
	if len(socks) < 2 || socks[0] != sentinel {
		t.Fatalf("got %v, want the sentinel followed by the table", socks[:min(len(socks), 3)])
	}
	lnAddr := addrPort(ln.Addr())
	if !slices.ContainsFunc(socks[1:], func(s Socket) bool { return s.Local == lnAddr && s.State == TCPListen }) {
		t.Errorf("listener %v not in the table", lnAddr)
	}
	// The proc path appends as well.
	procSocks, err := readTCPSocketsProc([]Socket{sentinel})
	if err != nil {
		t.Fatal(err)
	}
	if procSocks[0] != sentinel || !slices.ContainsFunc(procSocks[1:], func(s Socket) bool { return s.Local == lnAddr && s.State == TCPListen }) {
		t.Errorf("proc: sentinel or listener missing: %v", procSocks[:min(len(procSocks), 3)])
	}
}

// nlMsg builds one netlink message; the length is computed, the payload padded to 4 bytes.
func nlMsg(typ, flags uint16, seq uint32, payload []byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(payload)+3)
	ne.PutUint32(b[0:], uint32(unix.SizeofNlMsghdr+len(payload)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// diagMsg builds a struct inet_diag_msg.
func diagMsg(local, remote netip.AddrPort, st TCPState, inode uint32) []byte {
	m := make([]byte, sizeofInetDiagMsg)
	m[0] = unix.AF_INET6
	if local.Addr().Is4() {
		m[0] = unix.AF_INET
	}
	m[1] = byte(st)
	binary.BigEndian.PutUint16(m[4:], local.Port())
	binary.BigEndian.PutUint16(m[6:], remote.Port())
	copy(m[8:24], local.Addr().AsSlice())
	copy(m[24:40], remote.Addr().AsSlice())
	binary.NativeEndian.PutUint32(m[68:], inode)
	return m
}

func errnoPayload(errno int32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(errno))
	return b
}

func TestParseDiagMessages(t *testing.T) {
	const seq = 7
	v4 := Socket{ap("127.0.0.1:5432"), ap("127.0.0.2:40000"), TCPCloseWait, 1234}
	v6 := Socket{ap("[2001:db8::1:2]:6432"), ap("[::ffff:10.1.2.3]:50000"), TCPFinWait2, 0}
	m4 := nlMsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, seq, diagMsg(v4.Local, v4.Remote, v4.State, uint32(v4.Inode)))
	// The answer to a TCPDIAG_GETSOCK request has its type.
	m6 := nlMsg(tcpDiagGetSock, unix.NLM_F_MULTI, seq, diagMsg(v6.Local, v6.Remote, v6.State, uint32(v6.Inode)))
	other := nlMsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, seq+1, diagMsg(v4.Local, v4.Remote, TCPListen, 1))
	done := nlMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, errnoPayload(0))
	cat := func(ms ...[]byte) []byte { return slices.Concat(ms...) }

	got, isDone, intr, err := parseDiagMessages(cat(m4, other, m6), seq, nil)
	if err != nil || isDone || intr || !slices.Equal(got, []Socket{v4, v6}) {
		t.Errorf("one read: %v done=%v intr=%v err=%v", got, isDone, intr, err)
	}
	got, isDone, intr, err = parseDiagMessages(cat(m6, done), seq, []Socket{v4})
	if err != nil || !isDone || intr || !slices.Equal(got, []Socket{v4, v6}) {
		t.Errorf("last read: %v done=%v intr=%v err=%v", got, isDone, intr, err)
	}
	// NLMSG_DONE without its status word, as some kernels send it.
	if _, isDone, _, err = parseDiagMessages(nlMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, nil), seq, nil); !isDone || err != nil {
		t.Errorf("bare done: done=%v err=%v", isDone, err)
	}
	intrMsg := nlMsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, seq, diagMsg(v4.Local, v4.Remote, v4.State, 1))
	if got, _, intr, err = parseDiagMessages(intrMsg, seq, nil); !intr || err != nil || len(got) != 1 {
		t.Errorf("interrupted dump: %v intr=%v err=%v", got, intr, err)
	}

	for _, tc := range []struct {
		name string
		b    []byte
		want error // nil: any error
	}{
		{"netlink error", nlMsg(unix.NLMSG_ERROR, 0, seq, errnoPayload(-int32(unix.EPERM))), unix.EPERM},
		{"dump failed", nlMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, errnoPayload(-int32(unix.ENOBUFS))), unix.ENOBUFS},
		{"length past the read", m4[:len(m4)-8], nil},
		{"length below the header", func() []byte { b := slices.Clone(m4); binary.NativeEndian.PutUint32(b, 8); return b }(), nil},
		{"short inet_diag_msg", nlMsg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, make([]byte, 40)), nil},
		{"unknown family", nlMsg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, make([]byte, sizeofInetDiagMsg)), nil},
		{"short error", nlMsg(unix.NLMSG_ERROR, 0, seq, nil), nil},
	} {
		_, _, _, err := parseDiagMessages(tc.b, seq, nil)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

func FuzzParseDiagMessages(f *testing.F) {
	m := diagMsg(ap("127.0.0.1:5432"), ap("127.0.0.2:40000"), TCPEstablished, 9)
	f.Add(nlMsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 1, m))
	f.Add(slices.Concat(nlMsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 1, m), nlMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, 1, errnoPayload(0))))
	f.Add(nlMsg(unix.NLMSG_ERROR, 0, 1, errnoPayload(-1)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		socks, _, _, err := parseDiagMessages(b, 1, nil)
		if err != nil {
			return
		}
		if len(socks)*(unix.SizeofNlMsghdr+sizeofInetDiagMsg) > len(b) {
			t.Fatalf("%d sockets from %d bytes", len(socks), len(b))
		}
		for _, s := range socks {
			if !s.Local.IsValid() || !s.Remote.IsValid() || s.Local.Addr().Is4() != s.Remote.Addr().Is4() {
				t.Fatalf("bad socket %v", s)
			}
		}
	})
}

func BenchmarkReadTCPSockets(b *testing.B) {
	benchmarkSources(b)
}

// BenchmarkReadTCPSockets40k measures both sources with at least 40,000 TCP sockets in the
// namespace: 4,000 established loopback pairs held open and the rest in TIME_WAIT, which
// holds no descriptor (and lingers 60s after the benchmark).
func BenchmarkReadTCPSockets40k(b *testing.B) {
	const total, pairs, listeners = 40000, 4000, 8
	var lns []net.Listener
	for range listeners {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		lns = append(lns, ln)
	}
	for i := range pairs {
		ln := lns[i%listeners]
		dialAccept(b, ln, "tcp4", ln.Addr().String())
	}
	for i := 0; ; i++ {
		if i%1000 == 0 {
			socks, err := readTCPSocketsDiag(nil)
			if err != nil {
				b.Fatal(err)
			}
			if len(socks) >= total {
				break
			}
		}
		// The accepted end closes first and goes to TIME_WAIT; the dialled end's port is
		// free again once it has closed too.
		ln := lns[i%listeners]
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		c.Read(make([]byte, 1))
		c.Close()
	}
	benchmarkSources(b)
}

func benchmarkSources(b *testing.B) {
	b.Run("sock_diag", func(b *testing.B) { benchmarkRead(b, readTCPSocketsDiag) })
	// What a kernel that refuses the one-walk request costs: a dump per family.
	b.Run("sock_diag_per_family", func(b *testing.B) {
		legacyRefused.Store(true)
		defer legacyRefused.Store(false)
		benchmarkRead(b, readTCPSocketsDiag)
	})
	b.Run("proc", func(b *testing.B) { benchmarkRead(b, readTCPSocketsProc) })
}

// benchmarkRead measures one way of reading the table, reusing its result's memory.
func benchmarkRead(b *testing.B, read func([]Socket) ([]Socket, error)) {
	b.ReportAllocs()
	var socks []Socket
	var err error
	for b.Loop() {
		if socks, err = read(socks[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(socks)), "sockets")
}

// TestReadTCPSocketsOneWalk: the kernel answers the old TCPDIAG_GETSOCK request with both
// families in one dump (one walk of its tables instead of one per family), and the dump per
// family, kept for kernels that refuse it, lists the same sockets.
func TestReadTCPSocketsOneWalk(t *testing.T) {
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln6.Close()
	want := []netip.AddrPort{addrPort(ln4.Addr()), addrPort(ln6.Addr())}
	listed := func(socks []Socket) []netip.AddrPort {
		var got []netip.AddrPort
		for _, s := range socks {
			if s.State == TCPListen && slices.Contains(want, s.Local) {
				got = append(got, s.Local)
			}
		}
		return got
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Skipf("no sock_diag: %v", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, diagBufSize)
	req := legacyRequest()
	one, err := dumpTwice(fd, req[:], buf, nil)
	if err != nil {
		// ReadTCPSockets falls back to a dump per family then (checked below).
		t.Skipf("this kernel refuses TCPDIAG_GETSOCK: %v", err)
	}
	if got := listed(one); len(got) != 2 {
		t.Errorf("one dump listed %v of %v", got, want)
	}
	var perFamily []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := familyRequest(family)
		if perFamily, err = dumpTwice(fd, req[:], buf, perFamily); err != nil {
			t.Fatal(err)
		}
	}
	if got := listed(perFamily); len(got) != 2 {
		t.Errorf("dumps per family listed %v of %v", got, want)
	}

	// ReadTCPSockets uses the one dump here, and falls back to one per family.
	socks, _, err := ReadTCPSockets(nil)
	if err != nil || legacyRefused.Load() || len(listed(socks)) != 2 {
		t.Errorf("ReadTCPSockets: %d of the listeners, err %v, old request refused %v", len(listed(socks)), err, legacyRefused.Load())
	}
	legacyRefused.Store(true)
	defer legacyRefused.Store(false)
	if socks, _, err = ReadTCPSockets(socks[:0]); err != nil || len(listed(socks)) != 2 {
		t.Errorf("ReadTCPSockets per family: %d of the listeners, err %v", len(listed(socks)), err)
	}
}
