package fleet

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/pgwire"
)

var authKey = derive(testSecret, "pgfront peer channel")

// TestRequestRoundTrip: a signed request decodes to what was sent.
func TestRequestRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	req := Request{Key: pgwire.CancelKey{ProcessID: 4242, Secret: "\x00\x01\x02\xff"}, Route: "rw"}
	body, ts, sig := EncodeRequest(authKey, req, now)
	got, err := DecodeRequest(authKey, ts, sig, body, now.Add(10*time.Second))
	if err != nil || got != req {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, req)
	}
}

// TestRequestRefused: a wrong key, a tampered body, a timestamp outside ±30s, a missing or
// malformed signature, and malformed bodies are refused.
func TestRequestRefused(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	req := Request{Key: pgwire.CancelKey{ProcessID: 1, Secret: "abcd"}, Route: "rw"}
	body, ts, sig := EncodeRequest(authKey, req, now)
	signed := func(b string) (string, string, []byte) {
		return ts, sign(authKey, ts, []byte(b)), []byte(b)
	}
	cases := []struct {
		name     string
		key      []byte
		ts, sig  string
		body     []byte
		at       time.Time
		wantAuth bool
	}{
		{"other key", derive([]byte("another secret of enough length!!"), "pgfront peer channel"), ts, sig, body, now, true},
		{"no key here", nil, ts, sig, body, now, true},
		{"tampered body", authKey, ts, sig, []byte(strings.Replace(string(body), `"rw"`, `"ro"`, 1)), now, true},
		{"stale", authKey, ts, sig, body, now.Add(31 * time.Second), true},
		{"from the future", authKey, ts, sig, body, now.Add(-31 * time.Second), true},
		{"no signature", authKey, ts, "", body, now, true},
		{"short signature", authKey, ts, sig[:10], body, now, true},
		{"timestamp not a number", authKey, "x", sign(authKey, "x", body), body, now, true},
	}
	for _, b := range []string{`{"pid":1,"secret":"YWI=","route":"rw"}`, `{"pid":1,"secret":"YWJjZA==","x":1}`,
		`{"pid":1,"secret":"YWJjZA=="}{}`, `[]`, `{"pid":-1,"secret":"YWJjZA=="}`} {
		ts, sig, body := signed(b)
		cases = append(cases, struct {
			name     string
			key      []byte
			ts, sig  string
			body     []byte
			at       time.Time
			wantAuth bool
		}{"malformed " + b, authKey, ts, sig, body, now, false})
	}
	for _, c := range cases {
		_, err := DecodeRequest(c.key, c.ts, c.sig, c.body, c.at)
		if c.wantAuth && !errors.Is(err, ErrAuth) || !c.wantAuth && !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
}

// TestForwardAndHandler: Forward asks the peers, a peer's Handler offers the key to its local
// sessions only; an unknown key is answered unknown; the sender learns the peer's tag and then
// asks only peers with the key's tag; a request with a bad signature gets 403.
func TestForwardAndHandler(t *testing.T) {
	a, b := New(Options{}), New(Options{})
	a.Configure(testSecret, "a")
	b.Configure(testSecret, "b")
	var asked atomic.Int32
	own := pgwire.CancelKey{ProcessID: 7}
	sec := make([]byte, 4)
	b.Issue(7, sec)
	own.Secret = string(sec)
	srv := httptest.NewServer(b.Handler(func(req Request) bool {
		asked.Add(1)
		return req.Key == own
	}))
	defer srv.Close()
	a.SetPeers("config", []Peer{{Addr: srv.URL}})
	if p, ok, err := a.Forward(own, "rw"); !ok || err != nil || p != srv.URL {
		t.Fatalf("Forward(own) = %q, %v, %v", p, ok, err)
	}
	// Tag learned: a key issued by a (another tag) is not asked of b.
	a.Issue(7, sec)
	mine := pgwire.CancelKey{ProcessID: 7, Secret: string(sec)}
	before := asked.Load()
	if _, ok, err := a.Forward(mine, "rw"); ok || err != nil || asked.Load() != before {
		t.Fatalf("Forward(key tagged a) = %v, %v; b asked %d times", ok, err, asked.Load()-before)
	}
	// A key with b's tag that b does not have: unknown, no error.
	b.Issue(8, sec)
	if _, ok, err := a.Forward(pgwire.CancelKey{ProcessID: 8, Secret: string(sec)}, "rw"); ok || err != nil {
		t.Fatalf("Forward(unknown key tagged b) = %v, %v", ok, err)
	}

	// A bad signature: 403, counted, and the local canceller is not asked.
	body, ts, _ := EncodeRequest(authKey, Request{Key: own}, time.Now())
	hr, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, strings.NewReader(string(body)))
	hr.Header.Set(HeaderTimestamp, ts)
	hr.Header.Set(HeaderSignature, strings.Repeat("00", 32))
	before = asked.Load()
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || asked.Load() != before || b.Counters().Refused != 1 {
		t.Fatalf("bad signature: %s, asked %d, refused %d", resp.Status, asked.Load()-before, b.Counters().Refused)
	}
	http.DefaultClient.CloseIdleConnections()
	a.client.CloseIdleConnections()
}

// TestForwardPeerDown: a peer that does not answer is an error, within ForwardTimeout.
func TestForwardPeerDown(t *testing.T) {
	a := New(Options{})
	a.Configure(testSecret, "a")
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close() // nothing listens there now
	a.SetPeers("config", []Peer{{Addr: addr}})
	start := time.Now()
	_, ok, err := a.Forward(pgwire.CancelKey{ProcessID: 1, Secret: "abcd"}, "rw")
	if ok || !errors.Is(err, ErrNoPeer) || time.Since(start) > 2*ForwardTimeout {
		t.Fatalf("Forward to a peer that is down = %v, %v after %s", ok, err, time.Since(start))
	}
	// Without a fleet secret nothing is forwarded.
	n := New(Options{})
	n.SetPeers("config", []Peer{{Addr: addr}})
	if _, ok, err := n.Forward(pgwire.CancelKey{ProcessID: 1, Secret: "abcd"}, "rw"); ok || err != nil {
		t.Fatalf("Forward without a secret = %v, %v", ok, err)
	}
}

// TestSetPeersSources: the peer set is the union of the sources, by address.
func TestSetPeersSources(t *testing.T) {
	f := New(Options{})
	f.SetPeers("config", []Peer{{Addr: "a:1"}, {Addr: "b:1"}})
	f.SetPeers("dcs", []Peer{{Addr: "b:1"}, {Addr: "c:1", Name: "c"}})
	if got := f.Peers(); len(got) != 3 {
		t.Fatalf("peers = %v", got)
	}
	sources := func() string {
		var out []string
		for _, p := range f.PeerStatuses() {
			out = append(out, p.Addr+"="+p.Source)
		}
		return strings.Join(out, " ")
	}
	// A peer two sources give is shown with the first (by name).
	if got := sources(); got != "a:1=config b:1=config c:1=dcs" {
		t.Errorf("sources %s", got)
	}
	f.SetPeers("config", nil)
	if got := f.Peers(); len(got) != 2 || got[0].Addr != "b:1" || got[1].Addr != "c:1" {
		t.Fatalf("peers after config emptied = %v", got)
	}
	if got := sources(); got != "b:1=dcs c:1=dcs" {
		t.Errorf("sources after config emptied: %s", got)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	body, ts, _ := EncodeRequest(authKey, Request{Key: pgwire.CancelKey{ProcessID: 1, Secret: "abcd"}, Route: "rw"}, now)
	for _, b := range []string{string(body), `{}`, `{"pid":1,"secret":"","route":""}`, `[`, "", `null`,
		`{"pid":4294967296,"secret":"YWJjZA=="}`, `{"secret":"` + strings.Repeat("QUFB", 100) + `"}`} {
		f.Add(ts, b)
	}
	f.Fuzz(func(t *testing.T, ts, body string) {
		// Signed correctly, so the decoder past the signature is what is fuzzed.
		req, err := DecodeRequest(authKey, ts, sign(authKey, ts, []byte(body)), []byte(body), now)
		if err != nil {
			return
		}
		if n := len(req.Key.Secret); n < 4 || n > 256 || len(req.Route) > maxRouteLen {
			t.Fatalf("accepted %q: secret of %d bytes, route %q", body, n, req.Route)
		}
		if again, _, _ := EncodeRequest(authKey, req, now); len(again) > MaxBody+512 {
			t.Fatalf("re-encoded to %d bytes", len(again))
		}
	})
}

func FuzzOwner(f *testing.F) {
	k := NewKeys(testSecret, "x")
	f.Add(uint32(1), "abcd")
	f.Add(uint32(0), "")
	f.Fuzz(func(t *testing.T, pid uint32, secret string) {
		tag, ok := k.Owner(pgwire.CancelKey{ProcessID: pid, Secret: secret})
		if ok != (len(secret) >= 4) || (!ok && tag != 0) {
			t.Fatalf("Owner(%d, %q) = %d, %v", pid, secret, tag, ok)
		}
	})
}

// TestInFlightBound: peer requests beyond the in-flight bound are dropped and counted, on the
// sending side and on the receiving side, instead of piling up.
func TestInFlightBound(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	recv := New(Options{MaxInFlight: 1})
	recv.Configure(testSecret, "b")
	srv := httptest.NewServer(recv.Handler(func(Request) bool {
		entered <- struct{}{}
		<-release
		return false
	}))
	defer srv.Close()

	// Receiving side: one request held, the next refused with 503 and counted.
	send := New(Options{MaxInFlight: 2})
	send.Configure(testSecret, "a")
	send.SetPeers("config", []Peer{{Addr: srv.URL}})
	done := make(chan error, 1)
	go func() {
		_, _, err := send.Forward(pgwire.CancelKey{ProcessID: 1, Secret: "abcd"}, "rw")
		done <- err
	}()
	<-entered
	if _, ok, err := send.Forward(pgwire.CancelKey{ProcessID: 2, Secret: "abcd"}, "rw"); ok || err == nil {
		t.Fatalf("second Forward while the receiver is full = %v, %v", ok, err)
	}
	if c := recv.Counters(); c.DroppedIn != 1 {
		t.Fatalf("receiver dropped %d, want 1", c.DroppedIn)
	}

	// Sending side: with one slot taken by the held request, a sender bounded to 1 drops.
	one := New(Options{MaxInFlight: 1})
	one.Configure(testSecret, "a")
	one.SetPeers("config", []Peer{{Addr: srv.URL}})
	one.out <- struct{}{} // the slot is in use
	if _, ok, err := one.Forward(pgwire.CancelKey{ProcessID: 3, Secret: "abcd"}, "rw"); ok || !errors.Is(err, ErrNoPeer) {
		t.Fatalf("Forward over the sending bound = %v, %v", ok, err)
	}
	<-one.out
	if c := one.Counters(); c.DroppedOut != 1 {
		t.Fatalf("sender dropped %d, want 1", c.DroppedOut)
	}
	close(release)
	<-done
	send.client.CloseIdleConnections()
}

// TestLearnedTagExpires: a configured peer renamed after its tag was learned (a new host name
// after a restart) is asked again once the learned tag is a minute old, and its answer
// teaches the new tag.
func TestLearnedTagExpires(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	a, b := New(Options{Now: now}), New(Options{Now: now})
	a.Configure(testSecret, "a")
	b.Configure(testSecret, "b")
	var keys sync.Map
	srv := httptest.NewServer(b.Handler(func(req Request) bool { _, ok := keys.Load(req.Key); return ok }))
	defer srv.Close()
	defer a.client.CloseIdleConnections()
	a.SetPeers("config", []Peer{{Addr: srv.URL}})
	issue := func(pid uint32) pgwire.CancelKey {
		sec := make([]byte, 4)
		b.Issue(pid, sec)
		k := pgwire.CancelKey{ProcessID: pid, Secret: string(sec)}
		keys.Store(k, true)
		return k
	}
	if _, ok, err := a.Forward(issue(1), "rw"); !ok || err != nil {
		t.Fatalf("first forward: %v, %v", ok, err)
	}
	// Renamed: b's keys carry another tag (names chosen so the tags differ).
	if TagOf("b") == TagOf("b-renamed") {
		t.Fatal("test names share a tag")
	}
	b.Configure(testSecret, "b-renamed")
	k := issue(2)
	if _, ok, _ := a.Forward(k, "rw"); ok {
		t.Fatal("a key of the renamed b was forwarded while b's old tag was fresh")
	}
	clock.Add(int64(2 * time.Minute))
	if _, ok, err := a.Forward(k, "rw"); !ok || err != nil {
		t.Fatalf("after the learned tag expired: %v, %v", ok, err)
	}
}
