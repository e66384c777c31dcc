package frontend

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/resolve"
)

// A plain route's sessions start on the event loops: a loop watches a duplicate of the
// listening socket and accepts (relay.Loops.Listen), greets the new socket on itself
// (relay.Loops.GreetFrom), reads the StartupMessage, takes the maxconn slots if they are
// free, connects to the server and relays; no goroutine runs or is woken for the session and
// the scheduler is told of no system call. The listener's goroutine only waits meanwhile, to
// back off after a failed accept and to take over when a reload gives the listener a route
// that does not greet. Everything else the session's
// goroutine does as before, from where the loop left the socket (HandOff): a CancelRequest,
// a malformed packet, a wait for a slot or a server, a server given by host name, a failed
// connect, a stop. Routes with TLS or the PROXY protocol start on a goroutine.

// greets reports whether r's sessions start on the event loops.
func (f *Frontend) greets(r *Route) bool {
	return f.evloops != nil && r.TLS.Mode == TLSDisable && r.ProxyProtocol == nil && r.ServerTLS == nil
}

// What acceptOnLoops returned.
type loopsOutcome uint8

const (
	listenerClosed loopsOutcome = iota + 1
	loopsClosed                 // for good: Go's accept takes over
	retry                       // the route changed to one that does not greet, or a failure was backed off
)

// acceptOnLoops has an event loop accept l's clients (relay.Loops.Listen on a duplicate of
// the listening socket, outside Go's poller) until the listener is closed or its route no
// longer greets. The accept loop's goroutine waits here meanwhile, for the loops' accept
// failures, which it logs and retries after a backoff, as Go's accept's.
func (f *Frontend) acceptOnLoops(l *listener, backoff *time.Duration) loopsOutcome {
	select {
	case <-l.failed: // from a watch stopped since: stale
	default:
	}
	l.loops.Lock()
	if l.loops.closed {
		l.loops.Unlock()
		return listenerClosed
	}
	fd, err := dupSocket(l.ln)
	if err != nil {
		l.loops.Unlock()
		// Out of descriptors, say, as an accept would be: the same backoff.
		if !f.acceptBackoff(l.route.Load(), err, backoff) {
			return listenerClosed // the frontend is closing
		}
		return retry
	}
	ln, err := f.evloops.Listen(fd, loopAcceptor{f, l})
	if err != nil {
		l.loops.Unlock()
		_ = unix.Close(fd)
		f.log.Warn("accepting on goroutines: the event loops are closed", "route", l.route.Load().Name)
		return loopsClosed
	}
	l.loops.ln = ln
	l.loops.Unlock()
	done := func() loopsOutcome {
		l.loops.Lock()
		defer l.loops.Unlock()
		l.loops.ln = nil
		if l.loops.closed {
			return listenerClosed
		}
		return retry
	}
	for {
		select {
		case <-ln.Done():
			return done()
		case err := <-l.failed:
			select {
			case <-ln.Done(): // stopped meanwhile: no backoff to wait
				return done()
			default:
			}
			if f.acceptBackoff(l.route.Load(), err, backoff) {
				ln.Resume()
			} // else the frontend is closing: its listeners are being closed
		}
	}
}

// dupSocket duplicates a listener's socket for a loop's epoll set (a seam for tests).
var dupSocket = func(ln net.Listener) (int, error) { return netx.DupFD(ln) }

// loopAcceptor is a listener's relay.Acceptor. Its methods run on a loop and do not block.
type loopAcceptor struct {
	f *Frontend
	l *listener
}

// Accepted implements relay.Acceptor: the session starts on the accepting loop, or, if a
// reload changed the route to one that does not greet, on a goroutine, and the listener
// goes back to Go's accept.
func (a loopAcceptor) Accepted(fd int, peer netip.AddrPort, on relay.Origin) {
	f, l := a.f, a.l
	r := l.route.Load()
	if f.greets(r) {
		f.greet(r, fd, peer, on)
		return
	}
	l.loops.Lock()
	if l.loops.ln != nil {
		l.loops.ln.Stop()
	}
	l.loops.Unlock()
	c, err := netx.FDConn(fd)
	if err != nil {
		go f.log.Warn("accept failed", "route", r.Name, "err", err) // a log line may wait: not on a loop
		return
	}
	f.serveOnGoroutine(r, c, false)
}

// AcceptFailed implements relay.Acceptor: the accept loop's goroutine backs off.
func (a loopAcceptor) AcceptFailed(err error) {
	select {
	case a.l.failed <- err:
	default: // one is waiting already
	}
}

// greet starts a session on an accepted socket on an event loop, the one of on if it is not
// much busier than another (or, if the loops are closed, on a goroutine).
func (f *Frontend) greet(r *Route, fd int, remote netip.AddrPort, on relay.Origin) {
	peer := "unknown"
	if remote.IsValid() {
		peer = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()).String()
	}
	_ = r.ClientTCP.ApplyFD(fd) // as the listener's configuration would (best effort, as there)
	s := f.newSession(r, relayedConn{}, peer, true)
	f.sessions.Add(1)
	rs, err := f.evloops.GreetFrom(on, fd, s.start.Add(r.Startup), s)
	if err != nil {
		c, cerr := netx.FDConn(fd)
		go s.HandOff(c, cerr) // the session's own goroutine, not the accept loop's
		return
	}
	s.mu.Lock()
	// The loop may have relayed (Connected) or handed off the session already.
	greeting := !s.mu.handedOff && s.mu.relay == nil
	if greeting {
		s.mu.greeting = rs
	}
	stopped := s.mu.stopped
	s.mu.Unlock()
	if greeting && stopped != relay.CauseNone {
		rs.End(stopped) // a stop that came before greeting was set
	}
}

// Packet implements relay.Greeter: SSLRequest and GSSENCRequest get 'N' (the route has no
// TLS); a StartupMessage connects when the slots are free and the server's address is known
// (an IP address, or the one its host name last connected to).
func (s *session) Packet(pkt *pgwire.FirstPacket) relay.Greeting {
	switch pkt.Kind {
	case pgwire.KindSSLRequest, pgwire.KindGSSENCRequest:
		done := &s.sslDone
		if pkt.Kind == pgwire.KindGSSENCRequest {
			done = &s.gssDone
		}
		if *done {
			break // a repeat: the goroutine refuses it
		}
		*done = true
		return relay.Greeting{Action: relay.GreetAnswer, Answer: 'N'}
	case pgwire.KindStartup:
		return s.greetStartup(pkt)
	}
	return relay.Greeting{Action: relay.GreetHandOff}
}

// greetStartup admits a StartupMessage at once or hands it to the goroutine (which reads it
// again from the socket).
func (s *session) greetStartup(pkt *pgwire.FirstPacket) relay.Greeting {
	r := s.route
	s.mu.Lock()
	stopped := s.mu.stopped
	s.mu.Unlock()
	if stopped != relay.CauseNone {
		return relay.Greeting{Action: relay.GreetHandOff}
	}
	pick := newPicker(r)
	fixed := []*admission.Limit{s.f.opts.Global, r.Limit}
	t, ok := s.f.opts.Admission.TryAcquire(fixed, pick.choices)
	if !ok {
		return relay.Greeting{Action: relay.GreetHandOff} // the goroutine waits in the queue
	}
	srv := pick.server(t.Choice())
	var addr netip.AddrPort
	remembered, ok := false, false
	if srv != nil {
		addr, remembered, ok = s.f.resolved.Lookup(srv.Addr)
	}
	if !ok {
		t.Release() // a host name to look up, a zone: the goroutine's dialer does it
		return relay.Greeting{Action: relay.GreetHandOff}
	}
	setUser(s, pkt)
	s.est = &establishing{pkt: pkt, pick: pick, ticket: t, srv: srv, addr: addr}
	s.phase.Store(uint32(PhaseConnecting))
	connect := r.Connect
	if remembered {
		// A stale address that does not answer leaves time for the name (HandOff gives the
		// goroutine's dial what is left).
		s.est.connectBy = time.Now().Add(connect)
		connect = resolve.FirstTry(connect)
	}
	return relay.Greeting{Action: relay.GreetConnect, Server: addr, ConnectTimeout: connect, Setup: r.setupServer()}
}

// setUser records the StartupMessage's user, database and application_name for the log and
// the admin views, and drops its parameters (Raw is what is forwarded).
func setUser(s *session, pkt *pgwire.FirstPacket) {
	user, database := pkt.Params["user"], pkt.Params["database"]
	if database == "" {
		database = user
	}
	s.mu.Lock()
	s.mu.user, s.mu.database = user, database
	s.mu.appName = truncateName(pkt.Params["application_name"])
	s.mu.Unlock()
	pkt.Params = nil
}

// Connected implements relay.Greeter: what startRelay does once the StartupMessage went out.
func (s *session) Connected(rs *relay.Session, fd int) (relay.Options, func(relay.Result)) {
	r, e := s.route, s.est
	srv := e.srv
	// The server's address is the one connected to (greetStartup chose it): only the local
	// one needs a system call.
	if local, err := netx.RawLocalAddr(fd); err == nil {
		s.f.events.ServerConn(r.Name, srv, addrConn{local: net.TCPAddrFromAddrPort(local), remote: net.TCPAddrFromAddrPort(e.addr)})
	}
	opts := s.relayOptions(e, srv)
	s.relayStarted(srv, rs)
	e.pick.shrink()
	return opts, func(res relay.Result) { s.relayEnded(e, srv, res) }
}

// HandOff implements relay.Greeter: the session goes on on a goroutine of its own, from where
// the loop left the client's socket.
func (s *session) HandOff(client net.Conn, why error) {
	s.needContext()
	s.mu.Lock()
	s.mu.greeting = nil
	s.mu.handedOff = true
	if client != nil {
		s.client = client
	}
	stopped := s.mu.stopped
	s.mu.Unlock()
	e := s.est
	var o outcome
	var relaying bool
	var ce *relay.ConnectError
	switch {
	case client == nil || stopped != relay.CauseNone:
		if e != nil {
			e.ticket.Release()
		}
		o = outcome{cause: relay.CauseClientReset, err: why} // no conn could be made on the socket
		if client != nil {
			o = s.refuseStopped(stopped, nil)
		}
	case e == nil && why != nil && !errors.Is(why, relay.ErrGreetingStopped):
		// The client closed, reset or ran out of time before its StartupMessage was in (the
		// loop's peek took the socket's error: classify it here).
		o = s.startupFailed(why)
	case e == nil:
		// The StartupMessage was not taken: the goroutine reads it (and any answer) itself.
		o, relaying = s.run()
	case errors.As(why, &ce):
		s.est = nil // set again by startRelay
		failed := ce.Err
		if ce.Local {
			failed = nil // not the server's fault: the goroutine dials it itself
		}
		if !e.connectBy.IsZero() && !ce.Local {
			// The address its host name had may be stale (a pod that moved): the goroutine
			// dials the name afresh in what is left of timeouts.connect, and only that dial's
			// failure counts against the server.
			s.f.resolved.Forget(e.srv.Addr, e.addr)
			s.dialBy = e.connectBy
			failed = nil
		}
		o, relaying = e.connectAfter(s, failed)
	default:
		e.ticket.Release()
		o = outcome{cause: relay.CauseClientReset, err: why}
	}
	s.started(o, relaying)
}

// needContext gives a session greeted on a loop the context its goroutine's waits and dials
// stop on, once it needs one (a hand-off, a login retried elsewhere); a stop that came before
// cancels it at once. Sessions that never leave the loop make none.
func (s *session) needContext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx != loggedInCtx {
		return // it has its own
	}
	s.ctx, s.cancel = context.WithCancel(s.f.ctx)
	if s.mu.stopped != relay.CauseNone {
		s.cancel()
	}
}

// addrConn is a stand-in conn that only has addresses (for Events.ServerConn).
type addrConn struct {
	relayedConn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// setupServer is serverSetup, or ServerTCP's options for a route not applied (tests that
// start sessions by hand).
func (r *Route) setupServer() func(fd int) error {
	if r.serverSetup != nil {
		return r.serverSetup
	}
	return r.ServerTCP.ApplyFD
}
