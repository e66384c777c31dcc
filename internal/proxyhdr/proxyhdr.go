// Package proxyhdr reads the PROXY protocol header (v1 or v2) that a load balancer sends
// before its client's first byte, and the client address it carries.
//
// Read takes exactly the header's bytes from the connection and never one more, so the
// caller goes on reading the PostgreSQL startup packet (or TLS ClientHello) from the same raw
// connection: no buffered reader has to wrap it, and half-close, splicing and socket
// bookkeeping keep working on the accepted *net.TCPConn. The bytes are parsed by
// github.com/pires/go-proxyproto; this package only frames them, bounded:
//
//	_ = conn.SetReadDeadline(time.Now().Add(startupTimeout))
//	h, err := proxyhdr.Read(conn)
//	if err != nil { ... refuse ... }
//	client := conn.RemoteAddr().String()
//	if h.Source.IsValid() {
//		client = h.Source.String()
//	}
package proxyhdr

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
)

const (
	// v1Max is the longest v1 line, CRLF included (the specification's worst case).
	v1Max = 107
	// v1Min is the shortest: "PROXY UNKNOWN\r\n". Any valid v1 header is at least this long,
	// so that many bytes can be read at once without reading past the header.
	v1Min = 15
	// v2Fixed is the v2 signature, version/command, family and length.
	v2Fixed = 16
	// MaxV2Payload bounds the v2 address block and TLVs pgfront accepts (the protocol allows
	// 65535). Load balancers send tens of bytes, a few hundred with TLVs (AWS, GCP).
	MaxV2Payload = 4096
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ErrNoHeader means the connection did not start with a PROXY protocol signature: a client
// that speaks PostgreSQL (or TLS) directly. Read has then consumed one byte.
var ErrNoHeader = errors.New("no PROXY protocol header")

// Error is a malformed PROXY protocol header: the signature was there, what followed was not
// a header pgfront accepts.
type Error struct {
	Msg string
	Err error // the parser's error, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return "malformed PROXY protocol header: " + e.Msg + ": " + e.Err.Error()
	}
	return "malformed PROXY protocol header: " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Header is what a PROXY protocol header says.
type Header struct {
	Version int // 1 or 2
	// Source is the client's address and port. It is the zero AddrPort (not IsValid) when the
	// header carries no client address: a v2 LOCAL command (the balancer's own connection,
	// such as a health check), v1 UNKNOWN, or a unix-socket client.
	Source netip.AddrPort
	// Len is the header's length in bytes.
	Len int
}

// Starts reports whether a connection whose first byte is b may be sending a PROXY protocol
// header. A PostgreSQL packet starts with 0x00 (its length) and a TLS record with 0x16.
func Starts(b byte) bool { return b == sigV1[0] || b == sigV2[0] }

// Read reads one PROXY protocol header from r and returns what it says. It reads exactly the
// header and no byte after it. Errors: ErrNoHeader (wrapped) when the first byte cannot start
// a header; *Error for a malformed one; otherwise r's error (a deadline, EOF), wrapped, with
// io.EOF turned into io.ErrUnexpectedEOF once part of a header was read.
func Read(r io.Reader) (Header, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return Header{}, fmt.Errorf("reading PROXY protocol header: %w", err)
	}
	var raw []byte
	var err error
	switch first[0] {
	case sigV1[0]:
		raw, err = readV1(r, first[0])
	case sigV2[0]:
		raw, err = readV2(r, first[0])
	default:
		return Header{}, ErrNoHeader
	}
	if err != nil {
		return Header{}, err
	}
	return parse(raw)
}

// readV1 reads a v1 line, whose first byte is first, up to and including its LF.
func readV1(r io.Reader, first byte) ([]byte, error) {
	buf := make([]byte, v1Min, v1Max)
	buf[0] = first
	if err := readFull(r, buf[1:]); err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(buf, sigV1) {
		return nil, &Error{Msg: "bad v1 signature"}
	}
	for buf[len(buf)-1] != '\n' {
		if len(buf) == v1Max {
			return nil, &Error{Msg: fmt.Sprintf("v1 line longer than %d bytes", v1Max)}
		}
		var b [1]byte
		if err := readFull(r, b[:]); err != nil {
			return nil, err
		}
		buf = append(buf, b[0])
	}
	return buf, nil
}

// readV2 reads a v2 header, whose first byte is first: the fixed part, then the length it
// announces, bounded by MaxV2Payload.
func readV2(r io.Reader, first byte) ([]byte, error) {
	var fixed [v2Fixed]byte
	fixed[0] = first
	if err := readFull(r, fixed[1:]); err != nil {
		return nil, err
	}
	if !bytes.Equal(fixed[:len(sigV2)], sigV2) {
		return nil, &Error{Msg: "bad v2 signature"}
	}
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if n > MaxV2Payload {
		return nil, &Error{Msg: fmt.Sprintf("v2 address block of %d bytes (pgfront accepts at most %d)", n, MaxV2Payload)}
	}
	buf := make([]byte, v2Fixed+n)
	copy(buf, fixed[:])
	if err := readFull(r, buf[v2Fixed:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// readFull reads len(b) bytes of a header already begun.
func readFull(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading PROXY protocol header: %w", err)
	}
	return nil
}

// parse has the library parse one complete header.
func parse(raw []byte) (Header, error) {
	br := bufio.NewReaderSize(bytes.NewReader(raw), len(raw))
	h, err := proxyproto.Read(br)
	if err != nil {
		return Header{}, &Error{Msg: "rejected by the parser", Err: err}
	}
	if br.Buffered() != 0 {
		// The framing above and the parser disagree about where the header ends.
		return Header{}, &Error{Msg: fmt.Sprintf("%d bytes left after the header", br.Buffered())}
	}
	out := Header{Version: int(h.Version), Len: len(raw)}
	if h.Command.IsLocal() {
		return out, nil
	}
	out.Source = addrPort(h.SourceAddr)
	return out, nil
}

// addrPort is a header's source address, or the zero AddrPort for one without an IP (unix,
// UNKNOWN).
func addrPort(a net.Addr) netip.AddrPort {
	var ip net.IP
	var port int
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, port = a.IP, a.Port
	case *net.UDPAddr:
		ip, port = a.IP, a.Port
	default:
		return netip.AddrPort{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port))
}
