package frontend

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// TLSMode is what a route does with a client that asks for TLS.
type TLSMode uint8

// Route TLS modes.
const (
	TLSDisable     TLSMode = iota // answer SSLRequest with 'N'
	TLSTerminate                  // complete TLS in pgfront and run the session on top
	TLSPassthrough                // forward SSLRequest (or a direct ClientHello) and relay blind
)

// RouteTLS is a route's client-side TLS.
type RouteTLS struct {
	Mode TLSMode
	// Config is pgfront's server-side TLS configuration (terminate): certificates, client CA,
	// ALPN "postgresql" for PostgreSQL 17's direct TLS.
	Config *tls.Config
	// Require refuses a client that did not use TLS (terminate): FATAL 28000.
	Require bool
	// SNI maps a TLS server name (lower case; "*.example.com" matches one label) to the route
	// that serves it: the same listener, name and limits, another cluster.
	SNI map[string]*Route
}

// ServerTLS negotiates TLS on a new connection to a server (PostgreSQL's SSLRequest), returning
// the connection to use. Implemented by tlsconf.Client.
type ServerTLS interface {
	Negotiate(ctx context.Context, conn net.Conn, addr string) (net.Conn, error)
}

// tlsHandshakeByte is the first byte of a TLS record carrying a handshake (a ClientHello): how
// PostgreSQL 17's direct TLS (sslnegotiation=direct) starts, where a startup packet would start
// with its length's high byte (0 for any packet PostgreSQL accepts).
const tlsHandshakeByte = 0x16

// prefixConn gives back bytes already read from a conn before the rest of it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// finConn is a TLS connection whose CloseWrite also sends the TCP FIN: tls.Conn's CloseWrite
// only sends close_notify, and a peer (or the kernel's socket state) should see the half-close
// the relay means.
type finConn struct {
	*tls.Conn
	raw net.Conn
}

func (c finConn) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if hc, ok := c.raw.(interface{ CloseWrite() error }); ok {
		if err2 := hc.CloseWrite(); err == nil {
			err = err2
		}
	}
	return err
}

// WrapTLS returns a TLS connection whose CloseWrite also half-closes raw (the connection the
// TLS runs on), for relays.
func WrapTLS(tc *tls.Conn, raw net.Conn) net.Conn { return finConn{Conn: tc, raw: raw} }

// isTLS reports whether c is a TLS connection pgfront terminates.
func isTLS(c net.Conn) (tls.ConnectionState, bool) {
	switch v := c.(type) {
	case finConn:
		return v.ConnectionState(), true
	case *tls.Conn:
		return v.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// rawTCP reports whether c is a plain TCP connection (the relay can park those).
func rawTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// startTLS completes a TLS handshake on the client connection (after 'S', or on a direct TLS
// ClientHello already read into prefix) and makes the TLS connection the session's client.
// The handshake is bounded by the startup deadline already set on the connection.
func (s *session) startTLS(prefix []byte, direct bool) (outcome, bool) {
	r := s.route
	raw := s.client
	var under net.Conn = raw
	if tc, ok := raw.(*net.TCPConn); ok {
		under = netx.RawIO(tc) // crypto/tls reads and writes it: keep those calls cheap
	}
	if len(prefix) > 0 {
		under = &prefixConn{Conn: under, prefix: prefix}
	}
	watch := newAlertWatch(under)
	tc := tls.Server(watch, r.TLS.Config)
	err := tc.HandshakeContext(s.ctx)
	watch.stop()
	if err != nil {
		auth := r.TLS.Config.ClientAuth
		result, why := handshakeFailure{err: err, watch: watch, startup: r.Startup, peerCerts: len(tc.ConnectionState().PeerCertificates),
			wantCert: auth == tls.RequireAnyClientCert || auth == tls.RequireAndVerifyClientCert}.classify()
		if c := s.stoppedCause(); c != relay.CauseNone {
			return outcome{cause: c, err: err}, false // pgfront stopped it: not the handshake's failure
		}
		s.f.events.TLSHandshake(r.Name, result)
		cause := relay.CauseTLSError
		if result == TLSResultTimeout {
			cause = relay.CauseStartupTimeout
		}
		return outcome{cause: cause, err: why, tlsResult: result}, false
	}
	s.f.events.TLSHandshake(r.Name, TLSResultOK)
	cs := tc.ConnectionState()
	conn := WrapTLS(tc, raw)
	s.mu.Lock()
	s.client = conn
	s.mu.tls = tlsSummary(cs)
	s.mu.Unlock()
	if direct && cs.NegotiatedProtocol != tlsconf.ALPN {
		// PostgreSQL refuses direct TLS without ALPN (it protects against cross-protocol
		// attacks); so does pgfront, saying why over the TLS it just set up.
		return s.refuse(relay.CauseProtocolError, pgwire.CodeProtocolViolation,
			"direct TLS connection without ALPN protocol \"postgresql\"",
			"Use a PostgreSQL 17+ client with sslnegotiation=direct, or connect with the SSLRequest (sslnegotiation=postgres).", nil), false
	}
	if vr := r.TLS.sniRoute(cs.ServerName); vr != nil {
		s.mu.Lock()
		s.route = vr
		s.mu.Unlock()
	}
	return outcome{}, true
}

// sniRoute is the route a TLS server name selects, or nil for the route itself.
func (t *RouteTLS) sniRoute(name string) *Route {
	if len(t.SNI) == 0 || name == "" {
		return nil
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if r := t.SNI[name]; r != nil {
		return r
	}
	if _, rest, ok := strings.Cut(name, "."); ok {
		return t.SNI["*."+rest]
	}
	return nil
}

// tlsSummary is how a terminated TLS session shows in logs and views: version and server name.
func tlsSummary(cs tls.ConnectionState) string {
	out := tls.VersionName(cs.Version)
	if cs.ServerName != "" {
		out += " sni=" + cs.ServerName
	}
	if len(cs.PeerCertificates) > 0 {
		out += " client_cn=" + cs.PeerCertificates[0].Subject.CommonName
	}
	return out
}

// readByte reads the first byte of a connection.
func readByte(c net.Conn) (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// establishBlind serves a passthrough session: the client's first bytes (an SSLRequest, or a
// direct TLS ClientHello's first byte) go to a server, and from there everything is relayed
// without being read.
func (s *session) establishBlind(first []byte) (outcome, bool) {
	r := s.route
	pick := newPicker(r)
	ticket, queued, o, ok := s.admit(pick)
	if !ok {
		o.queued = queued
		return o, false
	}
	srv, server, o, ok := s.connect(pick, ticket, false, nil)
	if !ok {
		ticket.Release()
		o.queued = queued
		return o, false
	}
	_ = server.SetWriteDeadline(time.Now().Add(r.Connect))
	if _, err := server.Write(first); err != nil {
		_ = server.Close()
		ticket.Release()
		return outcome{cause: relay.CauseServerReset, err: fmt.Errorf("forwarding to %s: %w", srv.FullName(), err), server: srv, queued: queued}, false
	}
	_ = server.SetWriteDeadline(time.Time{})
	_ = s.client.SetDeadline(time.Time{})
	fallback := r.Select.Role == cluster.RoleReplica && srv.State().Role == cluster.RolePrimary
	p := relay.NewPipe(s.client, server, relay.PipeOptions{
		Idle:      r.Relay.ClientIdle,
		ClientFin: r.Relay.ClientFin,
		ServerFin: r.Relay.ServerFin,
		Observer:  s.f.events.SessionObserver(r.Name, srv),
	})
	srv.SessionStarted()
	s.mu.Lock()
	stopped := s.mu.stopped
	s.mu.server, s.mu.relay, s.mu.tls, s.mu.fallback = srv, p, "passthrough", fallback
	s.mu.Unlock()
	s.phase.Store(uint32(PhaseRelaying))
	if stopped != relay.CauseNone {
		p.End(stopped)
	}
	p.Start(func(res relay.Result) {
		srv.SessionEnded()
		ticket.Release()
		s.close(outcome{cause: res.Cause, err: res.Err, server: srv, fromClient: res.FromClient, toSrv: res.FromServer, queued: queued})
	})
	return outcome{}, true
}
