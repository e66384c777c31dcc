package frontend

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/proxyhdr"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/resolve"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// session is one client connection, from accept to close. Its goroutine (serveSession) owns
// the client conn and, once dialled, the server conn, until relay takes both over.
type session struct {
	id     uint64
	f      *Frontend
	route  *Route
	client net.Conn
	// peerAddr is the client socket's peer address: the client's own, or a load balancer's.
	peerAddr string
	// keepAliveSet: the listener gave the client conn the route's keepalive options.
	keepAliveSet bool
	// sslDone, gssDone: an SSLRequest, a GSSENCRequest was answered (by the event loop that
	// greeted the session, or by readStartup); a second one is a protocol error.
	sslDone, gssDone bool
	start            time.Time
	phase            atomic.Uint32 // a Phase
	// cancels counts the client's CancelRequests forwarded to this session's server.
	cancels atomic.Int32

	ctx context.Context // ends queue waits and dials when the session is told to stop
	// dialBy, when set, is the first dial's deadline: a loop's connect to a remembered
	// address used part of timeouts.connect (goroutine-owned, after the hand-off).
	dialBy time.Time
	cancel context.CancelFunc
	// est is what the relay's hooks need (its server, maxconn ticket, what a retry needs): set
	// before the relay starts, read where it relays.
	est *establishing

	// route and client may change once, under mu, while the session starts (TLS: the client
	// becomes the TLS connection, and SNI may choose another cluster's route); other
	// goroutines read them under mu.
	mu struct {
		sync.Mutex
		server   *cluster.Server
		relay    relayer
		tls      string      // "" (plain), "TLSv1.3 sni=...", or "passthrough"
		fallback bool        // a replica route's session placed on the primary
		stopped  relay.Cause // set by end before relay exists
		// handedOff: the event loop that greeted the session gave it to a goroutine.
		handedOff bool
		// draining: a drain (shutdown, hand-over, reload) began before the relay existed;
		// the session still logs in and runs its first transaction, then ends at the
		// boundary like the others.
		draining relay.Cause
		// user, database and application_name from the StartupMessage, for the log line and
		// admin views.
		user, database, appName string
		// clientAddr is the client's address as shown and logged: peerAddr, or the address a
		// PROXY protocol header carried (set once, before the StartupMessage is read).
		clientAddr string
		// greeting is the session while an event loop greets it (see greet.go).
		greeting *relay.Session
	}
}

func (f *Frontend) newSession(r *Route, c net.Conn, peerAddr string, keepAliveSet bool) *session {
	s := &session{
		keepAliveSet: keepAliveSet,
		id:           f.nextID.Add(1),
		f:            f,
		route:        r,
		client:       c,
		peerAddr:     peerAddr,
		start:        time.Now(),
	}
	if _, greeted := c.(relayedConn); greeted {
		// A loop waits for nothing: the context is made if the session is handed off.
		s.ctx, s.cancel = loggedInCtx, noCancel
	} else {
		s.ctx, s.cancel = context.WithCancel(f.ctx)
	}
	s.mu.clientAddr = s.peerAddr
	f.registry.Add(s)
	f.events.SessionAccepted(r.Name)
	// A session accepted while Shutdown/Close began may have missed their snapshot of the
	// registry: it drains itself (Shutdown) or stops (Close, or the grace is over).
	if c, hard := f.stopping(); c != relay.CauseNone {
		s.mu.Lock()
		if hard {
			s.stopLocked(c)
		} else {
			s.mu.draining = c
		}
		s.mu.Unlock()
	}
	return s
}

// ServerAddr implements cluster.Session.
func (s *session) ServerAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.server == nil {
		return ""
	}
	return s.mu.server.Addr
}

// relayer is an established session's relay: a PostgreSQL-aware relay.Session, or a blind
// relay.Pipe (TLS passthrough).
type relayer interface {
	End(relay.Cause)
	Drain(relay.Cause)
	State() relay.State
	Bytes() (fromClient, fromServer int64)
}

// drain ends the session at its next idle point. A session still starting goes on (a client
// that connected a moment before a drain must not see an error): its relay starts draining.
func (s *session) drain(cause relay.Cause) {
	s.mu.Lock()
	r := s.mu.relay
	if r == nil && s.mu.draining == relay.CauseNone {
		s.mu.draining = cause
	}
	s.mu.Unlock()
	if r != nil {
		r.Drain(cause)
	}
}

// end ends the session now.
func (s *session) end(cause relay.Cause) { s.stop(cause, relayer.End) }

// stop hands cause to the relay (how: End or Drain), or stops a session still starting.
func (s *session) stop(cause relay.Cause, how func(relayer, relay.Cause)) {
	s.mu.Lock()
	r := s.mu.relay
	if r == nil {
		s.stopLocked(cause)
	}
	s.mu.Unlock()
	if r != nil {
		how(r, cause)
	}
}

// stopLocked interrupts a session that is still starting: its waits and dials are cancelled and
// its client reads fail at once; serveSession then sees mu.stopped.
func (s *session) stopLocked(cause relay.Cause) {
	if s.mu.stopped == relay.CauseNone {
		s.mu.stopped = cause
	}
	s.cancel()
	_ = s.client.SetReadDeadline(time.Unix(1, 0))
	if s.mu.greeting != nil {
		s.mu.greeting.End(cause) // its loop hands the session to a goroutine, which refuses it
	}
}

func (s *session) stoppedCause() relay.Cause {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.stopped
}

// outcome is how a session ended, for its end record.
type outcome struct {
	cause             relay.Cause
	err               error
	server            *cluster.Server
	fromClient, toSrv int64
	queued            time.Duration
	refused           bool
	tlsResult         string // why the client's TLS handshake failed
	cancelResult      string // a CancelRequest's result
	cancelFor         uint64 // the session a CancelRequest was for
	cancelPeer        string // the peer that took a CancelRequest
	cancelVia         string // "predecessor": the draining predecessor took it
	cancelServers     int    // fallback: the servers a CancelRequest was sent to
	// runClient, for a relaying session, is its client copier when the goroutine that set
	// the session up is to run it (relay.Session.Begin); nil when the relay has its own.
	runClient func()
}

// serveSession runs one client connection to its end.
func (f *Frontend) serveSession(s *session) { s.started(s.run()) }

// started is the start-up goroutine's last step: close a session that was not relayed, or
// become the client copier (one goroutine fewer per session; it returns when the copier
// does). Otherwise the relay (its copiers or its event loop) owns the session now and ends it
// (relayEnded); this goroutine, with the deep stack of the start-up, exits.
func (s *session) started(o outcome, relaying bool) {
	switch {
	case !relaying:
		s.close(o)
	case o.runClient != nil:
		o.runClient()
	}
}

// close closes the client, forgets the session, and logs and reports its end record.
func (s *session) close(o outcome) {
	s.report(s.forget(o))
}

// closeNoWait is close for a caller that must not block (an event loop, see relay.Start): an
// end record that writes a log line, which may wait on the log's output, is reported on a
// goroutine of its own. At log level warn an ordinary end writes none and needs none.
func (s *session) closeNoWait(o outcome) {
	e := s.forget(o)
	if s.f.lines.writes(&e) {
		go s.report(e)
		return
	}
	s.report(e)
}

// forget closes the client and removes the session from the registry; it returns the end
// record.
func (s *session) forget(o outcome) Ended {
	s.cancel()
	_ = s.client.Close()
	s.f.registry.Remove(s)
	return s.ended(o)
}

// report logs and counts the end record; the session is over.
func (s *session) report(e Ended) {
	s.f.lines.ended(&e)
	s.f.events.SessionEnded(e)
	s.f.sessions.Done()
}

// ended is the session's end record.
func (s *session) ended(o outcome) Ended {
	e := Ended{ID: s.id, Server: o.server, Cause: o.cause, Refused: o.refused,
		Started: s.start, Duration: time.Since(s.start), Queued: o.queued, FromClient: o.fromClient,
		FromServer: o.toSrv, TLSResult: o.tlsResult, Cancels: int(s.cancels.Load()),
		CancelResult: o.cancelResult, CancelFor: o.cancelFor, CancelPeer: o.cancelPeer, CancelVia: o.cancelVia,
		CancelServers: o.cancelServers}
	s.mu.Lock()
	e.Route, e.User, e.Database, e.ApplicationName = s.route.Name, s.mu.user, s.mu.database, s.mu.appName
	e.TLS, e.Fallback = s.mu.tls, s.mu.fallback
	e.Client = s.mu.clientAddr
	if e.Client != s.peerAddr {
		e.Via = s.peerAddr
	}
	s.mu.Unlock()
	if o.err != nil {
		e.Err = o.err.Error()
		var le *relay.LoginError
		if errors.As(o.err, &le) {
			e.SQLState = le.Code
		}
	}
	return e
}

// refuseStopped tells a client whose session was stopped before it was relayed (shutdown, or
// an administrator's kill) why.
func (s *session) refuseStopped(c relay.Cause, err error) outcome {
	if c == relay.CauseAdminKill {
		return s.refuse(c, pgwire.CodeAdminShutdown, "terminating connection due to administrator command",
			"A pgfront administrator ended this session.", err)
	}
	return s.refuse(c, pgwire.CodeAdminShutdown, "terminating connection because pgfront is shutting down", "", err)
}

// refuse tells the client why in a FATAL ErrorResponse and returns the outcome.
func (s *session) refuse(cause relay.Cause, code, msg, hint string, err error) outcome {
	_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.client.Write(pgwire.Fatal(code, msg, hint))
	return outcome{cause: cause, err: err, refused: true}
}

// run is the session's life up to the relay's end.
// relaying is true when the session was handed to a relay, which will end it.
func (s *session) run() (o outcome, relaying bool) {
	r := s.route
	if tc, ok := s.client.(*net.TCPConn); ok {
		ka := r.ClientTCP
		if s.keepAliveSet {
			_ = ka.ApplyUserTimeout(tc)
		} else {
			_ = ka.Apply(tc)
		}
	}
	_ = s.client.SetDeadline(s.start.Add(r.Startup)) // from the accept: a greeting loop's time counts
	if c := s.stoppedCause(); c != relay.CauseNone {
		return s.refuseStopped(c, nil), false // stopped before the deadline above was set
	}
	if r.ProxyProtocol != nil {
		if o, ok := s.readProxyHeader(r.ProxyProtocol); !ok {
			return o, false
		}
	}
	pkt, blind, o, ok := s.readStartup()
	if !ok {
		return o, false
	}
	if blind != nil {
		return s.establishBlind(blind)
	}
	r = s.route // SNI may have chosen another cluster's route
	if _, tlsOn := isTLS(s.client); r.TLS.Require && !tlsOn {
		return s.refuse(relay.CauseDenied, pgwire.CodeInvalidAuthorization,
			fmt.Sprintf("pgfront route %q requires SSL/TLS", r.Name),
			"Connect with sslmode=require (or verify-ca / verify-full).", nil), false
	}
	setUser(s, pkt) // Raw is what is forwarded; an idle session keeps no more than it needs
	return s.establish(pkt)
}

// readStartup reads the first packets up to the StartupMessage: SSLRequest per the route's TLS
// mode ('N', or 'S' and a TLS handshake, or passthrough), GSSENCRequest 'N', a direct TLS
// ClientHello (PostgreSQL 17), and a CancelRequest (forwarded). ok is false when the session
// is over; blind is non-nil for a passthrough session: the bytes to forward first.
func (s *session) readStartup() (pkt *pgwire.FirstPacket, blind []byte, o outcome, ok bool) {
	r := s.route
	// PostgreSQL accepts one request of each kind, in either order (libpq sends GSSENCRequest
	// then SSLRequest when both are "prefer"); a repeat of the same kind is a protocol error.
	sslDone, gssDone := &s.sslDone, &s.gssDone
	for first := true; ; first = false {
		var src io.Reader = s.client
		if first && r.TLS.Mode != TLSDisable {
			b, err := readByte(s.client)
			if err != nil {
				return nil, nil, s.startupFailed(err), false
			}
			if b == tlsHandshakeByte { // PostgreSQL 17 direct TLS
				if r.TLS.Mode == TLSPassthrough {
					return nil, []byte{b}, outcome{}, true
				}
				if o, ok := s.startTLS([]byte{b}, true); !ok {
					return nil, nil, o, false
				}
				*sslDone = true
				r = s.route
				continue
			}
			src = io.MultiReader(bytes.NewReader([]byte{b}), s.client)
		}
		pkt, err := pgwire.ReadFirstPacket(src)
		if err != nil {
			return nil, nil, s.startupFailed(err), false
		}
		switch pkt.Kind {
		case pgwire.KindStartup:
			return pkt, nil, outcome{}, true
		case pgwire.KindCancel:
			c := s.f.routeCancel(r, pkt.Cancel)
			o := outcome{cause: relay.CauseCancelRequest, server: c.server, err: c.err, cancelResult: c.result,
				cancelPeer: c.peer, cancelVia: c.via, cancelServers: c.servers}
			if c.target != nil {
				o.cancelFor = c.target.id
			}
			s.f.events.CancelRequest(r.Name, o.cancelResult)
			return nil, nil, o, false
		case pgwire.KindSSLRequest, pgwire.KindGSSENCRequest:
			done := sslDone
			if pkt.Kind == pgwire.KindGSSENCRequest {
				done = gssDone
			}
			if *done {
				return nil, nil, s.refuse(relay.CauseProtocolError, pgwire.CodeProtocolViolation,
					fmt.Sprintf("unexpected %s after encryption negotiation", pkt.Kind), "", nil), false
			}
			*done = true
			if pkt.Kind == pgwire.KindSSLRequest && r.TLS.Mode == TLSPassthrough {
				return nil, pkt.Raw, outcome{}, true
			}
			answer := byte('N')
			if pkt.Kind == pgwire.KindSSLRequest && r.TLS.Mode == TLSTerminate {
				answer = 'S'
			}
			if _, err := s.client.Write([]byte{answer}); err != nil {
				return nil, nil, outcome{cause: relay.CauseClientReset, err: err}, false
			}
			if answer == 'S' {
				if o, ok := s.startTLS(nil, false); !ok {
					return nil, nil, o, false
				}
				r = s.route
			}
		}
	}
}

// readProxyHeader reads the PROXY protocol header a trusted load balancer sends first, within
// the startup deadline already set, and takes the client address it carries. A connection from
// an untrusted network is refused: closed without a word when it sends a header (a balancer
// pgfront does not trust), else told with a FATAL. So is a trusted connection without a header
// (pgfront cannot tell a client that bypassed the balancer from the balancer's own), and one
// whose header is malformed. ok is false when the session is over.
func (s *session) readProxyHeader(pp *ProxyProtocol) (o outcome, ok bool) {
	r := s.route
	peer := peerIP(s.client.RemoteAddr())
	if !pp.trusts(peer) {
		err := &boundError{fmt.Sprintf("PROXY protocol: source %s is not in route %q's proxy_protocol.trusted", s.peerAddr, r.Name), nil}
		if b, rerr := readByte(s.client); rerr == nil && proxyhdr.Starts(b) {
			return outcome{cause: relay.CauseDenied, refused: true, err: err}, false
		}
		return s.refuse(relay.CauseDenied, pgwire.CodeInvalidAuthorization,
			fmt.Sprintf("pgfront route %q accepts connections only through its trusted load balancers", r.Name),
			"", err), false
	}
	h, err := proxyhdr.Read(s.client)
	var he *proxyhdr.Error
	switch {
	case err == nil:
	case s.stoppedCause() != relay.CauseNone:
		return s.refuseStopped(s.stoppedCause(), nil), false
	case errors.Is(err, proxyhdr.ErrNoHeader):
		return s.refuse(relay.CauseDenied, pgwire.CodeInvalidAuthorization,
			fmt.Sprintf("pgfront route %q expects a PROXY protocol header from its load balancer", r.Name),
			"Connect through the load balancer, not to pgfront directly.",
			&boundError{fmt.Sprintf("PROXY protocol: no header from trusted source %s", s.peerAddr), err}), false
	case errors.As(err, &he):
		return s.refuse(relay.CauseProtocolError, pgwire.CodeProtocolViolation, "invalid PROXY protocol header", "",
			fmt.Errorf("PROXY protocol from %s: %w", s.peerAddr, err)), false
	case netx.IsTimeout(err):
		return s.refuse(relay.CauseStartupTimeout, pgwire.CodeProtocolViolation,
			"incomplete PROXY protocol header: timed out", "pgfront allows timeouts.startup for the header and the startup packet.",
			&boundError{fmt.Sprintf("no complete PROXY protocol header within timeouts.startup (%s)", r.Startup), err}), false
	case errors.Is(err, io.EOF):
		return outcome{cause: relay.CauseClientEOF}, false // closed before sending anything (port probe)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return outcome{cause: relay.CauseProtocolError, err: fmt.Errorf("PROXY protocol from %s: incomplete header", s.peerAddr)}, false
	default:
		return outcome{cause: relay.CauseClientReset, err: err}, false
	}
	if h.Source.IsValid() { // else LOCAL or UNKNOWN: the balancer's own connection
		s.mu.Lock()
		s.mu.clientAddr = h.Source.String()
		s.mu.Unlock()
	}
	return outcome{}, true
}

// peerIP is a socket peer's IP address; the zero Addr (trusted by no network) for others.
func peerIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// startupFailed classifies an error reading the first packets.
func (s *session) startupFailed(err error) outcome {
	if c := s.stoppedCause(); c != relay.CauseNone {
		return s.refuseStopped(c, nil)
	}
	var pe *pgwire.ProtocolError
	switch {
	case errors.As(err, &pe):
		return s.refuse(relay.CauseProtocolError, pgwire.CodeProtocolViolation, pe.Msg, "", err)
	case netx.IsTimeout(err):
		return s.refuse(relay.CauseStartupTimeout, pgwire.CodeProtocolViolation,
			"incomplete startup packet: timed out", "pgfront allows timeouts.startup for the startup packet.",
			&boundError{fmt.Sprintf("no startup packet within timeouts.startup (%s)", s.route.Startup), err})
	case errors.Is(err, io.EOF):
		return outcome{cause: relay.CauseClientEOF} // closed before saying anything (port probe)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return outcome{cause: relay.CauseProtocolError, err: errors.New("incomplete startup packet")}
	}
	return outcome{cause: relay.CauseClientReset, err: err}
}

// establish admits the session, connects to a server, forwards the StartupMessage and relays.
func (s *session) establish(pkt *pgwire.FirstPacket) (outcome, bool) {
	pick := newPicker(s.route)
	ticket, queued, o, ok := s.admit(pick)
	if !ok {
		o.queued = queued
		return o, false
	}
	e := &establishing{pkt: pkt, pick: pick, ticket: ticket, queued: queued}
	return e.connect(s)
}

// dial connects to srv and, when the route's cluster speaks TLS to its servers and negotiate is
// set, negotiates it; the returned conn belongs to the caller. It has timeouts.connect, or
// what a loop's connect to a remembered address left of it (dialBy).
func (s *session) dial(srv *cluster.Server, negotiate bool) (net.Conn, error) {
	r := s.route
	by := time.Now().Add(r.Connect)
	if !s.dialBy.IsZero() {
		by, s.dialBy = s.dialBy, time.Time{}
	}
	ctx, cancel := context.WithDeadline(s.ctx, by)
	defer cancel()
	for range 2 {
		c, via, err := s.f.dialServer(ctx, r.dialer(), srv.Addr)
		if err != nil {
			return nil, err
		}
		s.f.events.ServerConn(r.Name, srv, c)
		if !negotiate || r.ServerTLS == nil {
			return c, nil
		}
		tc, err := s.negotiate(ctx, c, srv)
		if err == nil || !via.IsValid() || ctx.Err() != nil {
			return tc, err
		}
		// A remembered address that takes the connect but fails the handshake may be another
		// server's now (an IP reused): forget it and dial the name once.
		s.f.resolved.Forget(srv.Addr, via)
	}
	return nil, fmt.Errorf("connecting to %s: the address its name had failed the TLS handshake", srv.Addr)
}

// negotiate negotiates the route's server TLS on c (closed on failure).
func (s *session) negotiate(ctx context.Context, c net.Conn, srv *cluster.Server) (net.Conn, error) {
	var under net.Conn = c
	if t, ok := c.(*net.TCPConn); ok {
		under = netx.RawIO(t) // crypto/tls reads and writes it: keep those calls cheap
	}
	tc, err := s.route.ServerTLS.Negotiate(ctx, under, srv.Addr)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if t, ok := tc.(*tls.Conn); ok {
		return WrapTLS(t, c), nil
	}
	if tc == under {
		return c, nil // prefer, and the server said no: plain TCP, which the relay can park
	}
	return tc, nil
}

// dialServer connects to addr ("host:port" as configured). A host name goes to the address it
// last connected to when that is remembered (no DNS query; via is that address), else, or if
// that connect fails for any reason but ctx, to the name's current answer, which is then
// remembered.
func (f *Frontend) dialServer(ctx context.Context, d *net.Dialer, addr string) (c net.Conn, via netip.AddrPort, err error) {
	if to, remembered, ok := f.resolved.Lookup(addr); ok && remembered {
		c, err := dialRemembered(ctx, d, to)
		if err == nil {
			return c, to, nil
		}
		if ctx.Err() != nil {
			return nil, netip.AddrPort{}, err
		}
		f.resolved.Forget(addr, to) // stale, perhaps: ask DNS
	}
	c, err = d.DialContext(ctx, "tcp", addr)
	if err == nil {
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			f.resolved.Learn(addr, ta.AddrPort())
		}
	}
	return c, netip.AddrPort{}, err
}

// dialRemembered connects to a remembered address within its part of what is left of ctx's
// time (resolve.FirstTry).
func dialRemembered(ctx context.Context, d *net.Dialer, to netip.AddrPort) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, resolve.FirstTry(time.Until(dl)))
		defer cancel()
	}
	return d.DialContext(ctx, "tcp", to.String())
}

// establishing is a session between admission and the relay's end: what a retry after an
// in-band fence needs to connect again.
type establishing struct {
	// addr is where a loop connected for srv: its IP, or the address its host name last
	// connected to (then connectBy is when timeouts.connect runs out for this login; zero
	// otherwise).
	addr      netip.AddrPort
	connectBy time.Time
	srv       *cluster.Server // the server the relay runs on (set before it starts)
	pkt       *pgwire.FirstPacket
	pick      *picker
	ticket    *admission.Ticket
	queued    time.Duration
	retries   int
}

// loggedIn drops what only a retry needs (relay.Options.OnLoggedIn). A retry reads them on a
// goroutine that starts after both copiers ended, so after this write.
func (e *establishing) loggedIn() { e.pkt, e.pick = nil, nil }

// connect dials a server and starts the relay; false means the session is already over.
func (e *establishing) connect(s *session) (outcome, bool) { return e.connectAfter(s, nil) }

// connectAfter is connect when a connect to e.srv already failed with failed (non-nil: an event
// loop's, handed over).
func (e *establishing) connectAfter(s *session, failed error) (outcome, bool) {
	srv, server, o, ok := s.connect(e.pick, e.ticket, true, failed)
	if !ok {
		e.ticket.Release()
		o.queued = e.queued
		return o, false
	}
	o, ok = s.startRelay(e, srv, server)
	if !ok {
		e.ticket.Release()
	}
	return o, ok
}

// maxRetries bounds how many servers that refused it one session may be moved away from.
const maxRetries = 3

// startRelay forwards the StartupMessage to server and starts the relay, which then owns the
// client and server connections. false means it could not start (the outcome says why).
func (s *session) startRelay(e *establishing, srv *cluster.Server, server net.Conn) (outcome, bool) {
	r := s.route
	_ = server.SetWriteDeadline(time.Now().Add(r.Connect))
	if _, err := server.Write(e.pkt.Raw); err != nil {
		_ = server.Close()
		return outcome{cause: relay.CauseServerReset, err: fmt.Errorf("forwarding startup to %s: %w", srv.FullName(), err), server: srv, queued: e.queued}, false
	}
	_ = server.SetWriteDeadline(time.Time{})
	_ = s.client.SetDeadline(time.Time{})

	opts := s.relayOptions(e, srv)
	if s.f.evloops != nil && rawTCP(s.client) && rawTCP(server) {
		// An event loop relays plain sockets; TLS sessions keep their copier goroutines.
		opts.Loops = s.f.evloops
	}
	rs := relay.New(s.client, server, opts)
	s.relayStarted(srv, rs)
	e.pick.shrink() // before Start: once started, a retry may use the picker at any moment
	onEnd := func(res relay.Result) { s.relayEnded(e, srv, res) }
	if opts.Loops != nil {
		// The relay owns the client conn now and, on an event loop, closes it (the socket
		// lives on as a duplicate): the session keeps a stand-in, so the closed conn's few
		// hundred bytes go at once. A retry gets a live conn back (relay.Result.Client).
		s.mu.Lock()
		s.client = relayedConn{}
		s.mu.Unlock()
		// On an event loop (runClient nil) the caller's goroutine, with the deep stack of the
		// start-up, exits; otherwise it runs the client copier itself.
		return outcome{runClient: rs.Begin(onEnd)}, true
	}
	rs.Start(onEnd) // TLS: the copiers start on small fresh stacks
	return outcome{}, true
}

// relayStarted records the session's server and relay (which owns both sockets now), and
// hands it a stop or a drain that came while it started.
func (s *session) relayStarted(srv *cluster.Server, rs relayer) {
	r := s.route
	fallback := r.Select.Role == cluster.RoleReplica && srv.State().Role == cluster.RolePrimary
	srv.SessionStarted()
	s.mu.Lock()
	stopped, draining := s.mu.stopped, s.mu.draining
	if stopped == relay.CauseNone {
		s.mu.server = srv
		s.mu.relay = rs
		s.mu.fallback = fallback
	}
	s.mu.greeting = nil
	s.mu.Unlock()
	s.phase.Store(uint32(PhaseRelaying))
	if stopped != relay.CauseNone {
		rs.End(stopped) // the relay tells the client and closes both sockets
	} else if draining != relay.CauseNone {
		rs.Drain(draining)
	}
}

// relayOptions are the route's relay options for a session on srv, with its hooks.
func (s *session) relayOptions(e *establishing, srv *cluster.Server) relay.Options {
	r := s.route
	opts := r.Relay
	opts.LoginDeadline = time.Now().Add(r.Startup)
	opts.IssueKey = s.f.issueKeyFn
	opts.FenceStandby = r.Select.Role == cluster.RolePrimary
	e.srv = srv
	s.est = e
	opts.Hooks = s // one interface for every event, not a closure each: idle sessions keep it
	opts.Observer = s.f.events.SessionObserver(r.Name, srv)
	return opts
}

// relayEnded runs when the relay is over, on a relay goroutine or on its event loop: it must
// not block unless the relay handed the client back (res.Retry, never on a loop).
func (s *session) relayEnded(e *establishing, srv *cluster.Server, res relay.Result) {
	srv.SessionEnded()
	o := outcome{cause: res.Cause, err: res.Err, server: srv, fromClient: res.FromClient, toSrv: res.FromServer, queued: e.queued}
	if res.Retry {
		s.mu.Lock()
		s.mu.server, s.mu.relay = nil, nil
		if res.Client != nil {
			s.client = res.Client // a session that ran on an event loop: a new conn on the socket
		}
		stopped := s.mu.stopped
		s.mu.Unlock()
		switch {
		case stopped != relay.CauseNone:
			o = s.refuseStopped(stopped, nil)
		default:
			// The server was a standby, or refused the login, and the client saw nothing:
			// try another server with the same StartupMessage, on a goroutine of its own.
			go s.retryElsewhere(e, srv, res.Cause)
			return
		}
	}
	e.ticket.Release()
	s.closeNoWait(o) // maybe on the relay's event loop
}

// The session is its relay's relay.Hooks. Each runs where the session relays (Cancel on its
// end goroutine), after startRelay set est.

// BackendKey routes cancels for the client's key to this session.
func (s *session) BackendKey(server, client pgwire.CancelKey) { s.f.registry.SetKey(s, server, client) }

// Cancel sends a CancelRequest for key to the session's server.
func (s *session) Cancel(key pgwire.CancelKey) {
	r := s.route
	_ = s.f.sendCancel(r.dialer(), s.est.srv.Addr, r.ServerTLS, key)
}

// Standby fences the server: a primary route's session found a hot standby.
func (s *session) Standby() { s.f.fence(s.route.Cluster, s.est.srv) }

// Unavailable reports a server that refused the login with 57P03.
func (s *session) Unavailable() {
	if s.f.opts.OnConnectFail != nil {
		s.f.opts.OnConnectFail(s.est.srv)
	}
}

// LoggedIn: once logged in the session is never retried elsewhere, so an idle session need
// not keep its StartupMessage and server picker (a few hundred bytes each), nor its context,
// which only bounds waits and dials before the relay: it is cancelled and replaced by a shared
// one (what it and its done channel take goes).
func (s *session) LoggedIn() {
	s.est.loggedIn()
	s.mu.Lock()
	s.cancel()
	s.ctx, s.cancel = loggedInCtx, noCancel
	s.mu.Unlock()
}

// ServerClosed is scenario (b): the server closed and its FATAL went to a client that stays
// silent. The client may keep its socket for client_fin (counted as half-closed), but not a
// maxconn slot another client could use now. Release is idempotent: relayEnded's is then a
// no-op.
func (s *session) ServerClosed() { s.est.ticket.Release() }

func noCancel() {}

// loggedInCtx is the context of every logged-in session: nothing waits on it any more.
var loggedInCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// retryElsewhere moves a session whose server was a standby (on a primary route) or refused
// the login (57P03: shutting down in a failover) to another server, waiting for one within
// timeouts.failover_wait when none is eligible yet.
func (s *session) retryElsewhere(e *establishing, bad *cluster.Server, cause relay.Cause) {
	s.needContext()
	r := s.route
	e.pick.exclude(bad)
	e.retries++
	s.f.log.Warn("server refused the session before the client saw anything; trying another server",
		"route", r.Name, "server", bad.FullName(), "cause", cause.String())
	var err error
	if e.retries > maxRetries {
		err = fmt.Errorf("%d servers refused the session (%s); pgfront tries at most %d", e.retries, cause, maxRetries+1)
	} else if err = s.rechoose(e.pick, e.ticket); err != nil && !errors.Is(err, errClientLeft) && !errors.Is(err, errClientSpoke) {
		err = &boundError{fmt.Sprintf("%s refused the session (%s) and no other server of route %q was available within timeouts.failover_wait (%s)",
			bad.FullName(), cause, r.Name, r.FailoverWait), err}
	}
	if err != nil {
		if o, ok := s.clientOutcome(err); ok && s.stoppedCause() == relay.CauseNone {
			o.server = bad
			e.ticket.Release()
			s.close(o)
			return
		}
		msg := "the server is a standby (in_hot_standby = on); pgfront does not route writes to it"
		if cause == relay.CauseServerUnavailable {
			msg = "the database system is not accepting connections (starting up or shutting down)"
		}
		o := s.refuse(cause, pgwire.CodeCannotConnectNow, msg,
			fmt.Sprintf("No other server of route %q is available now; reconnect.", r.Name), err)
		o.server = bad
		e.ticket.Release()
		s.close(o)
		return
	}
	s.started(e.connect(s))
}

// picker yields a route's eligible servers in balance order as admission candidates, skipping
// servers that failed to connect during this session.
type picker struct {
	r       *Route
	failed  map[*cluster.Server]bool
	servers []*cluster.Server // the cluster's servers when choices last ran
	states  []cluster.State
	idx     []int
	cands   []balance.Candidate
	order   []int
	limits  []*admission.Limit
}

func newPicker(r *Route) *picker { return &picker{r: r} }

// shrink drops the scratch space of a session that is relaying (a retry grows it again).
func (p *picker) shrink() {
	p.servers, p.states, p.idx, p.cands, p.order, p.limits = nil, nil, nil, nil, nil, nil
}

// exclude keeps srv out of this session's later choices.
func (p *picker) exclude(srv *cluster.Server) {
	if p.failed == nil {
		p.failed = make(map[*cluster.Server]bool)
	}
	p.failed[srv] = true
}

// choices runs under the admission controller's lock: cheap, and never calls it back.
func (p *picker) choices() []*admission.Limit {
	p.servers = p.r.Cluster.Servers()
	p.states = p.r.Cluster.States(p.states[:0], p.servers)
	p.idx, _ = p.r.Select.Select(p.idx[:0], p.states)
	p.cands = p.cands[:0]
	for _, i := range p.idx {
		srv := p.servers[i]
		if !p.failed[srv] {
			p.cands = append(p.cands, balance.Candidate{Index: i, Weight: srv.Weight(), Active: srv.Active()})
		}
	}
	p.order = p.r.Balancer.Order(p.order[:0], p.cands)
	p.limits = p.limits[:0]
	for _, i := range p.order {
		p.limits = append(p.limits, p.servers[i].Limit)
	}
	return p.limits
}

// server is the server whose limit the ticket chose, from the snapshot choices offered.
func (p *picker) server(l *admission.Limit) *cluster.Server {
	for _, srv := range p.servers {
		if srv.Limit == l {
			return srv
		}
	}
	return nil
}

// admit takes the global, route and server slots, waiting in the FIFO queue when needed, and
// says how long it waited. A client that disconnects while queued leaves the queue at once.
func (s *session) admit(p *picker) (*admission.Ticket, time.Duration, outcome, bool) {
	adm := s.f.opts.Admission
	fixed := []*admission.Limit{s.f.opts.Global, s.route.Limit}
	if t, ok := adm.TryAcquire(fixed, p.choices); ok {
		return t, 0, outcome{}, true
	}
	start := time.Now()
	s.phase.Store(uint32(PhaseQueued))
	s.f.events.QueueChanged(s.route.Name, 1)
	t, o, ok := s.wait(p, fixed)
	waited := time.Since(start)
	s.f.events.QueueChanged(s.route.Name, -1)
	s.f.events.QueueWaited(s.route.Name, waited)
	return t, waited, o, ok
}

// errNoServer means no server of the route's role appeared within timeouts.failover_wait;
// errNoSlot that every slot was taken and timeouts.queue is 0.
var (
	errNoServer = errors.New("no eligible server appeared within timeouts.failover_wait")
	errNoSlot   = errors.New("no free connection slot, and timeouts.queue is 0 (no wait)")
)

// wait queues for the slots admit could not take at once, for at most timeouts.queue. While
// the route has no eligible server at all (a failover in progress, a split brain), it waits
// for the cluster to change instead, until timeouts.failover_wait after it began. The whole
// wait ends by the longer of the two, and when the client leaves or speaks.
func (s *session) wait(p *picker, fixed []*admission.Limit) (*admission.Ticket, outcome, bool) {
	r := s.route
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, max(r.Queue, r.FailoverWait))
	defer cancel()
	failover, failoverCancel := context.WithDeadline(ctx, start.Add(r.FailoverWait))
	defer failoverCancel()
	watch := watchClient(s.client, cancel)
	var t *admission.Ticket
	var err error
	for {
		changed := r.Cluster.Changed() // taken before looking, so no change is missed
		t, err = s.acquire(ctx, p, fixed)
		if !errors.Is(err, admission.ErrNoCandidates) {
			break
		}
		select {
		case <-changed:
			continue
		case <-failover.Done():
			err = errNoServer
		}
		break
	}
	spoke := watch.stop()
	if err == nil && spoke {
		t.Release()
		o, _ := s.clientOutcome(errClientSpoke)
		return nil, o, false
	}
	if err == nil {
		return t, outcome{}, true
	}
	switch {
	case s.stoppedCause() != relay.CauseNone:
		return nil, s.refuseStopped(s.stoppedCause(), nil), false
	case watch.gone():
		o, _ := s.clientOutcome(errClientLeft)
		return nil, o, false
	case errors.Is(err, errNoServer), errors.Is(err, admission.ErrNoCandidates):
		return nil, s.refuseNoServer(err), false
	case errors.Is(err, errNoSlot):
		return nil, s.refuse(relay.CauseMaxConn, pgwire.CodeTooManyConnections, "sorry, too many clients already",
			"The connection limit is reached and timeouts.queue is 0: pgfront does not queue.", err), false
	case errors.Is(err, admission.ErrQueueFull):
		return nil, s.refuse(relay.CauseMaxConn, pgwire.CodeTooManyConnections, "sorry, too many clients already",
			"pgfront's connection limit is reached and its wait queue is full.",
			&boundError{"no free connection slot, and the wait queue is full", err}), false
	case errors.Is(err, admission.ErrQueueTimeout), errors.Is(err, context.DeadlineExceeded):
		return nil, s.refuse(relay.CauseQueueTimeout, pgwire.CodeTooManyConnections, "sorry, too many clients already",
			fmt.Sprintf("pgfront waited %s (timeouts.queue) for a free connection slot of route %q.", r.Queue, r.Name),
			&boundError{fmt.Sprintf("no free connection slot within timeouts.queue (%s)", r.Queue), err}), false
	}
	return nil, s.refuse(relay.CauseMaxConn, pgwire.CodeTooManyConnections, "sorry, too many clients already", "", err), false
}

// acquire is one try of wait: the slots now or within timeouts.queue (never past ctx), or
// ErrNoCandidates at once when the route has no eligible server.
func (s *session) acquire(ctx context.Context, p *picker, fixed []*admission.Limit) (*admission.Ticket, error) {
	adm := s.f.opts.Admission
	if s.route.Queue <= 0 {
		if t, ok := adm.TryAcquire(fixed, p.choices); ok {
			return t, nil
		}
		if len(p.choices()) == 0 {
			return nil, admission.ErrNoCandidates
		}
		return nil, errNoSlot
	}
	qctx, cancel := context.WithTimeout(ctx, s.route.Queue)
	defer cancel()
	return adm.Acquire(qctx, fixed, p.choices)
}

// refuseNoServer tells the client the route has no server of its role, and why when pgfront
// knows: every server failed TLS verification is a configuration problem, not a failover; two
// servers that both claim to be primary are a split brain.
func (s *session) refuseNoServer(err error) outcome {
	r := s.route
	msg := fmt.Sprintf("no %s server available for route %q", r.Select.Role, r.Name)
	why := fmt.Sprintf("no %s server of cluster %q within timeouts.failover_wait (%s)", r.Select.Role, r.Cluster.Name, r.FailoverWait)
	if r.FailoverWait <= 0 {
		why = fmt.Sprintf("no %s server of cluster %q, and timeouts.failover_wait is 0 (no wait)", r.Select.Role, r.Cluster.Name)
	}
	if srv, st, ok := everyServerFailedTLS(r.Cluster); ok {
		return s.refuse(relay.CauseNoServer, pgwire.CodeCannotConnectNow, msg+": every server failed TLS verification",
			fmt.Sprintf("pgfront could not verify the TLS certificate of any server of cluster %q (its server_tls); "+
				"this is a certificate or configuration problem, not a failover. See pgfront's log.", r.Cluster.Name),
			&boundError{fmt.Sprintf("%s: every server failed TLS verification (%s: %s)", why, srv.FullName(), st.LastErr), err})
	}
	if split := r.Cluster.SplitBrain(); len(split) > 0 && r.Select.Role != cluster.RoleAny {
		claim := splitBrainClaim(split)
		return s.refuse(relay.CauseSplitBrain, pgwire.CodeCannotConnectNow, msg+": split brain: "+claim,
			fmt.Sprintf("pgfront routes no writes while more than one server of cluster %q claims to be primary and nothing decides "+
				"between them; it waited %s (timeouts.failover_wait). Stop or demote one of them.", r.Cluster.Name, r.FailoverWait),
			&boundError{fmt.Sprintf("%s: split brain: %s", why, claim), err})
	}
	return s.refuse(relay.CauseNoServer, pgwire.CodeCannotConnectNow, msg,
		fmt.Sprintf("pgfront waited %s (timeouts.failover_wait) for one to appear in cluster %q; a failover may be in progress.", r.FailoverWait, r.Cluster.Name),
		&boundError{why, err})
}

// everyServerFailedTLS reports whether every server of cl is down because its certificate did
// not verify, with one of them and its state.
func everyServerFailedTLS(cl *cluster.Cluster) (*cluster.Server, cluster.State, bool) {
	servers := cl.Servers()
	if len(servers) == 0 {
		return nil, cluster.State{}, false
	}
	for _, srv := range servers {
		if st := srv.State(); st.Up || !st.TLSVerifyFailed {
			return nil, cluster.State{}, false
		}
	}
	return servers[0], servers[0].State(), true
}

// boundError is an error in pgfront's words (which bound ran out, what was missing), keeping
// the error behind it for errors.Is and errors.As.
type boundError struct {
	msg string
	err error
}

func (e *boundError) Error() string { return e.msg }
func (e *boundError) Unwrap() error { return e.err }

// maxNameLen is how much of a client-chosen name (application_name) the log keeps:
// PostgreSQL's NAMEDATALEN - 1.
const maxNameLen = 63

// truncateName bounds a client-chosen name for logs and views.
func truncateName(name string) string {
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	return strings.ToValidUTF8(name, "")
}

// connect dials the ticket's server (negotiating TLS with it when the cluster asks and negotiate
// is set), moving on to the next eligible server on failure (at most ConnectRetries more). On
// success it returns the server conn, owned by the caller.
func (s *session) connect(p *picker, t *admission.Ticket, negotiate bool, failed error) (*cluster.Server, net.Conn, outcome, bool) {
	r := s.route
	var lastErr error
	for attempt := 0; ; attempt++ {
		srv := p.server(t.Choice())
		if srv == nil {
			break
		}
		s.phase.Store(uint32(PhaseConnecting))
		var c net.Conn
		err := failed // the first attempt already failed on an event loop
		if failed == nil {
			c, err = s.dial(srv, negotiate)
		}
		failed = nil
		if err == nil {
			return srv, c, outcome{}, true
		}
		why := s.connectError(err)
		lastErr = fmt.Errorf("connecting to server %s (%s): %w", srv.FullName(), srv.Addr, why)
		if s.stoppedCause() != relay.CauseNone || s.ctx.Err() != nil {
			break
		}
		s.f.log.Warn("server connect failed", "route", r.Name, "server", srv.FullName(), "addr", srv.Addr, "err", why.Error())
		if s.f.opts.OnConnectFail != nil {
			s.f.opts.OnConnectFail(srv)
		}
		if attempt >= r.ConnectRetries {
			break
		}
		p.exclude(srv)
		if err := s.rechoose(p, t); err != nil {
			if o, ok := s.clientOutcome(err); ok && s.stoppedCause() == relay.CauseNone {
				return nil, nil, o, false
			}
			break
		}
	}
	if c := s.stoppedCause(); c != relay.CauseNone {
		return nil, nil, s.refuseStopped(c, lastErr), false
	}
	if tlsconf.IsVerifyError(lastErr) {
		return nil, nil, s.refuse(relay.CauseConnectFailed, pgwire.CodeConnectionFailure,
			fmt.Sprintf("could not connect to a server for route %q: its TLS certificate did not verify", r.Name),
			fmt.Sprintf("pgfront could not verify the server's TLS certificate (server_tls of cluster %q); see its log.", r.Cluster.Name), lastErr), false
	}
	return nil, nil, s.refuse(relay.CauseConnectFailed, pgwire.CodeConnectionFailure,
		fmt.Sprintf("could not connect to a server for route %q", r.Name),
		"pgfront could not reach any eligible server; see its log.", lastErr), false
}

// connectError says why a connect failed, in the config's words when its bound ran out.
func (s *session) connectError(err error) error {
	if (netx.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded)) && s.ctx.Err() == nil && !tlsconf.IsVerifyError(err) {
		return &boundError{fmt.Sprintf("no connection within timeouts.connect (%s)", s.route.Connect), err}
	}
	return err
}

// rechoose moves the ticket to another eligible server. With none left (the failed server was
// the only primary: a failover is starting), it waits for the cluster to change, bounded by
// timeouts.failover_wait, like a client that arrives during the failover. The client is watched as in
// wait: errClientLeft if it closes meanwhile (a switchover must not hold, then connect, clients
// that are gone), errClientSpoke if it sends bytes out of turn.
func (s *session) rechoose(p *picker, t *admission.Ticket) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.route.FailoverWait)
	defer cancel()
	watch := watchClient(s.client, cancel)
	err := s.rechooseWatched(ctx, p, t)
	switch spoke := watch.stop(); {
	case spoke:
		return errClientSpoke
	case watch.gone():
		return errClientLeft
	}
	return err
}

// errClientLeft and errClientSpoke end a wait for a server: the client closed meanwhile, or sent
// bytes before authentication (a protocol error). clientOutcome turns them into the outcome.
var (
	errClientLeft  = errors.New("client left the queue")
	errClientSpoke = errors.New("unexpected message from client before authentication")
)

// clientOutcome is how the session ends after a wait that errClientLeft or errClientSpoke
// ended; ok is false for any other error.
func (s *session) clientOutcome(err error) (o outcome, ok bool) {
	switch {
	case errors.Is(err, errClientSpoke):
		return s.refuse(relay.CauseProtocolError, pgwire.CodeProtocolViolation, errClientSpoke.Error(), "", nil), true
	case errors.Is(err, errClientLeft):
		return outcome{cause: relay.CauseClientEOF, err: err}, true
	}
	return outcome{}, false
}

// rechooseWatched is rechoose's loop, ended by ctx (timeouts.failover_wait, or the client watch).
func (s *session) rechooseWatched(ctx context.Context, p *picker, t *admission.Ticket) error {
	r := s.route
	for {
		changed := r.Cluster.Changed()
		err := t.Rechoose(ctx, p.choices)
		if !errors.Is(err, admission.ErrNoCandidates) {
			return err
		}
		select {
		case <-changed:
			// The failed server may be back in its role (a restart) or another took it.
			clear(p.failed)
		case <-ctx.Done():
			return err
		}
	}
}

// clientWatch notices a queued client that disconnects (or speaks out of turn).
type clientWatch struct {
	c    net.Conn
	done chan struct{}
	read bool // got bytes: valid after stop
	eof  bool // the client left: valid after stop
}

func watchClient(c net.Conn, cancel context.CancelFunc) *clientWatch {
	w := &clientWatch{c: c, done: make(chan struct{})}
	_ = c.SetReadDeadline(time.Time{})
	go w.run(cancel)
	return w
}

// run blocks in a one-byte read; any result but our own stop ends the wait.
func (w *clientWatch) run(cancel context.CancelFunc) {
	defer close(w.done)
	var b [1]byte
	n, err := w.c.Read(b[:])
	if n > 0 {
		w.read = true
		cancel()
		return
	}
	if err != nil && !netx.IsTimeout(err) {
		w.eof = true
		cancel()
	}
}

// stop ends the watch and reports whether the client sent bytes.
func (w *clientWatch) stop() bool {
	_ = w.c.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	_ = w.c.SetReadDeadline(time.Time{})
	return w.read
}

func (w *clientWatch) gone() bool { return w.eof }

// relayedConn stands in for the client conn of a session whose relay took it (see startRelay):
// what the session still does with its client after that (close it, set a deadline when it is
// stopped) is the relay's job, so these are no-ops, and I/O fails as on a closed conn.
type relayedConn struct{}

func (relayedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (relayedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (relayedConn) Close() error                     { return nil }
func (relayedConn) LocalAddr() net.Addr              { return relayedAddr{} }
func (relayedConn) RemoteAddr() net.Addr             { return relayedAddr{} }
func (relayedConn) SetDeadline(time.Time) error      { return nil }
func (relayedConn) SetReadDeadline(time.Time) error  { return nil }
func (relayedConn) SetWriteDeadline(time.Time) error { return nil }

type relayedAddr struct{}

func (relayedAddr) Network() string { return "tcp" }
func (relayedAddr) String() string  { return "relayed" }
