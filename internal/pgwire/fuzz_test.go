package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FuzzParseFirstPacket checks that no input panics, that whatever is accepted is a well-formed
// packet of its kind, and that ReadFirstPacket agrees with ParseFirstPacket.
func FuzzParseFirstPacket(f *testing.F) {
	for _, tc := range firstPacketCases(f) {
		if len(tc.raw) <= 300 { // big seeds make mutation and minimization slow; the unit tests cover them
			f.Add(tc.raw)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 8})
	f.Add(packet(u32(3<<16|1), []byte("user\x00u\x00\x00")))
	f.Add(packet(u32(pgproto3.ProtocolVersion30), []byte("\x00v\x00user\x00u\x00\x00")))

	f.Fuzz(func(t *testing.T, data []byte) {
		pkt, err := ParseFirstPacket(data)
		if err != nil {
			if !isProtocolError(err) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
		} else {
			checkAccepted(t, data, pkt)
		}

		// ReadFirstPacket reads the packet its length word announces, no more, and judges it
		// as ParseFirstPacket judges those bytes.
		r := bytes.NewReader(data)
		rpkt, rerr := ReadFirstPacket(r)
		consumed := len(data) - r.Len()
		switch {
		case len(data) < 4:
			if rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
				t.Fatalf("short stream: got (%+v, %v), want EOF", rpkt, rerr)
			}
			return
		case rerr != nil && isProtocolError(rerr) && consumed == 4:
			// Refused on the length word alone; ParseFirstPacket must refuse that length too.
			n := binary.BigEndian.Uint32(data)
			if n >= minStartup && n <= MaxStartupPacketLen {
				t.Fatalf("length %d refused before reading the body: %v", n, rerr)
			}
			return
		}
		n := int(binary.BigEndian.Uint32(data))
		if n > len(data) {
			if rerr != io.ErrUnexpectedEOF {
				t.Fatalf("truncated packet: got (%+v, %v), want io.ErrUnexpectedEOF", rpkt, rerr)
			}
			return
		}
		if consumed != n {
			t.Fatalf("ReadFirstPacket consumed %d bytes of a %d-byte packet", consumed, n)
		}
		ppkt, perr := ParseFirstPacket(data[:n])
		if (rerr == nil) != (perr == nil) {
			t.Fatalf("ReadFirstPacket = (%+v, %v) but ParseFirstPacket = (%+v, %v)", rpkt, rerr, ppkt, perr)
		}
		if rerr == nil && !samePacket(rpkt, ppkt) {
			t.Fatalf("ReadFirstPacket = %+v but ParseFirstPacket = %+v", rpkt, ppkt)
		}
	})
}

func samePacket(a, b *FirstPacket) bool {
	return a.Kind == b.Kind && bytes.Equal(a.Raw, b.Raw) && a.ProtocolVersion == b.ProtocolVersion &&
		maps.Equal(a.Params, b.Params) && a.Cancel == b.Cancel
}

// checkAccepted checks an accepted packet against an independent encoding of what it says.
func checkAccepted(t *testing.T, data []byte, pkt *FirstPacket) {
	t.Helper()
	if !bytes.Equal(pkt.Raw, data) {
		t.Fatalf("Raw %q differs from input %q", pkt.Raw, data)
	}
	switch pkt.Kind {
	case KindSSLRequest:
		if want := encode(t, &pgproto3.SSLRequest{}); !bytes.Equal(data, want) {
			t.Fatalf("accepted %q as SSLRequest", data)
		}
	case KindGSSENCRequest:
		if want := encode(t, &pgproto3.GSSEncRequest{}); !bytes.Equal(data, want) {
			t.Fatalf("accepted %q as GSSENCRequest", data)
		}
	case KindCancel:
		if len(pkt.Cancel.Secret) < 4 || len(pkt.Cancel.Secret) > 256 {
			t.Fatalf("accepted a %d-byte cancel secret", len(pkt.Cancel.Secret))
		}
		if enc := EncodeCancelRequest(pkt.Cancel); !bytes.Equal(enc, data) {
			t.Fatalf("CancelRequest %q re-encodes as %q", data, enc)
		}
	case KindStartup:
		if pkt.ProtocolVersion>>16 != 3 {
			t.Fatalf("accepted protocol %#x", pkt.ProtocolVersion)
		}
		if pkt.Params["user"] == "" {
			t.Fatal("accepted a StartupMessage without user")
		}
		enc := startupPacket(t, pkt.ProtocolVersion, pkt.Params)
		again, err := ParseFirstPacket(enc)
		if err != nil {
			t.Fatalf("re-encoded StartupMessage %q refused: %v", enc, err)
		}
		if again.ProtocolVersion != pkt.ProtocolVersion || !maps.Equal(again.Params, pkt.Params) {
			t.Fatalf("StartupMessage %q re-parses as %+v, want %+v", data, again, pkt)
		}
	default:
		t.Fatalf("accepted with kind %v", pkt.Kind)
	}
}

const fuzzWant = "KSZDQXE\x00"

// refScan is a plain model of the framing: what a scanner fed data in any chunks must report,
// whether it must fail, and whether it ends at a boundary.
func refScan(data []byte, frontend bool) (events []event, failed, boundary bool) {
	for off := 0; ; {
		if len(data)-off < 5 {
			return events, false, off == len(data)
		}
		typ, n := data[off], binary.BigEndian.Uint32(data[off+1:])
		if frontend && !strings.Contains("BCdcfDEHFPpQSX", string(typ)) || n < 4 || n > MaxMessageLen {
			return events, true, false
		}
		events = append(events, event{typ: typ, length: n})
		end := off + 1 + int(n)
		if end > len(data) {
			return events, false, false
		}
		if strings.IndexByte(fuzzWant, typ) >= 0 {
			if body := data[off+5 : end]; len(body) > maxCapture {
				events = append(events, event{body: true, typ: typ, dataNil: true})
			} else {
				events = append(events, event{body: true, typ: typ, data: string(body)})
			}
		}
		off = end
	}
}

type scanResult struct {
	events   []event
	err      error
	boundary bool
}

func scanChunks(frontend bool, chunks ...[]byte) scanResult {
	s := NewBackendScanner([]byte(fuzzWant)...)
	if frontend {
		s = NewFrontendScanner([]byte(fuzzWant)...)
	}
	var rec recorder
	for _, c := range chunks {
		if err := s.Feed(c, &rec); err != nil {
			return scanResult{events: rec.events, err: err}
		}
	}
	return scanResult{events: rec.events, boundary: s.AtBoundary()}
}

// FuzzScanner checks that no input panics and that the callbacks do not depend on how the
// stream is cut: one chunk, two chunks split at a fuzzer-chosen point, and single bytes all
// give what the reference model says.
func FuzzScanner(f *testing.F) {
	// Seeds are kept small (big ones make mutation and minimization slow) but include one
	// wanted body over the capture bound.
	small := func(msgs []pgproto3.Message) []byte {
		var b []byte
		for _, m := range msgs {
			if enc := encode(f, m); len(enc) <= 64 {
				b = append(b, enc...)
			}
		}
		return b
	}
	backend := append(small(backendMessages()), encode(f, dataRow(2, 501))...)
	frontend := small(frontendMessages())
	f.Add(backend, uint(0), false)
	f.Add(backend, uint(7), false)
	f.Add(backend, uint(len(backend)/2), false)
	f.Add(frontend, uint(3), true)
	f.Add(frontend, uint(len(frontend)-1), true)
	f.Add([]byte{}, uint(0), true)
	f.Add(header('Z', 5), uint(2), false)
	f.Add(append(header('X', 4), header(0, 4)...), uint(6), true)
	f.Add(append(header('Q', 9), header('Z', 3)...), uint(5), false)
	f.Add(header('D', MaxMessageLen+1), uint(1), false)
	f.Add(header('K', 4), uint(5), false)

	f.Fuzz(func(t *testing.T, data []byte, at uint, frontend bool) {
		wantEvents, wantFail, wantBoundary := refScan(data, frontend)
		at %= uint(len(data)) + 1
		bytewise := make([][]byte, len(data))
		for i := range data {
			bytewise[i] = data[i : i+1]
		}
		for name, res := range map[string]scanResult{
			"one chunk":  scanChunks(frontend, data),
			"two chunks": scanChunks(frontend, data[:at], data[at:]),
			"bytewise":   scanChunks(frontend, bytewise...),
		} {
			if !slices.Equal(res.events, wantEvents) {
				t.Fatalf("%s: callbacks\n%v\nwant\n%v", name, res.events, wantEvents)
			}
			var pe *ProtocolError
			if wantFail != errors.As(res.err, &pe) || (!wantFail && res.err != nil) {
				t.Fatalf("%s: err = %v, want failure %v", name, res.err, wantFail)
			}
			if res.boundary != wantBoundary {
				t.Fatalf("%s: AtBoundary() = %v, want %v", name, res.boundary, wantBoundary)
			}
		}
	})
}

// FuzzKeyRewrite: a rewriting scanner changes the same bytes however the stream is chunked,
// and only BackendKeyData secrets (the bytes a plain scanner's 'K' bodies hold past the pid).
func FuzzKeyRewrite(f *testing.F) {
	key := encode(f, &pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}})
	f.Add(append(slices.Clone(key), header('Z', 5)...), uint(3))
	f.Add(encode(f, &pgproto3.BackendKeyData{ProcessID: 9, SecretKey: make([]byte, 32)}), uint(11))
	f.Add(header('K', 7), uint(2))
	f.Fuzz(func(t *testing.T, data []byte, at uint) {
		at %= uint(len(data)) + 1
		run := func(chunks ...[]byte) ([]byte, error) {
			sc := NewBackendScanner('K')
			sc.SetKeyRewrite(func(pid uint32, secret []byte) {
				for i := range secret {
					secret[i] = byte(pid) ^ byte(i) ^ 0x5a
				}
			})
			var out []byte
			for _, c := range chunks {
				c = slices.Clone(c)
				err := sc.Feed(c, nopHandler{})
				out = append(out, c...)
				if err != nil {
					return out, err
				}
			}
			return out, nil
		}
		one, err1 := run(data)
		two, err2 := run(data[:at], data[at:])
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
		if err1 == nil && !bytes.Equal(one, two) {
			t.Fatalf("one chunk\n%x\ntwo chunks at %d\n%x", one, at, two)
		}
		if err1 == nil && len(one) != len(data) {
			t.Fatalf("length changed: %d -> %d", len(data), len(one))
		}
	})
}
