// Package frontend owns the route listeners: the accept loops, each session's start-up (first
// packet, SSL/GSSENC negotiation, cancel requests), admission under maxconn, the connection to
// a server, and every refusal, which a PostgreSQL client always receives as a FATAL
// ErrorResponse. Once a session is established it hands both connections to package relay; a
// plain route's sessions start on relay's event loops from accept (greet.go), and come back
// to a goroutine of their own for whatever a loop must not wait for.
//
//	f, err := frontend.New(frontend.Options{Routes: routes, Admission: adm, Global: global, Logger: log})
//	if err := f.Listen(); err != nil { ... }
//	go f.Serve()
//	...
//	f.Shutdown(ctx) // stop accepting, end sessions at idle points, hard stop when ctx ends
package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/resolve"
)

// Route is one listener serving one role of one cluster.
type Route struct {
	Name           string
	Listen         string // host:port
	Cluster        *cluster.Cluster
	Select         cluster.Selector // which servers the route may use: role, lag bounds, fallback
	Balancer       *balance.Balancer
	Limit          *admission.Limit // the route's maxconn
	ConnectRetries int              // extra servers tried after a failed connect

	Startup time.Duration // first packet; and, separately, the login
	Connect time.Duration // per connection attempt
	Queue   time.Duration // wait for a maxconn slot; 0 = refuse at once
	// FailoverWait bounds the wait, from the client's arrival, while the route has no eligible
	// server at all (a failover, a split brain); 0 = refuse at once.
	FailoverWait time.Duration
	// ClientTCP and ServerTCP find a peer that vanished without FIN or RST: keepalive and
	// TCP_USER_TIMEOUT of the route's client sockets, and of the sockets it dials to servers
	// (sessions and their cancel requests).
	ClientTCP, ServerTCP netx.KeepAlive
	// serverDialer dials with ServerTCP; Apply builds it once per route, so a session's
	// connect costs no dialer of its own.
	serverDialer *net.Dialer
	// serverSetup sets ServerTCP's options on a socket an event loop connects (greet.go); one
	// func value per route.
	serverSetup func(fd int) error
	// Relay holds the established session's bounds (idle, FIN) and on_client_fin.
	Relay relay.Options

	// TLS is what the route offers clients that ask for TLS.
	TLS RouteTLS
	// ServerTLS negotiates TLS with the cluster's servers (sessions and cancels); nil: plain.
	ServerTLS ServerTLS
	// CancelFallbackRate is how many CancelRequests per second no instance owns may be sent
	// to the route's servers (each to all eligible ones), with bursts of CancelFallbackBurst;
	// 0: none (such requests are dropped). The budget is kept across reloads by route name.
	CancelFallbackRate  float64
	CancelFallbackBurst int
	// ProxyProtocol, when non-nil, makes every connection start with a PROXY protocol header
	// (v1 or v2) from a trusted network, read within Startup before anything else (SSLRequest,
	// TLS ClientHello, passthrough); its client address is the one pgfront shows and logs.
	ProxyProtocol *ProxyProtocol
}

// ProxyProtocol is a route's PROXY protocol setting.
type ProxyProtocol struct {
	// Trusted are the source networks allowed to connect and send the header; a connection
	// from elsewhere is refused, and so is one from a trusted network without a header.
	Trusted []netip.Prefix
}

// trusts reports whether a connection from addr may send a PROXY protocol header.
func (p *ProxyProtocol) trusts(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, n := range p.Trusted {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// Options configure a Frontend.
type Options struct {
	// Routes are the routes Listen binds; later sets are given to Apply.
	Routes    []*Route
	Admission *admission.Controller
	Global    *admission.Limit // the global maxconn
	Logger    *slog.Logger
	// Listen opens a route's listener; nil (or a nil listener returned) means a TCP listener
	// on addr whose accepted conns get the route's client keepalive. The app passes one that claims a
	// listener handed over by a previous pgfront process.
	Listen func(route, addr string) (net.Listener, error)
	// OnFence is told when a primary route's session found srv to be a standby (the server is
	// already marked fenced); the health monitor should check it now. May be nil.
	OnFence func(srv *cluster.Server)
	// OnConnectFail is told when a connect to srv failed, so its health can be checked at
	// once rather than at the next interval. May be nil.
	OnConnectFail func(srv *cluster.Server)
	// Events is told what sessions do (metrics, admin views). May be nil.
	Events Events
	// ForwardCancel is offered a CancelRequest whose key no session here has, and reports
	// whether it was delivered elsewhere (to a previous process draining after an upgrade).
	// May be nil.
	ForwardCancel func(key pgwire.CancelKey) bool
	// PeerCancel is offered a CancelRequest whose key neither a session here nor
	// ForwardCancel took, with the route it arrived on; it asks the peer instances that may
	// own the key and returns the one that took it (ok), or why none could be asked (err).
	// It blocks for its own bound (a second). May be nil.
	PeerCancel func(key pgwire.CancelKey, route string) (peer string, ok bool, err error)
	// IssueKey, if set, issues the secret of the backend key each client sees instead of its
	// server's (see relay.Options.IssueKey); cancels are then looked up by the issued key and
	// sent with the server's. Must be cheap and never block.
	IssueKey func(pid uint32, secret []byte)
}

// Frontend serves every route. Its methods are safe for concurrent use.
type Frontend struct {
	opts     Options
	log      *slog.Logger
	registry *cluster.Registry[*session]
	events   Events

	ctx    context.Context // cancelled by Close: ends waits and dials
	cancel context.CancelFunc
	// issueKeyFn is issueKey as the relay option (nil without Options.IssueKey): one func
	// value for all sessions, not a method value allocated per session.
	issueKeyFn func(pid uint32, secret []byte)

	loops    sync.WaitGroup // accept loops
	sessions sync.WaitGroup // sessions not yet ended (on goroutines or event loops)
	bg       sync.WaitGroup // cancels StartCancel sends (Add under mu, until bgClosed)
	bgSlots  chan struct{}  // one per cancel StartCancel sends on its own goroutine
	nextID   atomic.Uint64

	evloops *relay.Loops // event loops that run plain-TCP sessions; nil if unavailable
	// resolved is where servers given by host name last connected: loops connect there
	// without a lookup, dials skip the DNS query (kept across reloads).
	resolved *resolve.Cache

	lines *connLog // one line per client connection

	applyMu sync.Mutex // serializes Apply: one reload at a time
	// split guards the split brain each cluster was last logged with (by cluster name; "" none).
	split struct {
		sync.Mutex
		last map[string]string
	}
	mu struct {
		sync.Mutex
		listeners map[string]*listener        // by listenKey
		serving   bool                        // Serve ran: new listeners start accepting at once
		stopping  relay.Cause                 // set once Shutdown or Close began
		hard      bool                        // every session is being ended now (Close, or the grace is over)
		clusters  map[*cluster.Cluster]func() // OnChange subscriptions, until wait
		retire    []*time.Timer               // forced ends of retired sessions after their grace
		fallback  map[string]*rate.Limiter    // cancel fallback budget by route name
		bgClosed  bool                        // wait is waiting for bg: StartCancel sends in place
	}
}

// listener is one bound listen address and the route it serves now. A reload that keeps the
// address keeps the listener (no connection is refused) and swaps the route new clients get.
type listener struct {
	addr  string // as configured
	ln    net.Listener
	route atomic.Pointer[Route]
	// ka is the keepalive its accepted conns already have from the listen configuration (the
	// client keepalive of the route it was opened for; nil: none). A session whose route asks
	// for other options applies them all itself.
	ka *netx.KeepAlive

	// loops holds the event loops' watch of a duplicate of the listening socket while they
	// accept from it (greet.go); close stops it, and the accept loop returns once it is.
	loops struct {
		sync.Mutex
		ln     *relay.Listener
		closed bool
	}
	failed chan error // the loops' accept failures (relay.Acceptor.AcceptFailed), for the backoff
}

func newListener(addr string, ln net.Listener, ka *netx.KeepAlive) *listener {
	return &listener{addr: addr, ln: ln, ka: ka, failed: make(chan error, 1)}
}

// close closes the listener and, if a loop accepts from it, waits until the loop has stopped
// and closed its duplicate: nothing is accepted from the socket after close returns, and the
// port is free again unless another process holds it. Never under Frontend.mu: the loop may
// be waiting for it (newSession).
func (l *listener) close() {
	l.loops.Lock()
	l.loops.closed = true
	ln := l.loops.ln
	l.loops.Unlock()
	_ = l.ln.Close()
	if ln != nil {
		ln.Stop()
		<-ln.Done()
	}
}

// New checks opts and returns a Frontend that is not listening yet.
func New(opts Options) (*Frontend, error) {
	if opts.Admission == nil || opts.Global == nil {
		return nil, errors.New("frontend: admission controller and global limit are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Events == nil {
		opts.Events = noEvents{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Frontend{
		opts:     opts,
		log:      opts.Logger,
		registry: cluster.NewRegistry[*session](),
		events:   opts.Events,
		ctx:      ctx,
		cancel:   cancel,
		lines:    newConnLog(opts.Logger, warnBurst, warnEvery, suppressReport),
		resolved: resolve.New(resolve.Hold),
		bgSlots:  make(chan struct{}, maxBackgroundCancels),
	}
	if opts.IssueKey != nil {
		f.issueKeyFn = f.issueKey
	}
	f.mu.listeners = make(map[string]*listener)
	f.mu.clusters = make(map[*cluster.Cluster]func())
	if l, err := relay.NewLoops(); err == nil {
		f.evloops = l
	} else {
		f.log.Warn("sessions will run on goroutines, not event loops", "err", err)
	}
	return f, nil
}

// listen binds one route's listener.
func (f *Frontend) listen(r *Route) (*listener, error) {
	addr := r.Listen
	if f.opts.Listen != nil {
		ln, err := f.opts.Listen(r.Name, addr)
		if err != nil {
			return nil, err
		}
		if ln != nil {
			return newListener(addr, ln, nil), nil
		}
	}
	ka := r.ClientTCP
	lc := ka.ListenConfig() // accepted conns get the keepalive options at accept
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newListener(addr, ln, &ka), nil
}

// serverChanged reacts to a server's new state: waiting clients get another look, and the
// sessions that may no longer stay on the server end — now (down, maintenance, role change)
// or at their next transaction boundary (drain). on_marked_down: keep leaves role and health
// changes alone; an administrator's drain and maint always apply.
func (f *Frontend) serverChanged(srv *cluster.Server, old, st cluster.State) {
	f.opts.Admission.Recheck()
	for _, s := range f.registry.Snapshot() {
		s.mu.Lock()
		on, fallback, rs, route := s.mu.server == srv, s.mu.fallback, s.mu.relay, s.route
		s.mu.Unlock()
		if !on || rs == nil {
			continue
		}
		switch {
		case st.Admin == cluster.AdminMaint:
			rs.End(relay.CauseServerDown)
		case st.Admin == cluster.AdminDrain:
			rs.Drain(relay.CauseServerDown)
		case route.Select.Keeps(st, fallback):
		case st.SplitBrain && (fallback || route.Select.Role == cluster.RolePrimary):
			// A session placed to write ends even with on_marked_down: keep: no more writes
			// may land on either primary.
			rs.End(relay.CauseSplitBrain)
		case route.Cluster.KeepSessions():
		case !st.Up:
			rs.End(relay.CauseServerDown)
		default:
			rs.End(relay.CauseRoleChanged)
		}
	}
	f.logStateChange(srv, old, st)
	if old.SplitBrain != st.SplitBrain {
		f.logSplitBrain(srv.Cluster, f.clusterOf(srv))
	}
}

// clusterOf returns the cluster srv belongs to among the routes' clusters, or nil.
func (f *Frontend) clusterOf(srv *cluster.Server) *cluster.Cluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	for cl := range f.mu.clusters {
		if cl.Name == srv.Cluster {
			return cl
		}
	}
	return nil
}

// logSplitBrain writes one WARN line when a split brain of cluster name begins (or its servers
// change) and one INFO line when it ends. Callbacks of one change arrive once per server and
// may interleave with another change's, so it reads the cluster's state now and compares it
// with what it last logged.
func (f *Frontend) logSplitBrain(name string, cl *cluster.Cluster) {
	var now []*cluster.Server
	if cl != nil {
		now = cl.SplitBrain()
	}
	desc := splitBrainClaim(now)
	f.split.Lock()
	defer f.split.Unlock()
	if f.split.last == nil {
		f.split.last = make(map[string]string)
	}
	was := f.split.last[name]
	if was == desc {
		return
	}
	f.split.last[name] = desc
	if desc == "" {
		f.log.Info("split brain over: at most one server claims to be primary", "cluster", name, "was", was)
		return
	}
	f.log.Warn("split brain: "+desc+"; primary routes refuse new sessions and end the existing ones",
		"cluster", name)
}

// splitBrainClaim says who is in a split brain: "servers main/a and main/b both claim to be
// primary"; "" for none.
func splitBrainClaim(servers []*cluster.Server) string {
	if len(servers) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("servers ")
	for i, srv := range servers {
		switch {
		case i == 0:
		case i == len(servers)-1:
			b.WriteString(" and ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(srv.FullName())
	}
	if len(servers) == 2 {
		b.WriteString(" both claim to be primary")
	} else {
		b.WriteString(" all claim to be primary")
	}
	return b.String()
}

// logStateChange writes the one line of a server's state change, whoever made it (a health
// check, an administrator, an in-band fence): the health monitor logs failed checks, not
// transitions. WARN when the server went down, was fenced or lost a role it had.
func (f *Frontend) logStateChange(srv *cluster.Server, old, st cluster.State) {
	if old.Up == st.Up && old.Role == st.Role && old.Admin == st.Admin && old.Fenced == st.Fenced {
		return // lag only: not a state change
	}
	level := slog.LevelInfo
	if (old.Up && !st.Up) || (st.Fenced && !old.Fenced) || (old.Role != st.Role && old.Role != cluster.RoleUnknown) {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("cluster", srv.Cluster), slog.String("server", srv.FullName()),
		slog.Bool("up", st.Up), slog.String("role", st.Role.String()), slog.String("admin", st.Admin.String()),
		slog.Bool("fenced", st.Fenced), slog.Bool("was_up", old.Up), slog.String("was_role", old.Role.String())}
	if old.Admin != st.Admin {
		attrs = append(attrs, slog.String("was_admin", old.Admin.String()))
	}
	if !st.Up && st.LastErr != "" {
		attrs = append(attrs, slog.String("err", st.LastErr))
	}
	f.log.LogAttrs(context.Background(), level, "server state changed", attrs...)
}

// fence marks srv of cl as not a primary after a session found it in recovery, until a health
// check says otherwise.
func (f *Frontend) fence(cl *cluster.Cluster, srv *cluster.Server) {
	cl.Modify(srv, func(st *cluster.State) { st.Fenced = true })
	if f.opts.OnFence != nil {
		f.opts.OnFence(srv)
	}
}

// sniRoutes lists the routes r's SNI map can choose, in a stable order.
func sniRoutes(r *Route) []*Route {
	var out []*Route
	for _, name := range slices.Sorted(maps.Keys(r.TLS.SNI)) {
		out = append(out, r.TLS.SNI[name])
	}
	return out
}

// SetRoutes sets the routes the next Listen binds (before the frontend listens).
func (f *Frontend) SetRoutes(routes []*Route) {
	f.applyMu.Lock()
	f.opts.Routes = routes
	f.applyMu.Unlock()
}

// Listen binds the listeners of Options.Routes, so address errors surface before anything is
// served; see Apply.
func (f *Frontend) Listen() error {
	f.applyMu.Lock()
	routes := f.opts.Routes
	f.applyMu.Unlock()
	_, err := f.Apply(routes)
	return err
}

// Apply makes routes the set pgfront serves: a route whose listen address is already bound
// keeps its listener and new clients get the new route at once (sessions keep the route they
// started with); a new address is bound; an address no route uses any more is closed. New
// addresses are all bound before anything changes, so on error nothing has (the listeners
// opened are closed again). It returns the names of the routes that no longer exist, whose
// sessions the caller retires (Retire).
func (f *Frontend) Apply(routes []*Route) (removed []string, err error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.Lock()
	if f.mu.stopping != relay.CauseNone {
		f.mu.Unlock()
		return nil, errors.New("frontend is stopping")
	}
	old := maps.Clone(f.mu.listeners)
	f.mu.Unlock()
	var oldNames []string
	for _, l := range old {
		oldNames = append(oldNames, l.route.Load().Name)
	}

	next := make(map[string]*listener, len(routes))
	var opened []*listener
	for _, r := range routes {
		l := old[listenKey(r)]
		if l == nil {
			if l, err = f.listen(r); err != nil {
				for _, o := range opened {
					o.close()
				}
				return nil, fmt.Errorf("route %s: listening on %s: %w", r.Name, r.Listen, err)
			}
			opened = append(opened, l)
		}
		next[listenKey(r)] = l
	}
	names := make(map[string]bool, len(routes))
	for _, r := range routes {
		for _, rr := range append([]*Route{r}, sniRoutes(r)...) {
			rr.serverDialer = rr.ServerTCP.Dialer(0)
			rr.serverSetup = rr.ServerTCP.ApplyFD
		}
		names[r.Name] = true
		next[listenKey(r)].route.Store(r)
	}

	f.mu.Lock()
	if f.mu.stopping != relay.CauseNone { // stop came meanwhile: its listeners are closed
		f.mu.Unlock()
		for _, o := range opened {
			o.close()
		}
		return nil, errors.New("frontend is stopping")
	}
	f.mu.listeners = next
	for _, r := range routes {
		for _, rr := range append([]*Route{r}, sniRoutes(r)...) {
			if _, ok := f.mu.clusters[rr.Cluster]; !ok {
				f.mu.clusters[rr.Cluster] = rr.Cluster.OnChange(f.serverChanged)
			}
		}
	}
	if f.mu.serving {
		for _, l := range opened {
			f.loops.Add(1)
			go f.acceptLoop(l)
		}
	}
	f.mu.Unlock()
	for addr, l := range old {
		if next[addr] == nil {
			l.close() // its accept loop returns
		}
	}
	for _, n := range oldNames {
		if !names[n] {
			removed = append(removed, n)
		}
	}
	f.opts.Admission.Recheck()
	return removed, nil
}

// dialer dials r's servers with its ServerTCP options.
func (r *Route) dialer() *net.Dialer {
	if r.serverDialer != nil {
		return r.serverDialer
	}
	return r.ServerTCP.Dialer(0) // a route not applied (yet): tests that start sessions by hand
}

// listenKey identifies a route's listener across reloads: its listen address as configured, or
// for a port the kernel picks (port 0) the route's name with it, since every such route has a
// listener of its own.
func listenKey(r *Route) string {
	if _, port, err := net.SplitHostPort(r.Listen); err == nil && port == "0" {
		return r.Name + "\x00" + r.Listen
	}
	return r.Listen
}

// Retire ends the sessions match selects (their route or server left the config) at their
// next transaction boundary, with cause; those still open after grace end at once (grace 0:
// no bound).
func (f *Frontend) Retire(match func(route string, srv *cluster.Server) bool, cause relay.Cause, grace time.Duration) int {
	var retired []*session
	for _, s := range f.registry.Snapshot() {
		s.mu.Lock()
		srv := s.mu.server
		s.mu.Unlock()
		if match(s.route.Name, srv) {
			retired = append(retired, s)
			s.drain(cause)
		}
	}
	if len(retired) == 0 || grace <= 0 {
		return len(retired)
	}
	f.mu.Lock()
	if f.mu.stopping == relay.CauseNone {
		f.mu.retire = append(f.mu.retire, time.AfterFunc(grace, func() {
			for _, s := range retired {
				s.end(cause)
			}
		}))
	}
	f.mu.Unlock()
	return len(retired)
}

// Addr is the bound address of the named route (useful when it listens on port 0).
func (f *Frontend) Addr(route string) net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.mu.listeners {
		if l.route.Load().Name == route {
			return l.ln.Addr()
		}
	}
	return nil
}

// Listeners returns the bound listeners by route name, for a hand-over to the next process.
func (f *Frontend) Listeners() map[string]net.Listener {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]net.Listener, len(f.mu.listeners))
	for _, l := range f.mu.listeners {
		out[l.route.Load().Name] = l.ln
	}
	return out
}

// Serve starts one accept loop per listener and returns at once; listeners a later Apply
// binds start accepting as they are bound.
func (f *Frontend) Serve() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.serving {
		return
	}
	f.mu.serving = true
	for _, l := range f.mu.listeners {
		f.loops.Add(1)
		go f.acceptLoop(l)
	}
}

// Sessions is the number of sessions open now, from accept to close.
func (f *Frontend) Sessions() int { return f.registry.Len() }

// UnknownCancels is how many CancelRequests (from clients, peers or a successor process)
// named no live session here; a client's is then offered to the draining predecessor, the
// peers and the fallback.
func (f *Frontend) UnknownCancels() uint64 { return f.registry.UnknownCancels() }

// acceptLoop accepts clients of l's route until its listener is closed. Temporary errors (out
// of file descriptors) are logged and retried with a backoff instead of ending the loop. A
// route whose sessions start on the event loops is accepted by a loop (acceptOnLoops).
func (f *Frontend) acceptLoop(l *listener) {
	defer f.loops.Done()
	backoff := time.Duration(0)
	noLoops := false // the loops are closed: Go's accept it is
	for {
		if r := l.route.Load(); f.greets(r) && !noLoops {
			switch f.acceptOnLoops(l, &backoff) {
			case listenerClosed:
				return
			case loopsClosed:
				noLoops = true
			}
			continue
		}
		c, err := l.ln.Accept()
		r := l.route.Load()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !f.acceptBackoff(r, err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		f.serveOnGoroutine(r, c, l.ka != nil && *l.ka == r.ClientTCP)
	}
}

// serveOnGoroutine starts an accepted client's session on a goroutine of its own.
// keepAliveSet: c already has r's client TCP options.
func (f *Frontend) serveOnGoroutine(r *Route, c net.Conn, keepAliveSet bool) {
	s := f.newSession(r, c, c.RemoteAddr().String(), keepAliveSet)
	f.sessions.Add(1)
	go f.serveSession(s)
}

// acceptBackoff waits after a failed accept (out of file descriptors, say), longer each time
// in a row, instead of spinning; false when the frontend closed meanwhile.
func (f *Frontend) acceptBackoff(r *Route, err error, backoff *time.Duration) bool {
	*backoff = min(max(2**backoff, 5*time.Millisecond), time.Second)
	f.events.AcceptFailed(r.Name)
	f.log.Warn("accept failed", "route", r.Name, "err", err, "retry_in", *backoff)
	t := time.NewTimer(*backoff)
	select {
	case <-t.C:
		return true
	case <-f.ctx.Done():
		t.Stop()
		return false
	}
}

// Shutdown stops accepting and ends every session at its next idle point (FATAL 57P01). When ctx
// ends first, the remaining sessions are ended at once. It returns when all sessions are gone.
func (f *Frontend) Shutdown(ctx context.Context) {
	if !f.stop(relay.CauseShutdown) {
		f.wait()
		return
	}
	for _, s := range f.registry.Snapshot() {
		s.drain(relay.CauseShutdown)
	}
	done := make(chan struct{})
	go func() { f.sessions.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		f.endAll(relay.CauseShutdown)
		<-done
	}
	f.wait()
}

// StopAccepting closes every listener (a new process accepts on the same sockets now); the
// sessions go on until Shutdown or Close.
func (f *Frontend) StopAccepting() {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.Lock()
	ls := f.takeListenersLocked()
	f.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
}

// takeListenersLocked empties the listener set and returns what it held, for closing once
// f.mu is released (see listener.close).
func (f *Frontend) takeListenersLocked() []*listener {
	ls := slices.Collect(maps.Values(f.mu.listeners))
	clear(f.mu.listeners)
	return ls
}

// Close stops accepting and ends every session now. It returns when all sessions are gone.
func (f *Frontend) Close() {
	f.stop(relay.CauseShutdown)
	f.endAll(relay.CauseShutdown)
	f.wait()
}

// stop closes the listeners once; it reports whether this call did it.
func (f *Frontend) stop(cause relay.Cause) bool {
	f.mu.Lock()
	first := f.mu.stopping == relay.CauseNone
	var ls []*listener
	if first {
		f.mu.stopping = cause
		ls = f.takeListenersLocked()
	}
	f.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	return first
}

func (f *Frontend) endAll(cause relay.Cause) {
	f.mu.Lock()
	f.mu.hard = true
	f.mu.Unlock()
	f.cancel()
	for _, s := range f.registry.Snapshot() {
		s.end(cause)
	}
}

func (f *Frontend) wait() {
	f.loops.Wait()
	f.sessions.Wait()
	f.mu.Lock()
	f.mu.bgClosed = true
	f.mu.Unlock()
	f.bg.Wait()
	f.lines.stop() // every connection accounted for before pgfront stops
	f.cancel()
	f.mu.Lock()
	for _, t := range f.mu.retire {
		t.Stop()
	}
	f.mu.retire = nil
	for cl, unsubscribe := range f.mu.clusters {
		unsubscribe()
		delete(f.mu.clusters, cl)
	}
	f.mu.Unlock()
	if f.evloops != nil {
		f.evloops.Close()
	}
}

// Parked is the number of idle sessions held by the event loops now (no goroutine, no buffer).
func (f *Frontend) Parked() int {
	if f.evloops == nil {
		return 0
	}
	return f.evloops.Parked()
}

func (f *Frontend) stopping() (cause relay.Cause, hard bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.stopping, f.mu.hard
}
