package netx

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// Captured from /proc/net/tcp on an x86-64 Linux host with a listener on 127.1.2.3 and a
// connection to it from 127.4.5.6, plus a TIME_WAIT line.
const sampleTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0302017F:CB37 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19067 1 0000000063599f3e 100 0 0 10 0                     
   2: 0100007F:A6E0 0100007F:A6BB 06 00000000:00000000 03:00001547 00000000     0        0 0 3 00000000db2092e6                                      
   3: 0302017F:CB37 0605047F:D4D9 01 00000000:00000000 00:00000000 00000000     0        0 19069 1 00000000264cf244 20 0 0 10 -1                     
   4: 0100007F:BE79 0100007F:A6A6 08 00000000:00000001 00:00000000 00000000     0        0 18163 1 000000004cdbaabe 20 4 0 10 -1                     
   5: 0100007F:A6A6 0100007F:BE79 05 00000000:00000000 00:00000000 00000000     0        0 18162 2 0000000010681595 20 0 0 11 -1                     
`

// Captured from /proc/net/tcp6 (a dual-stack listener on [::] with an IPv4 client, and ::1
// pairs); the last line is written by hand for 2001:db8::1:2 port 5432, to have a v6
// address whose words are not symmetric.
const sampleTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:A6BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 18167 1 0000000095ff9257 100 0 0 10 0
   2: 00000000000000000000000001000000:CB07 00000000000000000000000001000000:E532 01 00000000:00000000 00:00000000 00000000     0        0 18166 1 0000000067624486 20 0 0 10 -1
   3: 0000000000000000FFFF00000100007F:A6BB 0000000000000000FFFF00000100007F:A6E0 01 00000000:00000000 00:00000000 00000000     0        0 18169 1 0000000042b66ca2 20 0 0 10 -1
   4: B80D0120000000000000000002000100:1538 00000000000000000000000001000000:E532 0B 00000000:00000000 00:00000000 00000000     0        0 42 1 0000000006b6c835 20 0 0 10 -1
`

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func skipUnlessLittleEndian(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("samples were captured on a little-endian machine")
	}
}

func TestParseProcNetTCP(t *testing.T) {
	skipUnlessLittleEndian(t)
	got, err := ParseProcNetTCP(strings.NewReader(sampleTCP), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{ap("127.1.2.3:52023"), ap("0.0.0.0:0"), TCPListen, 19067},
		{ap("127.0.0.1:42720"), ap("127.0.0.1:42683"), TCPTimeWait, 0},
		{ap("127.1.2.3:52023"), ap("127.4.5.6:54489"), TCPEstablished, 19069},
		{ap("127.0.0.1:48761"), ap("127.0.0.1:42662"), TCPCloseWait, 18163},
		{ap("127.0.0.1:42662"), ap("127.0.0.1:48761"), TCPFinWait2, 18162},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}

	got, err = ParseProcNetTCP(strings.NewReader(sampleTCP6), true)
	if err != nil {
		t.Fatal(err)
	}
	want = []Socket{
		{ap("[::]:42683"), ap("[::]:0"), TCPListen, 18167},
		{ap("[::1]:51975"), ap("[::1]:58674"), TCPEstablished, 18166},
		{ap("[::ffff:127.0.0.1]:42683"), ap("[::ffff:127.0.0.1]:42720"), TCPEstablished, 18169},
		{ap("[2001:db8::1:2]:5432"), ap("[::1]:58674"), TCPClosing, 42},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
}

func TestParseProcNetTCPErrors(t *testing.T) {
	line := func(local string) string {
		return "0: " + local + " 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7 1\n"
	}
	for _, tc := range []struct {
		name, text string
		v6         bool
	}{
		{"v6 address in tcp", line("00000000000000000000000001000000:CB07"), false},
		{"v4 address in tcp6", line("0100007F:CB07"), true},
		{"bad hex", line("0100007G:CB07"), false},
		{"no port", line("0100007F"), false},
		{"short port", line("0100007F:CB0"), false},
		{"short line", "0: 0100007F:CB07 00000000:0000 0A\n", false},
		{"bad state", strings.Replace(line("0100007F:CB07"), " 0A ", " 1FF ", 1), false},
		{"bad inode", strings.Replace(line("0100007F:CB07"), " 7 1", " x 1", 1), false},
	} {
		if _, err := ParseProcNetTCP(strings.NewReader(tc.text), tc.v6); err == nil {
			t.Errorf("%s: no error", tc.name)
		} else if !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%s: error %q does not name line 1", tc.name, err)
		}
	}
	if got, err := ParseProcNetTCP(strings.NewReader(line("0100007F:CB07")), false); err != nil || len(got) != 1 {
		t.Errorf("headerless line: %v, %v", got, err)
	}
	// Only the first line may be the header.
	if _, err := ParseProcNetTCP(strings.NewReader(line("0100007F:CB07")+"  sl  local_address\n"), false); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("header on line 2: %v, want an error naming line 2", err)
	}
}

func FuzzParseProcNetTCP(f *testing.F) {
	f.Add([]byte(sampleTCP), false)
	f.Add([]byte(sampleTCP6), true)
	f.Add([]byte(sampleTCP6), false)
	f.Add([]byte("0: 0100007F:CB07 00000000:0000 0A 0 0 0 0 0 7\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, v6 bool) {
		socks, err := ParseProcNetTCP(strings.NewReader(string(data)), v6)
		if err != nil {
			return
		}
		for _, s := range socks {
			if s.Local.Addr().Is6() != v6 || s.Remote.Addr().Is6() != v6 {
				t.Fatalf("v6=%v table gave %v", v6, s)
			}
		}
	})
}

func TestTCPStateString(t *testing.T) {
	for s, want := range map[TCPState]string{
		TCPEstablished: "ESTABLISHED", TCPFinWait2: "FIN_WAIT2", TCPCloseWait: "CLOSE_WAIT",
		TCPLastAck: "LAST_ACK", TCPListen: "LISTEN", TCPNewSynRecv: "NEW_SYN_RECV",
		0: "TCPState(0)", 13: "TCPState(13)",
	} {
		if got := s.String(); got != want {
			t.Errorf("TCPState(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
	if TCPEstablished != 1 || TCPCloseWait != 8 || TCPNewSynRecv != 12 {
		t.Error("states are not numbered as the kernel's")
	}
}

// find returns the own socket with the given local and remote addresses.
func find(socks []Socket, local, remote net.Addr) (Socket, bool) {
	l, r := local.(*net.TCPAddr).AddrPort(), remote.(*net.TCPAddr).AddrPort()
	for _, s := range socks {
		if s.Local == l && s.Remote == r {
			return s, true
		}
	}
	return Socket{}, false
}

// waitStates polls OwnSockets until want(socks) holds.
func waitStates(t *testing.T, what string, want func([]Socket) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		socks, err := OwnSockets()
		if err != nil {
			t.Fatal(err)
		}
		if want(socks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; own sockets: %v", what, socks)
		}
		time.Sleep(time.Millisecond)
	}
}

func hasState(socks []Socket, local, remote net.Addr, st TCPState) bool {
	s, ok := find(socks, local, remote)
	return ok && s.State == st
}

func TestOwnSockets(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "tcp6" {
				host = "[::1]"
			}
			ln, err := net.Listen(network, host+":0")
			if err != nil {
				if network == "tcp6" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			client, server := pair(t, ln)

			socks, err := OwnSockets()
			if err != nil {
				t.Fatal(err)
			}
			lnAddr := ln.Addr().(*net.TCPAddr).AddrPort()
			if !slices.ContainsFunc(socks, func(s Socket) bool { return s.Local == lnAddr && s.State == TCPListen }) {
				t.Errorf("listener %v not found in LISTEN: %v", lnAddr, socks)
			}
			for _, c := range []*net.TCPConn{client, server} {
				s, ok := find(socks, c.LocalAddr(), c.RemoteAddr())
				if !ok || s.State != TCPEstablished || s.Inode == 0 {
					t.Errorf("%v -> %v: got %v (found %v), want ESTABLISHED with an inode", c.LocalAddr(), c.RemoteAddr(), s, ok)
				}
			}

			// The client half-closes; the server reads the FIN but does not close.
			if err := client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n, err := server.Read(make([]byte, 1)); n != 0 || !IsEOF(err) {
				t.Fatalf("server read = %d, %v; want EOF", n, err)
			}
			waitStates(t, "FIN_WAIT2 / CLOSE_WAIT", func(socks []Socket) bool {
				return hasState(socks, client.LocalAddr(), client.RemoteAddr(), TCPFinWait2) &&
					hasState(socks, server.LocalAddr(), server.RemoteAddr(), TCPCloseWait)
			})

			// The server closes too: the client goes to TIME_WAIT, which no process owns.
			cl, cr := client.LocalAddr(), client.RemoteAddr()
			server.Close()
			if n, err := client.Read(make([]byte, 1)); n != 0 || !IsEOF(err) {
				t.Fatalf("client read = %d, %v; want EOF", n, err)
			}
			client.Close()
			path := "/proc/self/net/tcp"
			if network == "tcp6" {
				path += "6"
			}
			deadline := time.Now().Add(10 * time.Second)
			for !inTable(t, path, network == "tcp6", cl, cr, TCPTimeWait) {
				if time.Now().After(deadline) {
					t.Fatal("client socket never reached TIME_WAIT")
				}
				time.Sleep(time.Millisecond)
			}
			socks, err = OwnSockets()
			if err != nil {
				t.Fatal(err)
			}
			if s, ok := find(socks, cl, cr); ok {
				t.Errorf("TIME_WAIT socket listed as own: %v", s)
			}
		})
	}
}

// inTable reports whether the kernel's table lists the socket in state st.
func inTable(t *testing.T, path string, v6 bool, local, remote net.Addr, st TCPState) bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all, err := ParseProcNetTCP(f, v6)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := find(all, local, remote)
	return ok && s.State == st && s.Inode == 0
}
