// Package pgwire owns the small part of the PostgreSQL wire protocol that pgfront needs: the
// first packet a client sends (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), a
// streaming scanner of the message framing used on the relay's hot path, and the
// ErrorResponse/CancelRequest messages pgfront writes itself.
//
// Typical use in a session:
//
//	pkt, err := pgwire.ReadFirstPacket(conn)
//	switch pkt.Kind {
//	case pgwire.KindSSLRequest:
//		conn.Write([]byte{'N'})
//	case pgwire.KindStartup:
//		server.Write(pkt.Raw)
//	}
//
// Every length read from the network is bounded before anything is allocated.
package pgwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// MaxStartupPacketLen is PostgreSQL's own bound on a startup packet, length word included
// (MAX_STARTUP_PACKET_LENGTH in src/include/libpq/pqcomm.h).
const MaxStartupPacketLen = 10000

// Request codes that stand where a StartupMessage carries its protocol version.
const (
	codeCancel   = 80877102
	codeSSL      = 80877103
	codeGSSENC   = 80877104
	minStartup   = 8           // length word + version/code
	maxCancelLen = 8 + 4 + 256 // length word, code, process id, secret of at most 256 bytes
)

// FirstPacketKind says what a client's first packet asks for.
type FirstPacketKind uint8

// Kinds of first packet.
const (
	KindStartup FirstPacketKind = iota + 1
	KindSSLRequest
	KindGSSENCRequest
	KindCancel
)

func (k FirstPacketKind) String() string {
	switch k {
	case KindStartup:
		return "StartupMessage"
	case KindSSLRequest:
		return "SSLRequest"
	case KindGSSENCRequest:
		return "GSSENCRequest"
	case KindCancel:
		return "CancelRequest"
	}
	return fmt.Sprintf("FirstPacketKind(%d)", uint8(k))
}

// CancelKey identifies a backend for cancellation: its process id and secret key (4 bytes in
// protocol 3.0, up to 256 in 3.2). It is comparable, so it can key a map.
type CancelKey struct {
	ProcessID uint32
	Secret    string
}

// FirstPacket is a parsed first packet. Raw holds the whole packet, length word included, so a
// StartupMessage can be forwarded byte for byte.
type FirstPacket struct {
	Kind            FirstPacketKind
	Raw             []byte
	ProtocolVersion uint32            // KindStartup only
	Params          map[string]string // KindStartup only: user, database, options, ...
	Cancel          CancelKey         // KindCancel only
}

// ProtocolError is a malformed or unsupported packet. Its message is safe to show the client.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return e.Msg }

func protoErrorf(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// ReadFirstPacket reads exactly one first packet from r: it never reads past the packet, so the
// bytes that follow (a TLS ClientHello after SSLRequest, say) stay in r. Lengths outside
// 8..MaxStartupPacketLen are refused before any allocation.
func ReadFirstPacket(r io.Reader) (*FirstPacket, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < minStartup || n > MaxStartupPacketLen {
		return nil, protoErrorf("invalid length of startup packet: %d", int32(n))
	}
	raw := make([]byte, n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return ParseFirstPacket(raw)
}

// ParseFirstPacket parses a complete first packet, length word included.
func ParseFirstPacket(raw []byte) (*FirstPacket, error) {
	if len(raw) < minStartup || len(raw) > MaxStartupPacketLen {
		return nil, protoErrorf("invalid length of startup packet: %d", len(raw))
	}
	if n := binary.BigEndian.Uint32(raw); int(n) != len(raw) {
		return nil, protoErrorf("startup packet length %d does not match its %d bytes", n, len(raw))
	}
	body := raw[4:]
	code := binary.BigEndian.Uint32(body)
	pkt := &FirstPacket{Raw: raw}
	switch {
	case code == codeSSL:
		if len(body) != 4 {
			return nil, protoErrorf("invalid SSLRequest length %d", len(raw))
		}
		pkt.Kind = KindSSLRequest
	case code == codeGSSENC:
		if len(body) != 4 {
			return nil, protoErrorf("invalid GSSENCRequest length %d", len(raw))
		}
		pkt.Kind = KindGSSENCRequest
	case code == codeCancel:
		if len(raw) < 16 || len(raw) > maxCancelLen {
			return nil, protoErrorf("invalid CancelRequest length %d", len(raw))
		}
		var msg pgproto3.CancelRequest
		if err := msg.Decode(body); err != nil {
			return nil, protoErrorf("invalid CancelRequest: %v", err)
		}
		pkt.Kind = KindCancel
		pkt.Cancel = CancelKey{ProcessID: msg.ProcessID, Secret: string(msg.SecretKey)}
	case code>>16 == 3:
		// PostgreSQL takes any 3.x and answers a minor it lacks with NegotiateProtocolVersion,
		// but pgproto3 decodes only 3.0 and 3.2: decode a copy stamped 3.0 and keep the
		// client's version, so the server still negotiates.
		if code != pgproto3.ProtocolVersion30 && code != pgproto3.ProtocolVersion32 {
			body = append([]byte(nil), body...)
			binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
		}
		var msg pgproto3.StartupMessage
		if err := msg.Decode(body); err != nil {
			return nil, protoErrorf("invalid startup packet: %v", err)
		}
		if msg.Parameters["user"] == "" {
			return nil, protoErrorf("no PostgreSQL user name specified in startup packet")
		}
		pkt.Kind = KindStartup
		pkt.ProtocolVersion = code
		pkt.Params = msg.Parameters
	default:
		return nil, protoErrorf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.x", code>>16, code&0xffff)
	}
	return pkt, nil
}

// EncodeCancelRequest returns the CancelRequest packet for key, ready to write to a server.
func EncodeCancelRequest(key CancelKey) []byte {
	b := make([]byte, 0, 12+len(key.Secret))
	b = binary.BigEndian.AppendUint32(b, uint32(12+len(key.Secret)))
	b = binary.BigEndian.AppendUint32(b, codeCancel)
	b = binary.BigEndian.AppendUint32(b, key.ProcessID)
	return append(b, key.Secret...)
}

// maxSecretLen is the longest cancel secret key protocol 3.2 allows.
const maxSecretLen = 256

// ParseBackendKeyData decodes a BackendKeyData body (the bytes after type and length).
func ParseBackendKeyData(body []byte) (CancelKey, bool) {
	if len(body) < 8 || len(body) > 4+maxSecretLen {
		return CancelKey{}, false
	}
	return CancelKey{ProcessID: binary.BigEndian.Uint32(body), Secret: string(body[4:])}, true
}
