package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// event is one Handler callback as recorded by recorder.
type event struct {
	body    bool // Body callback (else Header)
	typ     byte
	length  uint32 // Header only
	data    string // Body only
	dataNil bool   // Body only: the body was nil (too long to capture)
}

func (e event) String() string {
	if !e.body {
		return fmt.Sprintf("Header(%q, %d)", e.typ, e.length)
	}
	if e.dataNil {
		return fmt.Sprintf("Body(%q, nil)", e.typ)
	}
	return fmt.Sprintf("Body(%q, %d bytes %.20q)", e.typ, len(e.data), e.data)
}

// recorder is a Handler that records every callback, copying bodies (they are only valid
// during the call). failAt > 0 makes the failAt-th callback return errStop.
type recorder struct {
	events []event
	failAt int
}

var errStop = errors.New("handler stop")

func (r *recorder) add(e event) error {
	r.events = append(r.events, e)
	if r.failAt > 0 && len(r.events) == r.failAt {
		return errStop
	}
	return nil
}

func (r *recorder) Header(typ byte, length uint32) error {
	return r.add(event{typ: typ, length: length})
}

func (r *recorder) Body(typ byte, body []byte) error {
	return r.add(event{body: true, typ: typ, data: string(body), dataNil: body == nil})
}

var _ Handler = (*recorder)(nil)

// stream is a run of encoded messages with the callbacks a scanner wanting want must make and
// the offsets at which it stands at a message boundary.
type stream struct {
	data       []byte
	events     []event
	boundaries map[int]bool
}

func buildStream(t testing.TB, want string, msgs ...pgproto3.Message) stream {
	t.Helper()
	s := stream{boundaries: map[int]bool{0: true}}
	for _, m := range msgs {
		b := encode(t, m)
		typ, length, body := b[0], binary.BigEndian.Uint32(b[1:5]), b[5:]
		if int(length) != len(b)-1 {
			t.Fatalf("%T encodes length %d for %d bytes", m, length, len(b))
		}
		s.data = append(s.data, b...)
		s.boundaries[len(s.data)] = true
		s.events = append(s.events, event{typ: typ, length: length})
		if strings.IndexByte(want, typ) >= 0 {
			if len(body) > maxCapture {
				s.events = append(s.events, event{body: true, typ: typ, dataNil: true})
			} else {
				s.events = append(s.events, event{body: true, typ: typ, data: string(body)})
			}
		}
	}
	return s
}

func dataRow(sizes ...int) *pgproto3.DataRow {
	row := &pgproto3.DataRow{}
	for i, n := range sizes {
		if n < 0 {
			row.Values = append(row.Values, nil) // SQL NULL
			continue
		}
		row.Values = append(row.Values, bytes.Repeat([]byte{byte('a' + i%26)}, n))
	}
	return row
}

// backendMessages is a realistic server stream: login, a few queries, a large result, notices.
func backendMessages() []pgproto3.Message {
	return []pgproto3.Message{
		&pgproto3.AuthenticationOk{},
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.8"},
		&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"},
		&pgproto3.ParameterStatus{Name: "application_name", Value: strings.Repeat("n", 600)},
		&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
			{Name: []byte("id"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1},
			{Name: []byte("payload"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
		}},
		dataRow(1, 10),
		dataRow(1, -1),
		dataRow(2, 499),   // body of 2 + 4+2 + 4+499 = 511 bytes: under the capture bound
		dataRow(2, 500),   // 512 = maxCapture: still captured
		dataRow(2, 501),   // 513: one over, delivered as nil
		dataRow(4, 5000),  // well over
		dataRow(4, 70000), // spans many 4096-byte chunks
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 7")},
		&pgproto3.ReadyForQuery{TxStatus: 'T'},
		&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello"},
		&pgproto3.EmptyQueryResponse{},
		&pgproto3.NoData{},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "relation does not exist"},
		&pgproto3.ReadyForQuery{TxStatus: 'E'},
		&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"},
		&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: secretOf(32)},
		&pgproto3.NotificationResponse{PID: 1, Channel: "ch", Payload: "p"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
}

// backendWant includes 'I' (EmptyQueryResponse, empty body) and 'n' (NoData, empty body) to
// check that an empty wanted body is delivered as empty, not as the "too long" nil.
const backendWant = "KSZDIn"

func TestStreamHasCaptureEdges(t *testing.T) {
	// The stream must hold wanted bodies of exactly maxCapture and maxCapture+1 bytes, or the
	// bound is not tested.
	s := buildStream(t, backendWant, backendMessages()...)
	var sizes []int
	for _, e := range s.events {
		if e.body && !e.dataNil {
			sizes = append(sizes, len(e.data))
		}
		if !e.body {
			sizes = append(sizes, int(e.length)-4)
		}
	}
	for _, n := range []int{0, maxCapture, maxCapture + 1} {
		if !slices.Contains(sizes, n) {
			t.Errorf("no message with a %d-byte body in the stream", n)
		}
	}
}

// split cuts data into chunks of the given sizes, cycling through them.
func split(data []byte, sizes ...int) [][]byte {
	var chunks [][]byte
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		chunks = append(chunks, data[:n])
		data = data[n:]
	}
	return chunks
}

func randomSplit(rng *rand.Rand, data []byte) [][]byte {
	var chunks [][]byte
	for len(data) > 0 {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1 + rng.IntN(6) // inside a header
		case 1:
			n = 1 + rng.IntN(600)
		default:
			n = 1 + rng.IntN(20000)
		}
		n = min(n, len(data))
		chunks = append(chunks, data[:n])
		data = data[n:]
	}
	return chunks
}

// feedChunks feeds chunks one by one, checking AtBoundary after each against the stream.
func feedChunks(t *testing.T, s *Scanner, st stream, chunks [][]byte) []event {
	t.Helper()
	var rec recorder
	off := 0
	for _, c := range chunks {
		if err := s.Feed(c, &rec); err != nil {
			t.Fatalf("Feed at offset %d: %v", off, err)
		}
		off += len(c)
		if got, want := s.AtBoundary(), st.boundaries[off]; got != want {
			t.Fatalf("AtBoundary() = %v after %d bytes, want %v", got, off, want)
		}
	}
	return rec.events
}

func checkEvents(t *testing.T, got, want []event) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i].String()
		}
		if i < len(want) {
			w = want[i].String()
		}
		if g != w || (i < len(got) && i < len(want) && got[i] != want[i]) {
			t.Fatalf("callback %d: got %s, want %s (%d callbacks, want %d)", i, g, w, len(got), len(want))
		}
	}
}

func TestBackendScannerSplits(t *testing.T) {
	st := buildStream(t, backendWant, backendMessages()...)
	splits := map[string][][]byte{"whole": {st.data}}
	for _, n := range []int{1, 2, 3, 5, 7, 4096} {
		splits[fmt.Sprintf("chunks of %d", n)] = split(st.data, n)
	}
	splits["chunks of 1,4,1,5,6"] = split(st.data, 1, 4, 1, 5, 6)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		splits[fmt.Sprintf("random %d", i)] = randomSplit(rng, st.data)
	}
	for name, chunks := range splits {
		t.Run(name, func(t *testing.T) {
			s := NewBackendScanner([]byte(backendWant)...)
			checkEvents(t, feedChunks(t, s, st, chunks), st.events)
		})
	}
}

// TestScannerReuse feeds the stream twice through one Scanner: the capture buffer it reuses
// must not leak the first pass into the second.
func TestScannerReuse(t *testing.T) {
	st := buildStream(t, backendWant, backendMessages()...)
	s := NewBackendScanner([]byte(backendWant)...)
	for pass := range 2 {
		t.Run(fmt.Sprint("pass ", pass), func(t *testing.T) {
			checkEvents(t, feedChunks(t, s, st, split(st.data, 3, 1000)), st.events)
		})
	}
}

func TestScannerWantsNothing(t *testing.T) {
	st := buildStream(t, "", backendMessages()...)
	for _, e := range st.events {
		if e.body {
			t.Fatal("stream built with bodies")
		}
	}
	checkEvents(t, feedChunks(t, NewBackendScanner(), st, split(st.data, 7)), st.events)
}

func TestScannerEmptyFeed(t *testing.T) {
	s := NewBackendScanner('Z')
	var rec recorder
	if err := s.Feed(nil, &rec); err != nil || len(rec.events) > 0 || !s.AtBoundary() {
		t.Fatalf("Feed(nil) = %v, events %v, AtBoundary %v", err, rec.events, s.AtBoundary())
	}
	// Mid-header, an empty chunk changes nothing.
	z := encode(t, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := s.Feed(z[:2], &rec); err != nil || s.AtBoundary() {
		t.Fatalf("after 2 bytes: %v, AtBoundary %v", err, s.AtBoundary())
	}
	if err := s.Feed([]byte{}, &rec); err != nil || s.AtBoundary() || len(rec.events) > 0 {
		t.Fatalf("after empty chunk: %v, AtBoundary %v, events %v", err, s.AtBoundary(), rec.events)
	}
	if err := s.Feed(z[2:], &rec); err != nil || !s.AtBoundary() {
		t.Fatalf("after the rest: %v, AtBoundary %v", err, s.AtBoundary())
	}
	checkEvents(t, rec.events, []event{{typ: 'Z', length: 5}, {body: true, typ: 'Z', data: "I"}})
}

// TestScannerHeaderBeforeBody checks Header comes as soon as the 5-byte header is complete,
// before any body byte, and that AtBoundary is false until the body is through.
func TestScannerHeaderBeforeBody(t *testing.T) {
	msg := encode(t, dataRow(1000))
	s := NewBackendScanner()
	var rec recorder
	if err := s.Feed(msg[:5], &rec); err != nil {
		t.Fatal(err)
	}
	checkEvents(t, rec.events, []event{{typ: 'D', length: uint32(len(msg) - 1)}})
	if s.AtBoundary() {
		t.Fatal("AtBoundary() true with the body outstanding")
	}
	if err := s.Feed(msg[5:len(msg)-1], &rec); err != nil || s.AtBoundary() {
		t.Fatalf("one byte short: %v, AtBoundary %v", err, s.AtBoundary())
	}
	if err := s.Feed(msg[len(msg)-1:], &rec); err != nil || !s.AtBoundary() {
		t.Fatalf("complete: %v, AtBoundary %v", err, s.AtBoundary())
	}
	if len(rec.events) != 1 {
		t.Fatalf("extra callbacks: %v", rec.events)
	}
}

func TestScannerHandlerError(t *testing.T) {
	st := buildStream(t, backendWant, backendMessages()...)
	for _, failAt := range []int{1, 2, 3, 10, len(st.events)} {
		for _, chunk := range []int{1, 4096, len(st.data)} {
			s := NewBackendScanner([]byte(backendWant)...)
			rec := recorder{failAt: failAt}
			var err error
			for _, c := range split(st.data, chunk) {
				if err = s.Feed(c, &rec); err != nil {
					break
				}
			}
			if !errors.Is(err, errStop) {
				t.Errorf("failAt %d, chunks of %d: Feed = %v, want the handler's error", failAt, chunk, err)
			}
			checkEvents(t, rec.events, st.events[:failAt])
		}
	}
}

func frontendMessages() []pgproto3.Message {
	return []pgproto3.Message{
		&pgproto3.PasswordMessage{Password: "secret"},
		&pgproto3.Query{String: "SELECT 1"},
		&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int", ParameterOIDs: []uint32{23}},
		&pgproto3.Bind{DestinationPortal: "", PreparedStatement: "s1", Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Flush{},
		&pgproto3.Sync{},
		&pgproto3.Close{ObjectType: 'S', Name: "s1"},
		&pgproto3.Query{String: "COPY t FROM STDIN"},
		&pgproto3.CopyData{Data: bytes.Repeat([]byte("row\n"), 300)},
		&pgproto3.CopyDone{},
		&pgproto3.CopyFail{Message: "stop"},
		&pgproto3.FunctionCall{Function: 1, Arguments: [][]byte{[]byte("x")}, ResultFormatCode: 0},
		&pgproto3.Query{String: strings.Repeat("x", 2000)},
		&pgproto3.Terminate{},
	}
}

func TestFrontendScannerSplits(t *testing.T) {
	const want = "QX" // Terminate has an empty body
	st := buildStream(t, want, frontendMessages()...)
	for _, n := range []int{1, 2, 3, 5, 7, 4096, len(st.data)} {
		t.Run(fmt.Sprint("chunks of ", n), func(t *testing.T) {
			s := NewFrontendScanner([]byte(want)...)
			checkEvents(t, feedChunks(t, s, st, split(st.data, n)), st.events)
		})
	}
}

func header(typ byte, length uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{typ}, length)
}

// feedAll feeds data in chunks of n and returns the callbacks and the first error.
func feedAll(s *Scanner, data []byte, n int) ([]event, error) {
	var rec recorder
	for _, c := range split(data, n) {
		if err := s.Feed(c, &rec); err != nil {
			return rec.events, err
		}
	}
	return rec.events, nil
}

func TestFrontendScannerRejectsType(t *testing.T) {
	q := encode(t, &pgproto3.Query{String: "SELECT 1"})
	for _, typ := range []byte{0, 'Z', 'K', 'T', 'q', 0xff} {
		for _, n := range []int{1, 3, 4096} {
			// A good message first: it is reported, then the bad one stops the scan.
			data := append(bytes.Clone(q), header(typ, 4)...)
			events, err := feedAll(NewFrontendScanner('Q'), data, n)
			if !isProtocolError(err) {
				t.Errorf("type %q, chunks of %d: Feed = %v, want a *ProtocolError", typ, n, err)
			}
			checkEvents(t, events, []event{{typ: 'Q', length: uint32(len(q) - 1)}, {body: true, typ: 'Q', data: string(q[5:])}})
		}
	}
	// The backend scanner does not judge types: a server speaks a protocol pgfront may not know.
	events, err := feedAll(NewBackendScanner(), header(0, 4), 1)
	if err != nil {
		t.Errorf("backend scanner refused type 0: %v", err)
	}
	checkEvents(t, events, []event{{typ: 0, length: 4}})
}

func TestScannerRejectsLength(t *testing.T) {
	scanners := map[string]func() *Scanner{
		"frontend": func() *Scanner { return NewFrontendScanner('Q') },
		"backend":  func() *Scanner { return NewBackendScanner('Q') },
	}
	for name, mk := range scanners {
		for _, length := range []uint32{0, 1, 2, 3, MaxMessageLen + 1, 1 << 31, 1<<32 - 1} {
			for _, n := range []int{1, 2, 4096} {
				events, err := feedAll(mk(), header('Q', length), n)
				if !isProtocolError(err) {
					t.Errorf("%s, length %d, chunks of %d: Feed = %v, want a *ProtocolError", name, length, n, err)
				}
				if len(events) > 0 {
					t.Errorf("%s, length %d: callbacks %v before the error", name, length, events)
				}
			}
		}
		// The largest legal length is announced without buffering anything.
		s := mk()
		events, err := feedAll(s, append(header('Q', MaxMessageLen), "partial"...), 4096)
		if err != nil {
			t.Errorf("%s: MaxMessageLen refused: %v", name, err)
		}
		checkEvents(t, events, []event{{typ: 'Q', length: MaxMessageLen}})
		if s.AtBoundary() {
			t.Errorf("%s: AtBoundary() inside a MaxMessageLen body", name)
		}
	}
}

// TestScannerSteadyStateAllocs checks the hot path allocates nothing once warm, wanted
// bodies included.
func TestScannerSteadyStateAllocs(t *testing.T) {
	st := buildStream(t, backendWant, backendMessages()...)
	chunks := split(st.data, 4096)
	s := NewBackendScanner([]byte(backendWant)...)
	var h nopHandler
	allocs := testing.AllocsPerRun(20, func() {
		for _, c := range chunks {
			if err := s.Feed(c, h); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per pass, want 0", allocs)
	}
}

type nopHandler struct{}

func (nopHandler) Header(byte, uint32) error { return nil }
func (nopHandler) Body(byte, []byte) error   { return nil }

// benchStream is what a server sends for a few typical queries: a result of 200 rows of
// about 120 bytes, a small result, and the status messages in between.
func benchStream(b *testing.B) []byte {
	var msgs []pgproto3.Message
	for range 4 {
		msgs = append(msgs,
			&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
				{Name: []byte("id"), DataTypeOID: 20, DataTypeSize: 8, TypeModifier: -1},
				{Name: []byte("name"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
				{Name: []byte("created"), DataTypeOID: 1184, DataTypeSize: 8, TypeModifier: -1},
			}})
		for range 200 {
			msgs = append(msgs, dataRow(6, 80, 22))
		}
		msgs = append(msgs,
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 200")},
			&pgproto3.ReadyForQuery{TxStatus: 'T'},
			&pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
			&pgproto3.CommandComplete{CommandTag: []byte("UPDATE 1")},
			&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"},
			&pgproto3.ReadyForQuery{TxStatus: 'I'},
		)
	}
	var data []byte
	for _, m := range msgs {
		data = append(data, encode(b, m)...)
	}
	return data
}

func BenchmarkScannerBackend(b *testing.B) {
	data := benchStream(b)
	for _, size := range []int{1460, 16 << 10, 64 << 10} { // a TCP segment, io.Copy-sized reads
		chunks := split(data, size)
		b.Run(fmt.Sprintf("chunk=%d", size), func(b *testing.B) {
			s := NewBackendScanner('K', 'S', 'Z')
			var h nopHandler
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				for _, c := range chunks {
					if err := s.Feed(c, h); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// TestScannerEmptyWantedBody checks an empty wanted body (Terminate) arrives as an empty
// slice, not as the nil that means "too long to capture", even as the scanner's first capture.
func TestScannerEmptyWantedBody(t *testing.T) {
	for _, n := range []int{1, 5} {
		events, err := feedAll(NewFrontendScanner('X'), encode(t, &pgproto3.Terminate{}), n)
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, events, []event{{typ: 'X', length: 4}, {body: true, typ: 'X'}})
	}
}

// TestScannerKeyRewrite: a BackendKeyData's secret is replaced in the fed bytes whatever
// chunks the stream arrives in (split inside the header, the process id or the secret), for
// 4-byte and protocol 3.2 secrets; Body gets the server's secret, IssuedSecret the new one,
// and every other byte passes unchanged.
func TestScannerKeyRewrite(t *testing.T) {
	for _, secretLen := range []int{4, 32} {
		server := bytes.Repeat([]byte{0xAA}, secretLen)
		var stream []byte
		stream = append(stream, 'R', 0, 0, 0, 8, 0, 0, 0, 0) // AuthenticationOk
		key := (&pgproto3.BackendKeyData{ProcessID: 0x01020304, SecretKey: server})
		stream, _ = key.Encode(stream)
		stream = append(stream, 'Z', 0, 0, 0, 5, 'I')
		kAt := 9
		for split1 := 1; split1 < len(stream); split1++ {
			for split2 := split1; split2 < len(stream); split2++ {
				var issuedPID uint32
				calls := 0
				sc := NewBackendScanner('K', 'Z')
				sc.SetKeyRewrite(func(pid uint32, secret []byte) {
					calls++
					issuedPID = pid
					for i := range secret {
						secret[i] = byte(0x10 + i)
					}
				})
				h := &keyRecorder{sc: sc}
				buf := slices.Clone(stream)
				for _, chunk := range [][]byte{buf[:split1], buf[split1:split2], buf[split2:]} {
					if err := sc.Feed(chunk, h); err != nil {
						t.Fatal(err)
					}
				}
				if calls != 1 || issuedPID != 0x01020304 {
					t.Fatalf("len %d split %d/%d: issue called %d times, pid %#x", secretLen, split1, split2, calls, issuedPID)
				}
				want := slices.Clone(stream)
				for i := range secretLen {
					want[kAt+9+i] = byte(0x10 + i)
				}
				if !bytes.Equal(buf, want) {
					t.Fatalf("len %d split %d/%d: forwarded\n%x\nwant\n%x", secretLen, split1, split2, buf, want)
				}
				if !bytes.Equal(h.body[4:], server) || !bytes.Equal(h.issued, want[kAt+9:kAt+9+secretLen]) {
					t.Fatalf("len %d split %d/%d: Body got secret %x, issued %x", secretLen, split1, split2, h.body[4:], h.issued)
				}
			}
		}
	}
}

// keyRecorder keeps the BackendKeyData body and the issued secret.
type keyRecorder struct {
	sc           *Scanner
	body, issued []byte
}

func (r *keyRecorder) Header(byte, uint32) error { return nil }
func (r *keyRecorder) Body(typ byte, body []byte) error {
	if typ == 'K' {
		r.body, r.issued = slices.Clone(body), slices.Clone(r.sc.IssuedSecret())
	}
	return nil
}
