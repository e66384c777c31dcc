package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// Bounds of the peer channel.
const (
	// ForwardTimeout bounds one Forward, all peers asked included.
	ForwardTimeout = time.Second
	// DefaultMaxInFlight bounds the peer requests in flight from one instance, and those one
	// instance serves at once; excess requests are dropped and counted.
	DefaultMaxInFlight = 64
)

// Peer is another instance of the fleet.
type Peer struct {
	// Addr is the peer's admin listener: host:port (http), or an http:// or https:// URL base.
	Addr string
	// Name, if known (discovery), gives the peer's tag at once; "" until its first answer.
	Name string
}

// Options configure a Fleet.
type Options struct {
	// Logger gets the peer channel's refusals; nil discards them.
	Logger *slog.Logger
	// Client sends peer requests; nil: a client of its own.
	Client *http.Client
	// MaxInFlight bounds peer requests in flight each way; 0: DefaultMaxInFlight.
	MaxInFlight int
	// Now is the clock for signing and checking timestamps; nil: time.Now.
	Now func() time.Time
}

// Fleet is this instance's view of the fleet: its keys, its peers and the peer channel. Its
// methods are safe for concurrent use; Configure and SetPeers may be called at any time (a
// reload, discovery).
type Fleet struct {
	log    *slog.Logger
	client *http.Client
	now    func() time.Time
	out    chan struct{} // a slot per peer request in flight from here
	in     chan struct{} // a slot per peer request being served here

	state atomic.Pointer[state]

	mu struct {
		sync.Mutex
		sources map[string][]Peer // the peers each source feeds
		peers   []*peer           // their union; each peer's tag is atomic
	}

	// refusalLog limits the refused-request log lines (a flood of forged requests must not
	// flood the log); every refusal is counted regardless.
	refusalLog *rate.Limiter

	// Counters: peer requests dropped over the in-flight bound (sent, received), and
	// received requests refused (authentication or decoding).
	droppedOut, droppedIn, refused atomic.Uint64
}

// state is what Configure sets: replaced whole.
type state struct {
	keys    *Keys
	authKey []byte // nil: no fleet secret; the peer channel is closed both ways
}

// peer is one peer and the tag it last answered with (-1: not known yet).
type peer struct {
	Peer
	source string // the first source (in name order) that gives it; guarded by Fleet.mu
	url    string
	tag    atomic.Int32
	// learned is when tag was last learned from the peer's answer (unix ns); 0 for a tag
	// derived from the peer's name (discovery) or not known yet.
	learned atomic.Int64
}

// learnedTagTTL is how long a tag learned from a configured peer's answer is trusted alone:
// the peer may have been renamed since (its default name is its host name, which a restart
// may change), so after this it is asked again whatever the key's tag, and its answer
// refreshes the tag.
const learnedTagTTL = time.Minute

// tagStale reports whether p's tag was learned from an answer longer than learnedTagTTL ago.
func (p *peer) tagStale(now time.Time) bool {
	l := p.learned.Load()
	return l != 0 && now.Sub(time.Unix(0, l)) > learnedTagTTL
}

// New returns a Fleet with keys of its own (no fleet secret) and no peers.
func New(opts Options) *Fleet {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		// No keep-alive: cancels are rare, and an idle connection would be a goroutine with no
		// owner to stop it. No HTTP proxy from the environment: peers are reached directly.
		opts.Client = &http.Client{Timeout: ForwardTimeout, Transport: &http.Transport{
			DisableKeepAlives:      true,
			TLSHandshakeTimeout:    ForwardTimeout,
			MaxResponseHeaderBytes: 16 << 10,
		},
			// A redirect would send the signed request somewhere else: a peer answers, or
			// the request failed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	f := &Fleet{log: opts.Logger, client: opts.Client, now: opts.Now, refusalLog: rate.NewLimiter(1, 5),
		out: make(chan struct{}, opts.MaxInFlight), in: make(chan struct{}, opts.MaxInFlight)}
	f.state.Store(&state{keys: NewKeys(nil, "")})
	return f
}

// Configure sets the fleet secret (nil: none) and this instance's name. Keys issued before a
// change of secret are still honoured here (the sessions are looked up by key), but peers can
// no longer read their tag: their cancels take the fallback.
func (f *Fleet) Configure(secret []byte, name string) {
	cur := f.state.Load()
	if secret == nil && cur.authKey == nil && cur.keys.Tag() == TagOf(name) {
		return // keep the random keys: a reload without a fleet changes nothing
	}
	st := &state{keys: NewKeys(secret, name)}
	if secret != nil {
		st.authKey = PeerKey(secret)
	}
	f.state.Store(st)
}

// Tag is this instance's tag.
func (f *Fleet) Tag() byte { return f.state.Load().keys.Tag() }

// Issue fills secret with a new cancel secret for process id pid (see Keys.Issue).
func (f *Fleet) Issue(pid uint32, secret []byte) { f.state.Load().keys.Issue(pid, secret) }

// SetPeers replaces the peers one source feeds ("config" for the static list, a discovery's
// own name for what it finds): the peer set is the union of every source's, by address. Peers
// kept by address and name keep the tag they answered with.
func (f *Fleet) SetPeers(source string, peers []Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.sources == nil {
		f.mu.sources = make(map[string][]Peer)
	}
	if len(peers) == 0 {
		delete(f.mu.sources, source)
	} else {
		f.mu.sources[source] = slices.Clone(peers)
	}
	var next []*peer
	for _, src := range slices.Sorted(maps.Keys(f.mu.sources)) {
		for _, p := range f.mu.sources[src] {
			if slices.ContainsFunc(next, func(o *peer) bool { return o.Addr == p.Addr }) {
				continue
			}
			if i := slices.IndexFunc(f.mu.peers, func(o *peer) bool { return o.Addr == p.Addr && o.Name == p.Name }); i >= 0 {
				f.mu.peers[i].source = src
				next = append(next, f.mu.peers[i])
				continue
			}
			np := &peer{Peer: p, source: src, url: peerURL(p.Addr)}
			np.tag.Store(-1)
			if p.Name != "" {
				np.tag.Store(int32(TagOf(p.Name)))
			}
			next = append(next, np)
		}
	}
	f.mu.peers = next
}

// Peers is the current peer set.
func (f *Fleet) Peers() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Peer, len(f.mu.peers))
	for i, p := range f.mu.peers {
		out[i] = p.Peer
	}
	return out
}

// PeerStatus is a peer, the source that gives it ("config", a discovery's name) and the tag
// it answered with or its name gives (-1: not known yet).
type PeerStatus struct {
	Peer
	Source string
	Tag    int
}

// PeerStatuses is the current peer set with each peer's tag.
func (f *Fleet) PeerStatuses() []PeerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PeerStatus, len(f.mu.peers))
	for i, p := range f.mu.peers {
		out[i] = PeerStatus{Peer: p.Peer, Source: p.source, Tag: int(p.tag.Load())}
	}
	return out
}

// HasSecret reports whether a fleet secret is configured (the peer channel is open).
func (f *Fleet) HasSecret() bool { return f.state.Load().authKey != nil }

// peerURL is the peer cancel endpoint of an admin address.
func peerURL(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/") + PeerCancelPath
}

// Counters of the peer channel.
type Counters struct {
	// DroppedOut and DroppedIn are peer requests dropped over the in-flight bound, sent and
	// received; Refused are received requests refused (authentication, decoding).
	DroppedOut, DroppedIn, Refused uint64
}

// Counters returns the peer channel's counters.
func (f *Fleet) Counters() Counters {
	return Counters{DroppedOut: f.droppedOut.Load(), DroppedIn: f.droppedIn.Load(), Refused: f.refused.Load()}
}

// ErrNoPeer: peers that may own the key could not be asked (every request was dropped over
// the in-flight bound, or failed).
var ErrNoPeer = errors.New("no peer could be asked")

// Forward offers a CancelRequest no session here has to the peers whose tag is the key's
// owner tag (and those whose tag is not known yet), all at once, within ForwardTimeout. It
// returns the peer that had the session, or ok false: there was no peer to ask (no fleet
// secret, no peer with that tag) or every peer asked answered unknown (err nil), or the peers
// could not be asked or did not answer (err says why). It blocks its caller (a cancel
// connection's own goroutine) for at most ForwardTimeout.
func (f *Fleet) Forward(key pgwire.CancelKey, route string) (peerAddr string, ok bool, err error) {
	st := f.state.Load()
	if st.authKey == nil {
		return "", false, nil
	}
	tag, tagged := st.keys.Owner(key)
	f.mu.Lock()
	var targets []*peer
	now := f.now()
	for _, p := range f.mu.peers {
		if t := p.tag.Load(); !tagged || t < 0 || byte(t) == tag || p.tagStale(now) {
			targets = append(targets, p)
		}
	}
	f.mu.Unlock()
	if len(targets) == 0 {
		return "", false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ForwardTimeout)
	defer cancel()
	type answer struct {
		p   *peer
		ok  bool
		err error
	}
	answers := make(chan answer, len(targets)) // buffered: no asker is stranded
	var wg sync.WaitGroup
	asked := 0
	for _, p := range targets {
		select {
		case f.out <- struct{}{}:
		default:
			f.droppedOut.Add(1)
			continue
		}
		asked++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-f.out }()
			found, err := f.ask(ctx, st.authKey, p, Request{Key: key, Route: route})
			answers <- answer{p, found, err}
		}()
	}
	defer wg.Wait() // after cancel (deferred later, run first): the others end at once
	defer cancel()
	var errs []error
	for range asked {
		a := <-answers
		if a.ok {
			return a.p.Addr, true, nil
		}
		if a.err != nil {
			errs = append(errs, a.err)
		}
	}
	if asked == 0 {
		return "", false, fmt.Errorf("%w: %d requests in flight already", ErrNoPeer, cap(f.out))
	}
	if len(errs) == asked {
		return "", false, fmt.Errorf("%w: %w", ErrNoPeer, errors.Join(errs...))
	}
	return "", false, nil
}

// ask sends one peer request and reads its answer.
func (f *Fleet) ask(ctx context.Context, authKey []byte, p *peer, req Request) (bool, error) {
	body, ts, sig := EncodeRequest(authKey, req, f.now())
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("peer %s: %w", p.Addr, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(HeaderTimestamp, ts)
	hr.Header.Set(HeaderSignature, sig)
	resp, err := f.client.Do(hr)
	if err != nil {
		return false, fmt.Errorf("peer %s: %w", p.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("peer %s: %s", p.Addr, resp.Status)
	}
	var a Answer
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(&a); err != nil {
		return false, fmt.Errorf("peer %s: reading the answer: %w", p.Addr, err)
	}
	if a.Tag >= 0 && a.Tag <= 255 {
		p.tag.Store(int32(a.Tag))
		if p.Name == "" {
			p.learned.Store(f.now().UnixNano())
		}
	}
	return a.Result == AnswerForwarded, nil
}

// Handler serves the peer cancel endpoint: it authenticates the request, offers its key to
// local (this instance's own sessions only: a peer request is never forwarded again, so
// there are no loops) and answers forwarded or unknown. 403 for a request that fails
// authentication, 400 for a malformed one, 503 over the in-flight bound.
func (f *Fleet) Handler(local func(req Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			f.refused.Add(1)
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		st := f.state.Load()
		req, err := DecodeRequest(st.authKey, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, f.now())
		if err != nil {
			n := f.refused.Add(1)
			if f.refusalLog.Allow() {
				f.log.Warn("peer cancel request refused", "from", r.RemoteAddr, "err", err, "refused_total", n)
			}
			code := http.StatusForbidden
			if errors.Is(err, ErrBadRequest) {
				code = http.StatusBadRequest
			}
			http.Error(w, http.StatusText(code), code)
			return
		}
		// The in-flight bound is taken only now, for an authenticated request: a client that
		// trickles bodies or sends junk cannot hold the slots the peers need.
		select {
		case f.in <- struct{}{}:
			defer func() { <-f.in }()
		default:
			f.droppedIn.Add(1)
			http.Error(w, "too many peer requests", http.StatusServiceUnavailable)
			return
		}
		req.From = r.RemoteAddr
		a := Answer{Result: AnswerUnknown, Tag: int(st.keys.Tag())}
		if local(req) {
			a.Result = AnswerForwarded
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	})
}
