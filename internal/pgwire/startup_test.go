package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"
)

// encode returns msg's wire form; the tests build every well-formed packet with pgproto3 so
// they check pgwire against an independent encoder.
func encode(t testing.TB, msg interface{ Encode([]byte) ([]byte, error) }) []byte {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatalf("encoding %T: %v", msg, err)
	}
	return b
}

func startupPacket(t testing.TB, version uint32, params map[string]string) []byte {
	return encode(t, &pgproto3.StartupMessage{ProtocolVersion: version, Parameters: params})
}

// packet builds a first packet by hand: a length word that counts itself, then body.
func packet(body ...[]byte) []byte {
	b := []byte{0, 0, 0, 0}
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cancelPacket(t testing.TB, pid uint32, secret []byte) []byte {
	return encode(t, &pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret})
}

func secretOf(n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(i*7 + 1)
	}
	return s
}

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

type firstPacketCase struct {
	name    string
	raw     []byte
	want    *FirstPacket // Raw is always the input; nil means a *ProtocolError is expected
	errText string       // substring of the expected error, if any
}

func firstPacketCases(t testing.TB) []firstPacketCase {
	params := map[string]string{
		"user":             "alice",
		"database":         "app",
		"application_name": "psql",
		"options":          "-c search_path=x",
		"client_encoding":  "UTF8",
	}
	// A StartupMessage of exactly MaxStartupPacketLen bytes: PostgreSQL accepts it.
	maxParams := map[string]string{"user": "u", "options": ""}
	overhead := len(startupPacket(t, pgproto3.ProtocolVersion30, maxParams))
	maxParams["options"] = strings.Repeat("o", MaxStartupPacketLen-overhead)
	tooBig := maps.Clone(maxParams)
	tooBig["options"] += "o"

	return []firstPacketCase{
		{
			name: "startup 3.0",
			raw:  startupPacket(t, pgproto3.ProtocolVersion30, params),
			want: &FirstPacket{Kind: KindStartup, ProtocolVersion: pgproto3.ProtocolVersion30, Params: params},
		},
		{
			name: "startup 3.2",
			raw:  startupPacket(t, pgproto3.ProtocolVersion32, map[string]string{"user": "bob"}),
			want: &FirstPacket{Kind: KindStartup, ProtocolVersion: pgproto3.ProtocolVersion32, Params: map[string]string{"user": "bob"}},
		},
		{
			// PostgreSQL accepts any 3.x and answers a newer minor with NegotiateProtocolVersion,
			// so pgfront must pass it on rather than refuse it.
			name: "startup 3.7 is left to the server to negotiate",
			raw:  packet(u32(3<<16|7), []byte("user\x00bob\x00\x00")),
			want: &FirstPacket{Kind: KindStartup, ProtocolVersion: 3<<16 | 7, Params: map[string]string{"user": "bob"}},
		},
		{
			name: "startup of exactly MaxStartupPacketLen",
			raw:  startupPacket(t, pgproto3.ProtocolVersion30, maxParams),
			want: &FirstPacket{Kind: KindStartup, ProtocolVersion: pgproto3.ProtocolVersion30, Params: maxParams},
		},
		{
			name:    "startup one byte over MaxStartupPacketLen",
			raw:     startupPacket(t, pgproto3.ProtocolVersion30, tooBig),
			errText: "invalid length of startup packet",
		},
		{
			name: "SSLRequest",
			raw:  encode(t, &pgproto3.SSLRequest{}),
			want: &FirstPacket{Kind: KindSSLRequest},
		},
		{
			name: "GSSENCRequest",
			raw:  encode(t, &pgproto3.GSSEncRequest{}),
			want: &FirstPacket{Kind: KindGSSENCRequest},
		},
		{
			name: "CancelRequest with a 4-byte secret (protocol 3.0)",
			raw:  cancelPacket(t, 4242, []byte{0xde, 0xad, 0xbe, 0xef}),
			want: &FirstPacket{Kind: KindCancel, Cancel: CancelKey{ProcessID: 4242, Secret: "\xde\xad\xbe\xef"}},
		},
		{
			name: "CancelRequest with a 32-byte secret (protocol 3.2)",
			raw:  cancelPacket(t, 0xfffffffe, secretOf(32)),
			want: &FirstPacket{Kind: KindCancel, Cancel: CancelKey{ProcessID: 0xfffffffe, Secret: string(secretOf(32))}},
		},
		{
			name: "CancelRequest with a 256-byte secret (the protocol maximum)",
			raw:  cancelPacket(t, 7, secretOf(256)),
			want: &FirstPacket{Kind: KindCancel, Cancel: CancelKey{ProcessID: 7, Secret: string(secretOf(256))}},
		},
		{
			name:    "CancelRequest with a 257-byte secret",
			raw:     packet(u32(codeCancel), u32(7), secretOf(257)),
			errText: "CancelRequest",
		},
		{
			name:    "CancelRequest with a 3-byte secret",
			raw:     packet(u32(codeCancel), u32(7), secretOf(3)),
			errText: "CancelRequest",
		},
		{
			name:    "CancelRequest without a secret",
			raw:     packet(u32(codeCancel), u32(7)),
			errText: "CancelRequest",
		},
		{
			name:    "SSLRequest with trailing bytes",
			raw:     packet(u32(codeSSL), []byte{0}),
			errText: "SSLRequest",
		},
		{
			name:    "GSSENCRequest with trailing bytes",
			raw:     packet(u32(codeGSSENC), u32(0)),
			errText: "GSSENCRequest",
		},
		{
			name:    "missing user",
			raw:     startupPacket(t, pgproto3.ProtocolVersion30, map[string]string{"database": "app"}),
			errText: "no PostgreSQL user name",
		},
		{
			name:    "empty user",
			raw:     startupPacket(t, pgproto3.ProtocolVersion30, map[string]string{"user": "", "database": "app"}),
			errText: "no PostgreSQL user name",
		},
		{
			name:    "no parameters at all",
			raw:     packet(u32(pgproto3.ProtocolVersion30), []byte{0}),
			errText: "",
		},
		{
			name:    "protocol 2.0",
			raw:     packet(u32(2<<16), []byte("user\x00bob\x00\x00")),
			errText: "unsupported frontend protocol 2.0",
		},
		{
			name:    "protocol 4.0",
			raw:     packet(u32(4<<16), []byte("user\x00bob\x00\x00")),
			errText: "unsupported frontend protocol 4.0",
		},
		{
			name:    "unknown 1234.x request code",
			raw:     packet(u32(1234<<16 | 5681)),
			errText: "unsupported frontend protocol 1234.5681",
		},
		{
			name:    "parameter list without its terminator",
			raw:     packet(u32(pgproto3.ProtocolVersion30), []byte("user\x00bob\x00")),
			errText: "invalid startup packet",
		},
		{
			name:    "parameter name without a value",
			raw:     packet(u32(pgproto3.ProtocolVersion30), []byte("user\x00bob\x00database\x00")),
			errText: "invalid startup packet",
		},
		{
			name:    "garbage after the terminator",
			raw:     packet(u32(pgproto3.ProtocolVersion30), []byte("user\x00bob\x00\x00x")),
			errText: "invalid startup packet",
		},
	}
}

func checkFirstPacket(t *testing.T, tc firstPacketCase, got *FirstPacket, err error) {
	t.Helper()
	if tc.want == nil {
		if !isProtocolError(err) {
			t.Fatalf("got (%+v, %v), want a *ProtocolError", got, err)
		}
		if !strings.Contains(err.Error(), tc.errText) {
			t.Errorf("error %q does not mention %q", err, tc.errText)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if got.Kind != tc.want.Kind || got.ProtocolVersion != tc.want.ProtocolVersion || got.Cancel != tc.want.Cancel {
		t.Errorf("got kind %v version %#x cancel %+v, want kind %v version %#x cancel %+v",
			got.Kind, got.ProtocolVersion, got.Cancel, tc.want.Kind, tc.want.ProtocolVersion, tc.want.Cancel)
	}
	if !maps.Equal(got.Params, tc.want.Params) {
		t.Errorf("params = %v, want %v", got.Params, tc.want.Params)
	}
	if !bytes.Equal(got.Raw, tc.raw) {
		t.Errorf("Raw differs from the packet:\n got %q\nwant %q", got.Raw, tc.raw)
	}
}

func TestParseFirstPacket(t *testing.T) {
	for _, tc := range firstPacketCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFirstPacket(tc.raw)
			checkFirstPacket(t, tc, got, err)
		})
	}
}

// TestReadFirstPacket reads each case from a stream with more bytes behind the packet (a TLS
// ClientHello after SSLRequest, say) and checks they are all still there afterwards.
func TestReadFirstPacket(t *testing.T) {
	trailer := []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03after")
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"halves":   iotest.HalfReader,
	}
	for _, tc := range firstPacketCases(t) {
		if len(tc.raw) > MaxStartupPacketLen {
			continue // ReadFirstPacket refuses it from the length word: see TestReadFirstPacketBadLength
		}
		for rname, wrap := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				src := bytes.NewReader(append(bytes.Clone(tc.raw), trailer...))
				got, err := ReadFirstPacket(wrap(src))
				checkFirstPacket(t, tc, got, err)
				rest, _ := io.ReadAll(src)
				if !bytes.Equal(rest, trailer) {
					t.Errorf("bytes left after the packet = %q, want %q", rest, trailer)
				}
			})
		}
	}
}

// recordingReader serves data and counts what it handed out.
type recordingReader struct {
	data []byte
	read int
}

func (r *recordingReader) Read(p []byte) (int, error) {
	if r.read == len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.read:])
	r.read += n
	return n, nil
}

func TestReadFirstPacketBadLength(t *testing.T) {
	for _, n := range []uint32{0, 3, 7, MaxStartupPacketLen + 1, 1<<31 - 1, 1 << 31, 1<<32 - 1} {
		// Plenty of body bytes are available: the length alone must be refused.
		body := bytes.Repeat([]byte{'x'}, 2*MaxStartupPacketLen)
		r := &recordingReader{data: append(u32(n), body...)}

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		pkt, err := ReadFirstPacket(r)
		runtime.ReadMemStats(&after)

		if !isProtocolError(err) {
			t.Errorf("length %d: got (%+v, %v), want a *ProtocolError", n, pkt, err)
		}
		if r.read != 4 {
			t.Errorf("length %d: read %d bytes, want only the 4-byte length word", n, r.read)
		}
		// Nothing the size of the claimed packet was allocated. The bound is loose: the
		// runtime may allocate a little on its own, but never MaxStartupPacketLen bytes here.
		if d := after.TotalAlloc - before.TotalAlloc; d >= MaxStartupPacketLen {
			t.Errorf("length %d: %d bytes allocated before refusing", n, d)
		}
	}
}

func TestReadFirstPacketTruncated(t *testing.T) {
	full := startupPacket(t, pgproto3.ProtocolVersion30, map[string]string{"user": "alice", "database": "app"})
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"half a length word", full[:2], io.ErrUnexpectedEOF},
		{"length word only", full[:4], io.ErrUnexpectedEOF},
		{"truncated body", full[:len(full)-1], io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFirstPacket(bytes.NewReader(tc.data))
			if err != tc.want {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}

	// Errors other than EOF come back as they are, so the caller can classify a deadline.
	boom := errors.New("read deadline")
	_, err := ReadFirstPacket(io.MultiReader(bytes.NewReader(full[:10]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
}

func TestParseFirstPacketLengthMismatch(t *testing.T) {
	raw := encode(t, &pgproto3.SSLRequest{})
	for _, bad := range [][]byte{
		nil,
		raw[:3],
		raw[:7],
		append(bytes.Clone(raw), 0),           // length word says 8, slice has 9
		append(u32(7), u32(codeSSL)...),       // says 7, has 8
		append(u32(1<<32-1), u32(codeSSL)...), // says -1
		make([]byte, MaxStartupPacketLen+1),   // too long whatever it says
		packet(u32(codeCancel), u32(1), secretOf(4))[:15], // length word no longer matches
	} {
		if pkt, err := ParseFirstPacket(bad); !isProtocolError(err) {
			t.Errorf("ParseFirstPacket(%q) = (%+v, %v), want a *ProtocolError", bad, pkt, err)
		}
	}
}

func TestEncodeCancelRequest(t *testing.T) {
	for _, n := range []int{4, 32, 256} {
		key := CancelKey{ProcessID: 0x01020304, Secret: string(secretOf(n))}
		got := EncodeCancelRequest(key)
		if want := cancelPacket(t, key.ProcessID, []byte(key.Secret)); !bytes.Equal(got, want) {
			t.Errorf("secret %d bytes: EncodeCancelRequest = %x, want %x", n, got, want)
		}
		pkt, err := ParseFirstPacket(got)
		if err != nil || pkt.Kind != KindCancel || pkt.Cancel != key {
			t.Errorf("secret %d bytes: parsing back gives (%+v, %v), want key %+v", n, pkt, err, key)
		}
	}
}

func TestParseBackendKeyData(t *testing.T) {
	for _, n := range []int{4, 32, 256} {
		msg := encode(t, &pgproto3.BackendKeyData{ProcessID: 99, SecretKey: secretOf(n)})
		key, ok := ParseBackendKeyData(msg[5:])
		if want := (CancelKey{ProcessID: 99, Secret: string(secretOf(n))}); !ok || key != want {
			t.Errorf("secret %d bytes: got (%+v, %v), want %+v", n, key, ok, want)
		}
		// The key the server hands out is the key a client's CancelRequest carries.
		pkt, err := ParseFirstPacket(cancelPacket(t, 99, secretOf(n)))
		if err != nil || pkt.Cancel != key {
			t.Errorf("secret %d bytes: CancelRequest key %+v (%v) does not match BackendKeyData key %+v", n, pkt.Cancel, err, key)
		}
	}
	for _, n := range []int{0, 3, 257} {
		body := append(u32(99), secretOf(n)...)
		if key, ok := ParseBackendKeyData(body); ok {
			t.Errorf("secret %d bytes: accepted as %+v", n, key)
		}
	}
	if _, ok := ParseBackendKeyData(nil); ok {
		t.Error("empty body accepted")
	}
}

func TestFirstPacketKindString(t *testing.T) {
	for k, want := range map[FirstPacketKind]string{
		KindStartup:       "StartupMessage",
		KindSSLRequest:    "SSLRequest",
		KindGSSENCRequest: "GSSENCRequest",
		KindCancel:        "CancelRequest",
		0:                 "FirstPacketKind(0)",
		99:                "FirstPacketKind(99)",
	} {
		if got := k.String(); got != want {
			t.Errorf("FirstPacketKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}
