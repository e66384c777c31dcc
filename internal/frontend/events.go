package frontend

import (
	"net"
	"time"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/relay"
)

// Events is told what sessions do, for metrics and the admin views. Its methods are called
// from many session goroutines at once and must be cheap; nil Options.Events means none.
type Events interface {
	// SessionAccepted is called once per accepted connection.
	SessionAccepted(route string)
	// AcceptFailed is called per failed accept on route's listener (retried after a backoff).
	AcceptFailed(route string)
	// SessionEnded is called once per accepted connection, when it is closed.
	SessionEnded(e Ended)
	// QueueChanged is called with +1 when a client starts waiting (for a slot or for a
	// server) and -1 when it stops.
	QueueChanged(route string, delta int)
	// QueueWaited is called with how long a client waited, admitted or not.
	QueueWaited(route string, d time.Duration)
	// CancelRequest is called per CancelRequest received on route, with its result (one of
	// CancelResults).
	CancelRequest(route, result string)
	// TLSHandshake is called per TLS handshake with a client of route: result is "ok" or why
	// it failed (one of TLSResults).
	TLSHandshake(route, result string)
	// SessionObserver returns the relay observer for a session of route on srv (may be nil).
	SessionObserver(route string, srv *cluster.Server) relay.Observer
	// ServerConn is called with each server connection pgfront dialled for a session of route.
	ServerConn(route string, srv *cluster.Server, c net.Conn)
}

// Ended describes a closed client connection: the session end record, which the log line
// (one per connection) is written from.
type Ended struct {
	ID     uint64
	Route  string
	Server *cluster.Server // nil if it never reached one
	// Client is the client's address: the one a PROXY protocol header carried, else the
	// socket's peer.
	Client string
	// Via is the socket's peer (the load balancer) when Client came from a PROXY protocol
	// header; "" otherwise.
	Via             string
	User            string
	Database        string
	ApplicationName string // from the StartupMessage ("" when the client sent none)
	Cause           relay.Cause
	Refused         bool // refused before relaying (pgfront told the client why)
	Started         time.Time
	Duration        time.Duration
	Queued          time.Duration // waiting for a maxconn slot or an eligible server
	// FromClient and FromServer are the bytes relayed each way.
	FromClient, FromServer int64
	TLS                    string // "" (plain), "TLSv1.3 sni=...", or "passthrough"
	// TLSResult is why the client's TLS handshake failed (one of TLSResults; "" when it did
	// not fail).
	TLSResult string
	// Fallback: a replica route's session placed on the primary (no replica qualified).
	Fallback bool
	// Cancels is how many of the client's CancelRequests pgfront forwarded to this session's
	// server: queries the client cancelled.
	Cancels int
	// Err is what went wrong, in pgfront's words ("" for a clean end).
	Err string
	// SQLState is the server's SQLSTATE when it refused the login (cause login_failed).
	SQLState string
	// CancelResult is set for a connection that carried a CancelRequest (cause
	// cancel_request): one of CancelResults; Server is then the server the cancel was for
	// (the only one of a fallback), and CancelFor the session here whose query it cancelled
	// (0: none here). CancelPeer is the peer instance that took it, CancelVia "predecessor"
	// when the draining process this one took over from did, CancelServers how many servers a
	// fallback sent it to.
	CancelResult  string
	CancelFor     uint64
	CancelPeer    string
	CancelVia     string
	CancelServers int
}

// noEvents is the Events used when Options.Events is nil.
type noEvents struct{}

func (noEvents) SessionAccepted(string)                                 {}
func (noEvents) AcceptFailed(string)                                    {}
func (noEvents) SessionEnded(Ended)                                     {}
func (noEvents) QueueChanged(string, int)                               {}
func (noEvents) QueueWaited(string, time.Duration)                      {}
func (noEvents) CancelRequest(string, string)                           {}
func (noEvents) TLSHandshake(string, string)                            {}
func (noEvents) SessionObserver(string, *cluster.Server) relay.Observer { return nil }
func (noEvents) ServerConn(string, *cluster.Server, net.Conn)           {}

// Phase is where a session is in its life.
type Phase uint32

// Session phases before and during the relay.
const (
	PhaseStartup    Phase = iota // reading the first packets
	PhaseQueued                  // waiting for a maxconn slot or an eligible server
	PhaseConnecting              // dialling a server
	PhaseRelaying                // relayed (see SessionInfo.Relay for what it is doing)
)

func (p Phase) String() string {
	switch p {
	case PhaseQueued:
		return "queued"
	case PhaseConnecting:
		return "connecting"
	case PhaseRelaying:
		return "relaying"
	}
	return "startup"
}

// SessionInfo is a snapshot of one open session, for the admin views and metrics.
type SessionInfo struct {
	ID                     uint64
	Route                  string
	Client                 string
	User, Database         string
	Started                time.Time
	Phase                  Phase
	Server                 *cluster.Server // nil before one is chosen
	Relay                  relay.State     // valid in PhaseRelaying
	FromClient, FromServer int64
	TLS                    string // "" (plain), "TLSv1.3 sni=...", or "passthrough"
	ApplicationName        string
}

// SessionInfos appends a snapshot of every open session to dst, in no particular order.
func (f *Frontend) SessionInfos(dst []SessionInfo) []SessionInfo {
	for _, s := range f.registry.Snapshot() {
		dst = append(dst, s.info())
	}
	return dst
}

func (s *session) info() SessionInfo {
	in := SessionInfo{ID: s.id, Started: s.start, Phase: Phase(s.phase.Load())}
	s.mu.Lock()
	in.Client = s.mu.clientAddr
	in.Route, in.TLS = s.route.Name, s.mu.tls
	in.User, in.Database, in.ApplicationName = s.mu.user, s.mu.database, s.mu.appName
	srv, rs := s.mu.server, s.mu.relay
	s.mu.Unlock()
	in.Server = srv
	if rs != nil {
		in.Relay = rs.State()
		in.FromClient, in.FromServer = rs.Bytes()
	}
	return in
}

// Kill ends session id now with FATAL 57P01 (an administrator ended it); false if there is no
// such session.
func (f *Frontend) Kill(id uint64) bool {
	for _, s := range f.registry.Snapshot() {
		if s.id == id {
			s.end(relay.CauseAdminKill)
			return true
		}
	}
	return false
}
