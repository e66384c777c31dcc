package proxyhdr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// v2 is a PROXY v2 header for src -> dst built by the library's writer.
func v2(t testing.TB, src, dst string) []byte {
	t.Helper()
	s, d := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))
	b, err := proxyproto.HeaderProxyFromAddrs(2, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v2Local is a v2 LOCAL header (a balancer's own health check).
func v2Local() []byte {
	return append(append([]byte(nil), sigV2...), 0x20, 0x00, 0x00, 0x00)
}

func TestRead(t *testing.T) {
	v2tcp4 := v2(t, "203.0.113.7:4242", "10.0.0.1:6432")
	long := append(append([]byte(nil), sigV2...), 0x21, 0x11)
	long = binary.BigEndian.AppendUint16(long, MaxV2Payload+1)
	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantErr string // "" = success; "nohdr" = ErrNoHeader; "eof" = io.ErrUnexpectedEOF; else *Error containing it
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 4242 6432\r\n"),
			Header{Version: 1, Source: netip.MustParseAddrPort("203.0.113.7:4242"), Len: 43}, ""},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 4242 6432\r\n"),
			Header{Version: 1, Source: netip.MustParseAddrPort("[2001:db8::7]:4242"), Len: 46}, ""},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Len: 15}, ""},
		{"v2 tcp4", v2tcp4, Header{Version: 2, Source: netip.MustParseAddrPort("203.0.113.7:4242"), Len: len(v2tcp4)}, ""},
		{"v2 tcp6", v2(t, "[2001:db8::7]:4242", "[2001:db8::1]:6432"),
			Header{Version: 2, Source: netip.MustParseAddrPort("[2001:db8::7]:4242"), Len: 16 + 36}, ""},
		{"v2 local", v2Local(), Header{Version: 2, Len: 16}, ""},
		{"postgres startup", []byte{0, 0, 0, 8, 4, 210, 22, 47}, Header{}, "nohdr"},
		{"tls clienthello", []byte{0x16, 3, 1, 0, 5}, Header{}, "nohdr"},
		{"v1 bad signature", []byte("PROXX TCP4 1.2.3.4 1.2.3.4 1 1\r\n"), Header{}, "bad v1 signature"},
		{"v1 garbage", []byte("PROXY garbage garbage\r\n"), Header{}, "rejected by the parser"},
		{"v1 no CR", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 4242 6432\n"), Header{}, "rejected by the parser"},
		{"v1 too long", append([]byte("PROXY "), bytes.Repeat([]byte("x"), 200)...), Header{}, "longer than 107"},
		{"v2 bad signature", []byte("\r\n\r\n\x00\r\nQUIT!\x21\x11\x00\x0c"), Header{}, "bad v2 signature"},
		{"v2 bad command", append(append([]byte(nil), sigV2...), 0x2f, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
			Header{}, "rejected by the parser"},
		{"v2 short address block", append(append([]byte(nil), sigV2...), 0x21, 0x11, 0, 4, 1, 2, 3, 4), Header{}, "rejected by the parser"},
		{"v2 over the bound", long, Header{}, "4097 bytes"},
		{"v1 cut short", []byte("PROXY TCP4 203.0.113.7 10.0.0.1"), Header{}, "eof"},
		{"v2 cut short", v2tcp4[:20], Header{}, "eof"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tail := []byte("\x00\x00\x00\x08rest")
			r := bytes.NewReader(append(append([]byte(nil), tc.in...), tail...))
			if tc.wantErr == "eof" {
				r = bytes.NewReader(tc.in)
			}
			h, err := Read(r)
			switch tc.wantErr {
			case "":
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if h != tc.want {
					t.Errorf("header = %+v, want %+v", h, tc.want)
				}
				rest, _ := io.ReadAll(r)
				if !bytes.Equal(rest, tail) {
					t.Errorf("left %q after the header, want %q", rest, tail)
				}
			case "nohdr":
				if !errors.Is(err, ErrNoHeader) {
					t.Fatalf("err = %v, want ErrNoHeader", err)
				}
			case "eof":
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
				}
			default:
				var he *Error
				if !errors.As(err, &he) || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
					t.Fatalf("err = %v (%T), want *Error containing %q", err, err, tc.wantErr)
				}
			}
		})
	}
}

// TestReadLeavesStartupOnSocket: over real TCP, a header and the startup packet that follows
// it in the same segment: Read takes the header, the next read of the conn gets the rest.
func TestReadLeavesStartupOnSocket(t *testing.T) {
	for _, hdr := range [][]byte{v2(t, "203.0.113.7:4242", "127.0.0.1:6432"), []byte("PROXY TCP4 203.0.113.7 127.0.0.1 4242 6432\r\n")} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		startup := []byte{0, 0, 0, 8, 4, 210, 22, 47}
		if _, err := c.Write(append(append([]byte(nil), hdr...), startup...)); err != nil {
			t.Fatal(err)
		}
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		h, err := Read(s)
		if err != nil {
			t.Fatal(err)
		}
		if h.Source.String() != "203.0.113.7:4242" {
			t.Errorf("source = %s", h.Source)
		}
		got := make([]byte, len(startup))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, startup) {
			t.Errorf("after the header read %q, %v; want %q", got, err, startup)
		}
		_ = c.Close()
		_ = s.Close()
		_ = ln.Close()
	}
}

// TestReadTimeout: a header that never completes ends at the conn's deadline, as a timeout.
func TestReadTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write(v2(t, "203.0.113.7:4242", "127.0.0.1:6432")[:10]); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := Read(s); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}

// FuzzRead checks that no input panics, that Read never consumes a byte past what it says the
// header's length is, and that an accepted header is well formed.
func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 4242 6432\r\n\x00\x00\x00\x08"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 4242 6432\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 1.2.3.4\r\n"))
	f.Add(v2(f, "203.0.113.7:4242", "10.0.0.1:6432"))
	f.Add(v2(f, "[2001:db8::7]:4242", "[2001:db8::1]:6432"))
	f.Add(v2Local())
	f.Add(append(v2(f, "203.0.113.7:4242", "10.0.0.1:6432"), 0x16, 3, 1))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := Read(r)
		consumed := len(data) - r.Len()
		if err != nil {
			var he *Error
			if !errors.Is(err, ErrNoHeader) && !errors.As(err, &he) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("unexpected error %v (%T)", err, err)
			}
			return
		}
		if consumed != h.Len {
			t.Fatalf("consumed %d bytes, header is %d", consumed, h.Len)
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
		if h.Version == 1 && (h.Len > v1Max || !bytes.HasPrefix(data, sigV1) || data[h.Len-1] != '\n') {
			t.Fatalf("accepted v1 %q", data[:h.Len])
		}
		if h.Version == 2 && (h.Len > v2Fixed+MaxV2Payload || !bytes.HasPrefix(data, sigV2)) {
			t.Fatalf("accepted v2 %q", data[:h.Len])
		}
		if h.Source.IsValid() && h.Source.Addr().Is4In6() {
			t.Fatalf("source %s not unmapped", h.Source)
		}
	})
}
