package pgwire

import (
	"encoding/binary"
	"fmt"
)

// MaxMessageLen bounds a regular message's length word. PostgreSQL refuses larger ones
// (PQ_LARGE_MESSAGE_LIMIT is 1 GB - 1).
const MaxMessageLen = 1<<30 - 1

// maxCapture bounds how many body bytes the scanner keeps for a wanted message. Everything
// pgfront reads (ReadyForQuery, BackendKeyData, ParameterStatus) is far smaller.
const maxCapture = 512

// Handler receives the messages a Scanner finds.
//
// Header is called once per message, as soon as its 5-byte header is complete, before any body
// byte of it is seen. Body is called for messages whose type the Scanner wants, with the whole
// body (nil if it was longer than the capture bound), once the body is complete; body is valid
// only until Body returns. Either may return an error to stop the scan.
type Handler interface {
	Header(typ byte, length uint32) error
	Body(typ byte, body []byte) error
}

// Scanner follows the message framing (1-byte type, 4-byte length) of one direction of a
// regular (post-startup) protocol stream fed in arbitrary chunks. It copies nothing but wanted
// bodies, so it costs a few comparisons per message. A Scanner is not safe for concurrent use.
type Scanner struct {
	want      typeSet // message types whose bodies are captured
	frontend  bool    // validate frontend message types
	hdr       [5]byte
	hdrN      int
	remaining uint32 // body bytes left in the current message
	typ       byte
	capturing bool
	capture   []byte // wanted body so far; nil while a too-long body is skipped
	tooLong   bool
}

// frontendTypes are the message types a client may send after startup.
var frontendTypes = func() (t [256]bool) {
	for _, c := range []byte("BCdcfDEHFPpQSX") {
		t[c] = true
	}
	return t
}()

// NewFrontendScanner scans client-to-server traffic: unknown message types are errors.
func NewFrontendScanner(want ...byte) *Scanner {
	s := &Scanner{frontend: true}
	for _, c := range want {
		s.want.add(c)
	}
	return s
}

// NewBackendScanner scans server-to-client traffic.
func NewBackendScanner(want ...byte) *Scanner {
	s := &Scanner{}
	for _, c := range want {
		s.want.add(c)
	}
	return s
}

// AtBoundary reports whether everything fed so far ended exactly at a message boundary, so a
// message of pgfront's own can be written to the stream without corrupting it.
func (s *Scanner) AtBoundary() bool { return s.hdrN == 0 && s.remaining == 0 && !s.capturing }

// Feed scans p. On error the stream is unusable: the caller ends the session.
func (s *Scanner) Feed(p []byte, h Handler) error {
	for len(p) > 0 {
		if s.remaining > 0 {
			n := uint32(len(p))
			if n > s.remaining {
				n = s.remaining
			}
			if s.capturing && !s.tooLong {
				if len(s.capture)+int(n) <= maxCapture {
					s.capture = append(s.capture, p[:n]...)
				} else {
					s.tooLong = true
				}
			}
			s.remaining -= n
			p = p[n:]
			if s.remaining == 0 && s.capturing {
				if err := s.finishCapture(h); err != nil {
					return err
				}
			}
			continue
		}
		// Fast path: a whole header in p.
		if s.hdrN == 0 && len(p) >= 5 {
			if err := s.startMessage(p[0], binary.BigEndian.Uint32(p[1:5]), h); err != nil {
				return err
			}
			p = p[5:]
			continue
		}
		n := copy(s.hdr[s.hdrN:], p)
		s.hdrN += n
		p = p[n:]
		if s.hdrN == 5 {
			s.hdrN = 0
			if err := s.startMessage(s.hdr[0], binary.BigEndian.Uint32(s.hdr[1:5]), h); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Scanner) startMessage(typ byte, length uint32, h Handler) error {
	if s.frontend && !frontendTypes[typ] {
		return &ProtocolError{Msg: fmt.Sprintf("invalid frontend message type %d", typ)}
	}
	if length < 4 || length > MaxMessageLen {
		return &ProtocolError{Msg: fmt.Sprintf("invalid message length %d for message type %q", int32(length), typ)}
	}
	s.typ = typ
	s.remaining = length - 4
	if err := h.Header(typ, length); err != nil {
		return err
	}
	if s.want.has(typ) {
		s.capturing = true
		s.tooLong = false
		if s.capture == nil {
			// Allocated once, non-nil so an empty body is not mistaken for a too-long one.
			s.capture = make([]byte, 0, 16) // grows up to maxCapture; small keeps idle sessions light
		}
		s.capture = s.capture[:0]
		if s.remaining == 0 {
			return s.finishCapture(h)
		}
	}
	return nil
}

func (s *Scanner) finishCapture(h Handler) error {
	s.capturing = false
	if s.tooLong {
		return h.Body(s.typ, nil)
	}
	return h.Body(s.typ, s.capture)
}

// typeSet is a set of message types: 32 bytes instead of a 256-byte table, since every session
// carries two scanners.
type typeSet [4]uint64

func (t *typeSet) add(c byte)      { t[c>>6] |= 1 << (c & 63) }
func (t *typeSet) has(c byte) bool { return t[c>>6]&(1<<(c&63)) != 0 }
