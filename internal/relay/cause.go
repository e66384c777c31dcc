package relay

import "github.com/pgfront/pgfront/internal/pgwire"

// Cause is why a session ended. Every session ends with exactly one; it is the log field, the
// metric label and decides what the client is told.
type Cause uint8

// Termination causes. The zero value means "still running".
const (
	CauseNone                     Cause = iota
	CauseClientTerminate                // client sent Terminate and closed
	CauseClientEOF                      // client closed (FIN) without Terminate
	CauseServerEOF                      // server closed first; the client then closed
	CauseClientFinTimeout               // server closed first; client did not close within client_fin
	CauseServerFinTimeout               // client closed first; server did not close within server_fin
	CauseClientIdleTimeout              // client silent longer than client_idle outside a transaction
	CauseIdleInTransactionTimeout       // client silent longer than idle_in_transaction inside one
	CauseServerIdleTimeout              // server silent longer than server_idle during a query
	CauseStartupTimeout                 // first packet or login not done within startup
	CauseQueueTimeout                   // waited timeouts.queue for a maxconn slot
	CauseMaxConn                        // refused at once: limit reached and the queue full or off
	CauseConnectFailed                  // no server could be reached
	CauseNoServer                       // the route has no eligible server
	CauseServerDown                     // the server went down or into maintenance
	CauseRoleChanged                    // the server left the route's role (failover, lag)
	CauseFencedStandby                  // a primary route's new session found a standby
	CauseServerUnavailable              // the server refused the login with 57P03 (starting, shutting down)
	CauseAdminKill                      // an administrator ended the session
	CauseShutdown                       // pgfront is shutting down
	CauseClientReset                    // client connection reset or write failed
	CauseServerReset                    // server connection reset or lost
	CauseClientUnreachable              // client stopped answering: keepalive or TCP_USER_TIMEOUT gave up on it (no FIN, no RST)
	CauseServerUnreachable              // server stopped answering: keepalive or TCP_USER_TIMEOUT gave up on it (no FIN, no RST)
	CauseProtocolError                  // malformed or unexpected protocol bytes from the client
	CauseDenied                         // refused by policy (unsupported request)
	CauseCancelRequest                  // the connection carried a CancelRequest, now forwarded or dropped
	CauseTLSError                       // the client's TLS handshake failed
	CauseRemoved                        // a config reload removed the session's route or server
	CauseLoginFailed                    // the server refused the login (its ErrorResponse was forwarded)
	CauseSplitBrain                     // the server claims to be primary while another does too, undecided
	numCauses
)

var causeNames = [numCauses]string{
	CauseNone:                     "none",
	CauseClientTerminate:          "client_terminate",
	CauseClientEOF:                "client_eof",
	CauseServerEOF:                "server_eof",
	CauseClientFinTimeout:         "client_fin_timeout",
	CauseServerFinTimeout:         "server_fin_timeout",
	CauseClientIdleTimeout:        "client_idle_timeout",
	CauseIdleInTransactionTimeout: "idle_in_transaction_timeout",
	CauseServerIdleTimeout:        "server_idle_timeout",
	CauseStartupTimeout:           "startup_timeout",
	CauseQueueTimeout:             "queue_timeout",
	CauseMaxConn:                  "maxconn",
	CauseConnectFailed:            "connect_failed",
	CauseNoServer:                 "no_server",
	CauseServerDown:               "server_down",
	CauseRoleChanged:              "role_changed",
	CauseFencedStandby:            "fenced_standby",
	CauseServerUnavailable:        "server_unavailable",
	CauseAdminKill:                "admin_kill",
	CauseShutdown:                 "shutdown",
	CauseClientReset:              "client_reset",
	CauseServerReset:              "server_reset",
	CauseClientUnreachable:        "client_unreachable",
	CauseServerUnreachable:        "server_unreachable",
	CauseProtocolError:            "protocol_error",
	CauseDenied:                   "denied",
	CauseCancelRequest:            "cancel_request",
	CauseTLSError:                 "tls_error",
	CauseRemoved:                  "removed",
	CauseLoginFailed:              "login_failed",
	CauseSplitBrain:               "split_brain",
}

func (c Cause) String() string {
	if c < numCauses {
		return causeNames[c]
	}
	return "unknown"
}

// AllCauses lists every termination cause, for metrics that pre-create their label values.
func AllCauses() []Cause {
	out := make([]Cause, 0, numCauses-1)
	for c := CauseNone + 1; c < numCauses; c++ {
		out = append(out, c)
	}
	return out
}

// serverGone reports whether c means the server connection is unusable (reset, lost, stopped
// answering): no cancel request and no Terminate are sent to it.
func (c Cause) serverGone() bool { return c == CauseServerReset || c == CauseServerUnreachable }

// clientError is what the client is told when pgfront ends its session for cause c, or nil when
// the client already knows (it closed, or the server's own error was forwarded).
func (c Cause) clientError() []byte {
	switch c {
	case CauseClientIdleTimeout:
		return fatalIdle
	case CauseIdleInTransactionTimeout:
		return fatalIdleInTx
	case CauseServerIdleTimeout:
		return fatalServerIdle
	case CauseStartupTimeout:
		return fatalStartup
	case CauseServerReset:
		return fatalServerLost
	case CauseServerUnreachable:
		return fatalServerUnreachable
	case CauseServerDown:
		return fatalServerDown
	case CauseRoleChanged:
		return fatalRoleChanged
	case CauseSplitBrain:
		return fatalSplitBrain
	case CauseFencedStandby:
		return fatalFenced
	case CauseServerUnavailable:
		return fatalUnavailable
	case CauseAdminKill:
		return fatalAdminKill
	case CauseShutdown:
		return fatalShutdown
	case CauseServerFinTimeout:
		return fatalServerFin
	case CauseRemoved:
		return fatalRemoved
	}
	return nil
}

var (
	fatalRemoved = pgwire.Fatal(pgwire.CodeAdminShutdown,
		"terminating connection because its route or server was removed from pgfront's configuration",
		"Reconnect: pgfront routes new sessions by its new configuration.")
	fatalIdle = pgwire.Fatal(pgwire.CodeIdleSessionTimeout,
		"terminating connection due to idle-session timeout", "pgfront closes sessions idle longer than timeouts.client_idle.")
	fatalIdleInTx = pgwire.Fatal(pgwire.CodeIdleInTransactionTimeout,
		"terminating connection due to idle-in-transaction timeout", "pgfront closes sessions idle in a transaction longer than timeouts.idle_in_transaction.")
	fatalServerIdle = pgwire.Fatal(pgwire.CodeConnectionFailure,
		"server did not answer within timeouts.server_idle; connection closed by pgfront", "")
	fatalStartup = pgwire.Fatal(pgwire.CodeQueryCanceled,
		"canceling authentication due to timeout", "pgfront allows timeouts.startup for the startup and login.")
	fatalServerLost = pgwire.Fatal(pgwire.CodeConnectionFailure,
		"connection to server lost", "The PostgreSQL server closed or reset the connection; reconnect.")
	fatalServerUnreachable = pgwire.Fatal(pgwire.CodeConnectionFailure,
		"connection to server lost: server unreachable (it stopped answering without closing the connection)",
		"pgfront gave up on the PostgreSQL server after its TCP keepalive and user timeout (tcp.server); reconnect.")
	fatalServerDown = pgwire.Fatal(pgwire.CodeAdminShutdown,
		"terminating connection because the server is down or in maintenance", "Reconnect: pgfront routes new sessions to a healthy server.")
	fatalRoleChanged = pgwire.Fatal(pgwire.CodeAdminShutdown,
		"terminating connection because the server changed role (primary changed, or replica lagging); reconnect",
		"Reconnect: pgfront routes new sessions to a server of the route's role.")
	fatalSplitBrain = pgwire.Fatal(pgwire.CodeCannotConnectNow,
		"terminating connection because another server also claims to be primary (split brain); pgfront stops writes to both",
		"Reconnect later: pgfront routes new sessions again once one primary remains.")
	fatalFenced = pgwire.Fatal(pgwire.CodeCannotConnectNow,
		"the server is a standby (in_hot_standby = on); pgfront does not route writes to it",
		"Reconnect: pgfront has marked the server and routes new sessions to the primary.")
	fatalUnavailable = pgwire.Fatal(pgwire.CodeCannotConnectNow,
		"the database system is not accepting connections (starting up or shutting down)",
		"Reconnect: pgfront routes new sessions to a server that accepts them.")
	fatalAdminKill = pgwire.Fatal(pgwire.CodeAdminShutdown,
		"terminating connection due to administrator command", "A pgfront administrator ended this session.")
	fatalShutdown = pgwire.Fatal(pgwire.CodeAdminShutdown,
		"terminating connection because pgfront is shutting down", "Reconnect; another pgfront instance or the restarted one will serve you.")
	fatalServerFin = pgwire.Fatal(pgwire.CodeConnectionFailure,
		"server did not close within timeouts.server_fin", "")
)
