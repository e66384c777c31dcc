// Package frontend owns the route listeners: the accept loops, each session's start-up (first
// packet, SSL/GSSENC negotiation, cancel requests), admission under maxconn, the connection to
// a server, and every refusal, which a PostgreSQL client always receives as a FATAL
// ErrorResponse. Once a session is established it hands both connections to package relay.
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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/relay"
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
	// Relay holds the established session's bounds (idle, FIN) and on_client_fin.
	Relay relay.Options

	// TLS is what the route offers clients that ask for TLS.
	TLS RouteTLS
	// ServerTLS negotiates TLS with the cluster's servers (sessions and cancels); nil: plain.
	ServerTLS ServerTLS
}

// Options configure a Frontend.
type Options struct {
	Routes    []*Route
	Admission *admission.Controller
	Global    *admission.Limit // the global maxconn
	KeepAlive netx.KeepAlive   // applied to client and server sockets
	Logger    *slog.Logger
	// Listen opens a route's listener; nil means net.Listen("tcp", addr).
	Listen func(addr string) (net.Listener, error)
	// OnFence is told when a primary route's session found srv to be a standby (the server is
	// already marked fenced); the health monitor should check it now. May be nil.
	OnFence func(srv *cluster.Server)
	// OnConnectFail is told when a connect to srv failed, so its health can be checked at
	// once rather than at the next interval. May be nil.
	OnConnectFail func(srv *cluster.Server)
	// keepAliveSet: the listeners already give accepted conns the keepalive options.
	keepAliveSet bool
	// Events is told what sessions do (metrics, admin views). May be nil.
	Events Events
}

// Frontend serves every route. Its methods are safe for concurrent use.
type Frontend struct {
	opts     Options
	log      *slog.Logger
	registry *cluster.Registry[*session]
	dialer   *net.Dialer
	events   Events

	ctx    context.Context // cancelled by Close: ends waits and dials
	cancel context.CancelFunc

	loops    sync.WaitGroup // accept loops
	sessions sync.WaitGroup // session goroutines
	nextID   atomic.Uint64

	parker *relay.Parker // holds idle sessions without goroutines; nil if unavailable

	refusalLog *rate.Limiter // refusals are logged, but never floods
	suppressed atomic.Uint64

	mu struct {
		sync.Mutex
		listeners []net.Listener // one per route, in Options.Routes order
		stopping  relay.Cause    // set once Shutdown or Close began
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
	if opts.Listen == nil {
		lc := opts.KeepAlive.ListenConfig() // accepted conns get the keepalive options at accept
		opts.Listen = func(addr string) (net.Listener, error) { return lc.Listen(context.Background(), "tcp", addr) }
		opts.keepAliveSet = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Frontend{
		opts:       opts,
		log:        opts.Logger,
		registry:   cluster.NewRegistry[*session](),
		dialer:     opts.KeepAlive.Dialer(0),
		events:     opts.Events,
		ctx:        ctx,
		cancel:     cancel,
		refusalLog: rate.NewLimiter(rate.Every(time.Second), 10),
	}
	if p, err := relay.NewParker(); err == nil {
		f.parker = p
	} else {
		f.log.Warn("idle sessions will not be parked", "err", err)
	}
	seen := make(map[*cluster.Cluster]bool)
	for _, r := range opts.Routes {
		for _, rr := range append([]*Route{r}, sniRoutes(r)...) {
			if !seen[rr.Cluster] {
				seen[rr.Cluster] = true
				rr.Cluster.OnChange(f.serverChanged)
			}
		}
	}
	return f, nil
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
		case route.Select.Keeps(st, fallback) || route.Cluster.KeepSessions():
		case !st.Up:
			rs.End(relay.CauseServerDown)
		default:
			rs.End(relay.CauseRoleChanged)
		}
	}
	if old.Up != st.Up || old.Role != st.Role || old.Admin != st.Admin || old.Fenced != st.Fenced {
		f.log.Info("server state changed", "cluster", srv.Cluster, "server", srv.Name,
			"up", st.Up, "role", st.Role.String(), "admin", st.Admin.String(), "fenced", st.Fenced,
			"was_up", old.Up, "was_role", old.Role.String())
	}
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

// Listen binds every route's listener, so address errors surface before anything is served.
// On error the listeners already opened are closed.
func (f *Frontend) Listen() error {
	var lns []net.Listener
	for _, r := range f.opts.Routes {
		ln, err := f.opts.Listen(r.Listen)
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return fmt.Errorf("route %s: listening on %s: %w", r.Name, r.Listen, err)
		}
		lns = append(lns, ln)
	}
	f.mu.Lock()
	f.mu.listeners = lns
	f.mu.Unlock()
	return nil
}

// Addr is the bound address of the named route (useful when it listens on port 0).
func (f *Frontend) Addr(route string) net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.opts.Routes {
		if r.Name == route && i < len(f.mu.listeners) {
			return f.mu.listeners[i].Addr()
		}
	}
	return nil
}

// Serve starts one accept loop per route and returns at once.
func (f *Frontend) Serve() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.opts.Routes {
		f.loops.Add(1)
		go f.acceptLoop(r, f.mu.listeners[i])
	}
}

// Sessions is the number of sessions open now, from accept to close.
func (f *Frontend) Sessions() int { return f.registry.Len() }

// UnknownCancels is how many CancelRequests named no live session (dropped).
func (f *Frontend) UnknownCancels() uint64 { return f.registry.UnknownCancels() }

// acceptLoop accepts clients of route r until its listener is closed. Temporary errors (out of
// file descriptors, say) back off instead of spinning.
func (f *Frontend) acceptLoop(r *Route, ln net.Listener) {
	defer f.loops.Done()
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.log.Warn("accept failed", "route", r.Name, "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-f.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s := f.newSession(r, c)
		f.sessions.Add(1)
		go f.serveSession(s)
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
	if first {
		f.mu.stopping = cause
		for _, l := range f.mu.listeners {
			_ = l.Close()
		}
	}
	f.mu.Unlock()
	return first
}

func (f *Frontend) endAll(cause relay.Cause) {
	f.cancel()
	for _, s := range f.registry.Snapshot() {
		s.end(cause)
	}
}

func (f *Frontend) wait() {
	f.loops.Wait()
	f.sessions.Wait()
	f.cancel()
	if f.parker != nil {
		f.parker.Close()
	}
}

// parkAfter is how long a session stays idle before it is parked: long enough that busy
// request/response traffic never pays for parking, short enough that idle pools cost little.
const parkAfter = 2 * time.Second

// Parked is the number of idle sessions held without goroutines now.
func (f *Frontend) Parked() int {
	if f.parker == nil {
		return 0
	}
	return f.parker.Parked()
}

func (f *Frontend) stopping() relay.Cause {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.stopping
}

// logRefusal logs a refused client, at most ~1/s after a burst, counting what it skipped.
func (f *Frontend) logRefusal(s *session, cause relay.Cause, err error) {
	if !f.refusalLog.Allow() {
		f.suppressed.Add(1)
		return
	}
	attrs := []any{"route", s.route.Name, "client", s.clientAddr, "cause", cause.String()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if n := f.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed_since_last", n)
	}
	f.log.Warn("session refused", attrs...)
}
