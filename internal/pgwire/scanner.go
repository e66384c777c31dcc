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
	// key rewrites BackendKeyData secrets in the fed bytes; nil: off (SetKeyRewrite).
	key *keyRewrite
}

// keyRewrite is the state of SetKeyRewrite, allocated only by scanners that rewrite.
type keyRewrite struct {
	issue   func(pid uint32, secret []byte)
	bodyLen uint32 // of the BackendKeyData being scanned
	secret  []byte // its replacement secret, once its process id is known; nil before
}

// SetKeyRewrite makes the scanner replace the secret key of every BackendKeyData ('K') it
// scans, in the very bytes fed to it: Feed modifies p in place, so the caller forwards the
// replacement, whatever chunks the message arrives in. issue is called once per message, as
// soon as its process id is known (before any secret byte passes), to fill secret (as long as
// the server's) with the replacement. Body still gets the server's own secret; IssuedSecret
// gives the replacement. Needs 'K' among the wanted types.
func (s *Scanner) SetKeyRewrite(issue func(pid uint32, secret []byte)) {
	s.key = &keyRewrite{issue: issue}
}

// IssuedSecret is the replacement secret of the BackendKeyData whose Body is being handled
// (valid during Body only); nil when the scanner does not rewrite or the message was invalid.
func (s *Scanner) IssuedSecret() []byte {
	if s.key == nil {
		return nil
	}
	return s.key.secret
}

// rewriteKey replaces the secret bytes in seg, the part of the BackendKeyData body from body
// offset at (already captured, so the process id is known once 4 bytes are).
func (s *Scanner) rewriteKey(seg []byte, at int) {
	k := s.key
	n := int(k.bodyLen) - 4 // the secret's length
	if n < 4 || n > maxSecretLen {
		return // invalid: left alone, and Body refuses it
	}
	if k.secret == nil {
		if len(s.capture) < 4 {
			return // still in the process id
		}
		k.secret = make([]byte, n)
		k.issue(binary.BigEndian.Uint32(s.capture), k.secret)
	}
	for j := range seg {
		if off := at + j; off >= 4 {
			seg[j] = k.secret[off-4]
		}
	}
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
					at := len(s.capture)
					s.capture = append(s.capture, p[:n]...)
					if s.typ == 'K' && s.key != nil {
						s.rewriteKey(p[:n], at)
					}
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
	if typ == 'K' && s.key != nil {
		s.key.bodyLen, s.key.secret = s.remaining, nil
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
