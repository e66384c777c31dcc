// Package relay owns an established PostgreSQL session: relaying both ways while reading the
// protocol framing as it goes, the deadlines that bound every state of the session,
// half-close handling, and the single termination cause it ends with.
//
// A session runs either on an event loop of pgfront's own (Loops: plain TCP sockets, see
// loop.go) or on two copier goroutines (client->server and server->client: TLS, or no Loops).
// Both drive the same decisions (relayFromClient, relayFromServer, clientReadFailed,
// serverReadFailed, end, finish); only the I/O under them differs (setReadDeadline,
// closeWrite, closeSide, finalWrite).
//
// The caller (the frontend) has already read the client's StartupMessage and forwarded it to
// the server; relay takes both connections from there:
//
//	s := relay.New(client, server, relay.Options{...})
//	res := s.Run() // returns when both sockets are closed
//	log(res.Cause, res.FromClient, res.FromServer)
//
// Or a loop greets the session from its accepted socket (Loops.GreetFrom, greet.go): it reads
// the first packets, connects to the server a Greeter chooses, forwards the StartupMessage and
// relays, handing the session to the Greeter's goroutine for anything it does not do itself.
//
// Another goroutine may call End (admin kill, server down) or Drain (shutdown) at any time;
// neither blocks.
package relay

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// ClientFinMode says what a client's FIN without Terminate means.
type ClientFinMode uint8

const (
	// FinAbort treats a FIN without Terminate as an abort: the running query is cancelled and
	// the server side closed at once. The default.
	FinAbort ClientFinMode = iota
	// FinForward keeps TCP half-close semantics: the FIN is forwarded and the server gets
	// server_fin to close.
	FinForward
)

// Options bound the session's states. A zero duration turns that bound off.
type Options struct {
	ClientIdle        time.Duration // client silent, no transaction open
	IdleInTransaction time.Duration // client silent inside a transaction
	ServerIdle        time.Duration // server silent while a query runs
	ClientFin         time.Duration // server closed first: time for the client to close
	ServerFin         time.Duration // client closed first: time for the server to close
	// LoginDeadline bounds the login (until the server's first ReadyForQuery). Zero: none.
	LoginDeadline time.Time
	OnClientFin   ClientFinMode
	// FatalWriteTimeout bounds writing pgfront's own FATAL error to the client. Default 1s.
	FatalWriteTimeout time.Duration

	// IssueKey, if set, replaces the secret of the server's BackendKeyData before the client
	// sees it (the process id stays the server's): it fills secret, as long as the server's,
	// for process id pid. Called where the session relays (see Hooks); must not block.
	IssueKey func(pid uint32, secret []byte)

	// FenceStandby refuses a server that reports in_hot_standby=on during login (PostgreSQL 14+
	// sends it as a ParameterStatus): a primary route never hands a client to a standby.
	// Hooks.Standby is called when that happens.
	FenceStandby bool

	// Hooks tells the session's owner what happened; nil: nobody is told.
	Hooks Hooks

	// Loops, if set, runs the session on an event loop instead of two copier goroutines when
	// both connections are plain TCP sockets (see Loops).
	Loops *Loops

	// Observer, if set, is told about bytes, queries and transactions (metrics).
	Observer Observer
}

// Observer is told what a session relays, for metrics. Its methods are called relaying (a
// copier or the session's event loop), outside the session's lock: they must be cheap and
// safe for concurrent use.
type Observer interface {
	// Relayed is called per chunk relayed: n bytes from the client (toServer) or the server.
	Relayed(toServer bool, n int)
	// QueryDone is called per ReadyForQuery after the login, with the time since the message
	// that started the query (for pipelined queries: since the previous ReadyForQuery).
	QueryDone(d time.Duration)
	// TransactionDone is called when a ReadyForQuery reports the session idle ('I'), with the
	// time since the first query after the previous idle point.
	TransactionDone(d time.Duration)
}

// Hooks is how a session tells its owner what happened. One value per session (an
// interface, not a closure per event: an idle session keeps it for hours). Every method but
// Cancel runs where the session relays (its server copier, or its event loop, which serves
// many sessions) and must not block.
type Hooks interface {
	// BackendKey: the key the server announced in BackendKeyData and the key the client got
	// instead (client equals server without Options.IssueKey), so cancels can be routed here.
	BackendKey(server, client pgwire.CancelKey)
	// Cancel sends a CancelRequest for key to this session's server. Called when the session
	// ends during a query, on the session's own goroutine once the client is told and closed
	// (never on End's caller's), so it may block for its own bound.
	Cancel(key pgwire.CancelKey)
	// Standby: Options.FenceStandby refused the server, a hot standby.
	Standby()
	// Unavailable: the server refused the login with 57P03 before the client saw anything
	// (the session is then retryable elsewhere).
	Unavailable()
	// LoggedIn is called once when the login is over (the server's first ReadyForQuery): from
	// then on the session is never handed back for a retry (Result.Retry), so what the owner
	// kept for one can go.
	LoggedIn()
	// ServerClosed is called once when the server closed first and its last words (usually a
	// FATAL) and FIN were passed to a client that has not closed yet: the session no longer
	// uses a server and only waits up to ClientFin for the client to close, so the owner can
	// free what it holds for a live session (its maxconn slot).
	ServerClosed()
}

// NoHooks tells nobody anything; embed it to implement only some of Hooks.
type NoHooks struct{}

func (NoHooks) BackendKey(server, client pgwire.CancelKey) {}
func (NoHooks) Cancel(pgwire.CancelKey)                    {}
func (NoHooks) Standby()                                   {}
func (NoHooks) Unavailable()                               {}
func (NoHooks) LoggedIn()                                  {}
func (NoHooks) ServerClosed()                              {}

// Result is how a session ended.
type Result struct {
	Cause      Cause
	FromClient int64 // bytes read from the client and relayed
	FromServer int64 // bytes read from the server and relayed
	Err        error // the error behind the cause, for logs; nil for clean ends
	// Retry: the server was a standby (fenced) or refused the login (57P03) before a byte
	// reached or came from the client, so the client connection is left open (not closed)
	// for the caller to try another server: Client.
	Retry bool
	// Client is the client connection to retry with: the one given to New, or, for a session
	// that ran on an event loop, a new net.Conn on the same socket (the first was closed).
	Client net.Conn
}

// halfCloser is implemented by *net.TCPConn and *tls.Conn.
type halfCloser interface{ CloseWrite() error }

// Session is one client connection relayed to one server connection. It owns both
// connections from New on and closes them before Run returns.
type Session struct {
	client, server net.Conn
	// How the copiers read and write (set by Begin; on a loop, only the writers).
	clientRead  chunkReader
	serverRead  chunkReader
	writeClient func([]byte) (int, error)
	writeServer func([]byte) (int, error)
	opts        Options

	fromClient atomic.Int64
	fromServer atomic.Int64

	// serverToClient's scanner; read by Run after both copiers returned.
	backendScan  pgwire.Scanner
	frontendScan pgwire.Scanner
	// clientAtBoundary: what the client received so far ends at a message boundary, so
	// pgfront's own FATAL can follow. Owned by serverToClient, read by finish.
	clientAtBoundary bool

	running atomic.Int32 // copiers still running
	onEnd   func(Result)

	// writingClient / writingServer are set by the copier writing to that side for the length
	// of the write (and of the end it calls when the write fails). The other copier, reading
	// the same side, uses them to tell who met the error of an aborted connection (see
	// abortedBy).
	writingClient, writingServer atomic.Bool

	// mu guards the session state shared by the copiers and by End/Drain. Every deadline
	// change happens under mu after checking cause, so an ending session's "deadline in the
	// past" can never be overwritten.
	mu struct {
		sync.Mutex
		cause      Cause
		err        error
		sent       uint64 // sync points (Query, Sync, FunctionCall) sent to the server
		received   uint64 // ReadyForQuery messages received; idle when sent == received
		txStatus   byte   // last ReadyForQuery status: 'I', 'T' or 'E'
		login      bool   // until the first ReadyForQuery
		draining   Cause  // end with this cause at the next quiet transaction boundary, if set
		drainSince stamp  // when the first Drain came (zero: not draining)
		readySince stamp  // when the login ended (zero: still logging in)
		key        pgwire.CancelKey
		haveKey    bool
		serverEOF  bool // server sent FIN
		clientEOF  bool // client sent FIN (it may still read)
		clientDead bool // client reset, or a write to it failed: nothing more reaches it
		cancel     bool // end found a query running: finish cancels it
		aborting   bool // finish also drains the server after the cancel
		terminated bool // client sent Terminate
		// loginErr is the server's refusal of the login (an ErrorResponse before the first
		// ReadyForQuery): whatever ends the session after it, it ends as CauseLoginFailed.
		loginErr *LoginError
		finArmed bool // a FIN deadline runs on the server read side

		// For State and the Observer: when the running query and transaction began, when
		// the session last went idle (zero while busy), when one side sent FIN (zero: none).
		queryStart, txStart stamp
		idleSince           stamp
		halfClosedSince     stamp

		// idleUntil is when the idle bound ends (zero: none).
		idleUntil stamp
	}

	// lp is the event loop that runs the session (set once, under mu, by Begin); nil for a
	// session on copier goroutines. ls is its state there (see loopState).
	lp *loop
	ls loopState
	// greet is the state of a session greeted on its loop until it is relayed (Loops.GreetFrom);
	// nil otherwise. Owned by the loop.
	greet *greetState
}

// New prepares a session on client and server. It takes ownership of both connections.
func New(client, server net.Conn, opts Options) *Session {
	s := &Session{client: client, server: server, clientAtBoundary: true}
	s.init(opts)
	return s
}

// init sets a session up to relay a login whose StartupMessage is (being) forwarded: New's,
// and a greeted session's once its server is connected (then under mu).
func (s *Session) init(opts Options) {
	if opts.FatalWriteTimeout <= 0 {
		opts.FatalWriteTimeout = time.Second
	}
	if opts.Hooks == nil {
		opts.Hooks = NoHooks{}
	}
	s.opts = opts
	s.backendScan = *pgwire.NewBackendScanner('K', 'Z', 'S', 'E')
	s.frontendScan = *pgwire.NewFrontendScanner()
	if opts.IssueKey != nil {
		s.backendScan.SetKeyRewrite(opts.IssueKey)
	}
	s.mu.login = true
	s.mu.sent = 1 // the StartupMessage ends with a ReadyForQuery
	s.mu.txStatus = 'I'
}

// Run relays until the session ends, closes both connections and returns the result.
func (s *Session) Run() Result {
	res := make(chan Result, 1)
	s.Start(func(r Result) { res <- r })
	return <-res
}

// Start relays and returns at once; onEnd runs with the result once the session is over and
// both connections are closed (or, for a retryable fence, the client handed back): on a
// goroutine of the session's, or, for a session on an event loop that ended without a write
// or a wait, on the loop itself, so onEnd must not block (it may start a goroutine for slow
// work, such as a log line). The caller's goroutine is free to exit.
func (s *Session) Start(onEnd func(Result)) {
	if runClient := s.Begin(onEnd); runClient != nil {
		go runClient()
	}
}

// Begin is Start without the client copier's goroutine. With Options.Loops and two plain TCP
// sockets the session moves onto an event loop and Begin returns nil. Otherwise it starts
// the server copier and returns the client copier for the caller to run on its own goroutine
// (one goroutine fewer per session); runClient returns when the session has ended.
func (s *Session) Begin(onEnd func(Result)) (runClient func()) {
	s.onEnd = onEnd
	if s.opts.Loops != nil && s.enterLoop() {
		return nil
	}
	s.clientRead, s.serverRead = newChunkReader(s.client), newChunkReader(s.server)
	s.writeClient, s.writeServer = newWriter(s.client), newWriter(s.server)
	s.mu.Lock()
	if !s.opts.LoginDeadline.IsZero() && s.mu.cause == CauseNone {
		_ = s.client.SetReadDeadline(s.opts.LoginDeadline)
		_ = s.server.SetReadDeadline(s.opts.LoginDeadline)
	}
	s.mu.Unlock()
	s.running.Store(2)
	go s.serverToClient()
	return s.clientToServerMain
}

// copierDone runs as each copier returns; the last one finishes the session.
func (s *Session) copierDone() {
	if s.running.Add(-1) != 0 {
		return
	}
	s.onEnd(s.finish())
}

// wakeLocked is when an idle session must act again: its idle bound runs out, or, draining at
// a transaction boundary, its drain ends it there (drainEndLocked). Zero: never.
func (s *Session) wakeLocked() time.Time {
	wake := s.mu.idleUntil.time()
	if s.drainingIdleLocked() {
		if q := s.drainEndLocked(); wake.IsZero() || q.Before(wake) {
			wake = q
		}
	}
	return wake
}

// drainEndLocked is when a draining session idle at a transaction boundary ends: once its
// client has been quiet there for drainQuiet, and at the latest drainBusy after the drain began
// or the login ended, whichever came later (at once, if the boundary comes after that). Only
// meaningful while drainingIdleLocked.
func (s *Session) drainEndLocked() time.Time {
	idle := s.mu.idleSince.time()
	end := idle.Add(drainQuiet)
	from := max(s.mu.drainSince, s.mu.readySince).time()
	if busy := from.Add(drainBusy); busy.Before(end) {
		end = busy
		if end.Before(idle) {
			end = idle
		}
	}
	return end
}

// drainingIdleLocked reports whether a drain waits for this session's client to stay quiet: the
// session is open both ways and idle at a transaction boundary.
func (s *Session) drainingIdleLocked() bool {
	return s.mu.draining != CauseNone && s.mu.txStatus == 'I' && s.idleLocked() && !s.mu.login &&
		!s.mu.serverEOF && !s.mu.clientEOF && !s.mu.finArmed
}

// clientToServerMain is the client->server copier's goroutine.
func (s *Session) clientToServerMain() {
	defer s.copierDone()
	s.clientToServer()
}

// End ends the session now with cause; the client is told why (a FATAL ErrorResponse) when
// cause calls for it and the stream is at a message boundary. Safe to call from any goroutine,
// any number of times: the first cause wins. It never blocks: it records the cause and wakes
// the session, whose own goroutine tells the client and cancels a running query.
func (s *Session) End(cause Cause) { s.end(cause, nil) }

// drainQuiet is how long a draining session's client must stay quiet at a transaction boundary
// before the session ends: a client that just logged in gets to run its first transaction, and
// one that connects per transaction gets to send its Terminate, instead of an error.
const drainQuiet = 500 * time.Millisecond

// drainBusy bounds the wait for that quiet moment: a client that never pauses drainQuiet
// between two transactions (a busy pooled connection) would otherwise keep its session until
// the drain's grace runs out and the session is ended mid-transaction. drainBusy after the drain
// began (or after the login, if that ended later) its next transaction boundary ends it, quiet
// or not. Long enough for a short run of statements (a script, a connect-per-transaction
// client) to finish undisturbed; short next to shutdown.grace.
const drainBusy = 2 * time.Second

// Drain ends the session with cause at its next transaction boundary (no query running, no
// transaction open) once the client has been quiet there for drainQuiet, or at its first
// boundary drainBusy after the drain began if the client never pauses that long; a session
// already quiet for drainQuiet ends now. Inside a transaction it waits for the COMMIT or
// ROLLBACK, bounded only by IdleInTransaction. Like End, it never blocks.
func (s *Session) Drain(cause Cause) {
	s.mu.Lock()
	if s.mu.cause != CauseNone {
		s.mu.Unlock()
		return
	}
	if s.mu.draining == CauseNone {
		s.mu.drainSince = stampNow()
	}
	s.mu.draining = cause
	if !s.idleLocked() || s.mu.login || s.mu.txStatus != 'I' {
		s.mu.Unlock()
		return // busy or in a transaction: readyForQuery arms the quiet moment later
	}
	if !s.drainingIdleLocked() || !time.Now().Before(s.drainEndLocked()) {
		s.mu.Unlock()
		s.end(cause, nil) // half-closed, or quiet long enough already
		return
	}
	// Quiet for less than drainQuiet: wake when it has been (a loop sets its own timer).
	if lp := s.lp; lp != nil {
		s.mu.Unlock()
		lp.post(s)
		return
	}
	_ = s.client.SetReadDeadline(s.wakeLocked())
	s.mu.Unlock()
}

// State is a snapshot of what the session is doing.
type State struct {
	TxStatus byte // 'I', 'T', 'E'
	Busy     bool // a query runs (the server owes a ReadyForQuery)
	Login    bool
	Key      pgwire.CancelKey
	HaveKey  bool
	Parked   bool // idle on an event loop: no goroutine, no buffer
	// IdleSince is when the session last became idle (zero while busy or in login).
	IdleSince time.Time
	// HalfClosedSince is when one side's FIN left the session half-closed, waiting for the
	// other side within client_fin or server_fin (zero: not half-closed).
	HalfClosedSince time.Time
	Ending          bool // a cause is set; the session is closing
	// Blind: a Pipe (TLS passthrough); nothing but bytes and half-close is known.
	Blind bool
}

// State returns a snapshot of the session's protocol state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{
		TxStatus:        s.mu.txStatus,
		Busy:            !s.idleLocked() && !s.mu.login,
		Login:           s.mu.login,
		Key:             s.mu.key,
		HaveKey:         s.mu.haveKey,
		Parked:          s.lp != nil && s.parkedLocked(),
		HalfClosedSince: s.mu.halfClosedSince.time(),
		Ending:          s.mu.cause != CauseNone,
	}
	if !st.Busy && !st.Login {
		st.IdleSince = s.mu.idleSince.time()
	}
	return st
}

// Bytes returns the bytes relayed so far from the client and from the server.
func (s *Session) Bytes() (fromClient, fromServer int64) {
	return s.fromClient.Load(), s.fromServer.Load()
}

func (s *Session) idleLocked() bool { return s.mu.sent == s.mu.received }

// parkedLocked reports whether a session on a loop counts as parked: logged in, no query
// running, not ending.
func (s *Session) parkedLocked() bool {
	return s.mu.cause == CauseNone && !s.mu.login && s.idleLocked()
}

// end records cause (first one wins) and wakes both copiers by putting every deadline in the
// past. If a query is running and the server is still there, finish cancels it so the server
// does not go on working for nobody. end never blocks on the network: it runs on whatever
// goroutine calls End (a health check loop, an HTTP handler), and a hung server would hold it
// for the whole cancel timeout.
func (s *Session) end(cause Cause, err error) {
	s.mu.Lock()
	if s.mu.cause != CauseNone {
		s.mu.Unlock()
		return
	}
	if s.mu.loginErr != nil {
		// The server refused the login and closes: who closes first is a race, and the
		// refusal is what happened.
		cause, err = CauseLoginFailed, s.mu.loginErr
	}
	s.mu.cause = cause
	s.mu.err = err
	s.mu.cancel = !s.idleLocked() && !s.mu.login && s.mu.haveKey && !s.mu.serverEOF &&
		cause != CauseClientTerminate && !cause.serverGone()
	// No drain after the cancel when server_fin was already waited, nor at shutdown: pgfront's
	// stop must not take server_fin beyond its grace, so the cancel goes out and the server
	// connection is reset (the backend's next write fails).
	s.mu.aborting = s.mu.cancel && cause != CauseServerFinTimeout && cause != CauseShutdown
	lp := s.lp
	if lp == nil {
		past := time.Unix(1, 0)
		_ = s.client.SetDeadline(past)
		_ = s.server.SetDeadline(past)
	}
	s.mu.Unlock()
	if lp != nil {
		lp.post(s) // the loop finishes it in its next pass
	}
}

// endPlan is what finish does, decided from the session's state once it has stopped.
type endPlan struct {
	cause Cause
	err   error
	// retry: nothing was exchanged with the client; it is handed back for another server.
	retry bool
	// fatal is pgfront's FATAL for the client (nil: none, or the client cannot take it).
	fatal []byte
	// cancel: a query runs; cancel it once the client is closed. aborting: then drain the
	// server until it is idle. key is what the cancel carries.
	cancel, aborting bool
	key              pgwire.CancelKey
	serverEOF, idle  bool
}

// endPlanLocked decides how the session finishes.
func (s *Session) endPlanLocked() endPlan {
	p := endPlan{cause: s.mu.cause, err: s.mu.err, serverEOF: s.mu.serverEOF, idle: s.idleLocked() && !s.mu.login,
		cancel: s.mu.cancel, aborting: s.mu.aborting, key: s.mu.key}
	if (p.cause == CauseFencedStandby || p.cause == CauseServerUnavailable) && s.fromClient.Load() == 0 && s.fromServer.Load() == 0 {
		p.retry = true
		return p
	}
	clientGone := s.mu.clientDead || p.cause == CauseClientReset || p.cause == CauseClientUnreachable
	if !clientGone && s.clientAtBoundary {
		p.fatal = p.cause.clientError()
		var pe *pgwire.ProtocolError
		if p.cause == CauseProtocolError && errors.As(p.err, &pe) {
			p.fatal = pgwire.Fatal(pgwire.CodeProtocolViolation, pe.Msg, "")
		}
	}
	return p
}

// goodbye reports whether finish sends the server a Terminate: a clean goodbye keeps
// "unexpected EOF" noise out of the server log.
func (s *Session) goodbye(p *endPlan) bool {
	return !p.serverEOF && p.idle && s.frontendScan.AtBoundary() && p.cause != CauseClientTerminate && !p.cause.serverGone()
}

// endPlan is endPlanLocked under s.mu.
func (s *Session) endPlan() endPlan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endPlanLocked()
}

// atOnce reports whether finishing by p neither writes nor waits: no retry, no FATAL for the
// client, no cancel (an abort comes with one), no goodbye to the server. A session on an
// event loop that ends so (a client's Terminate, say) finishes on the loop: under connection
// churn a goroutine per session end costs a thread wake-up each.
func (s *Session) atOnce(p *endPlan) bool {
	return !p.retry && p.fatal == nil && !p.cancel && !s.goodbye(p)
}

// finish runs after both copiers returned: it tells the client why pgfront ended the session,
// says goodbye to an idle server, and closes both sockets.
func (s *Session) finish() Result { return s.finishBy(s.endPlan()) }

// finishBy is finish by plan p.
func (s *Session) finishBy(p endPlan) Result {
	if p.retry {
		// Nothing was exchanged with the client: hand it back for another server.
		s.closeSide(sideServer)
		if client := s.takeConn(sideClient); client != nil {
			_ = client.SetDeadline(time.Time{})
			return Result{Cause: p.cause, Err: p.err, Retry: true, Client: client}
		}
		return Result{Cause: p.cause, Err: p.err}
	}
	if p.fatal != nil {
		s.finalWrite(sideClient, p.fatal)
	}
	if p.cancel {
		// The client is done with: free its socket now, then make sure the server stops. The
		// cancel may take up to the cancel timeout (a hung server): only this session waits.
		s.closeSide(sideClient)
		s.opts.Hooks.Cancel(p.key)
	}
	if p.aborting {
		p.idle = s.takeConn(sideServer) != nil && s.drainServer()
	}
	if s.goodbye(&p) {
		s.finalWrite(sideServer, terminateMsg)
	}
	if !p.serverEOF && !p.idle {
		// Still busy: reset rather than close, so the backend's next write fails and it
		// exits instead of finishing work for nobody.
		s.resetOnClose()
	}
	s.closeSide(sideServer)
	s.closeSide(sideClient)
	return Result{Cause: p.cause, FromClient: s.fromClient.Load(), FromServer: s.fromServer.Load(), Err: p.err}
}

var terminateMsg = []byte{'X', 0, 0, 0, 4}

// cancelRetry is how often a cancel is repeated while an aborted session's server is still
// busy: PostgreSQL drops a cancel that arrives before the query starts, and a cancel stops
// only the statement running, not the pipelined ones behind it.
const cancelRetry = 200 * time.Millisecond

// drainServer runs after an abort cancelled a running query: it reads and discards the
// server's output until every query the client sent has answered (ReadyForQuery), repeating
// the cancel while the server is busy, for at most server_fin (5s when that is off). It
// reports whether the server ended idle.
func (s *Session) drainServer() bool {
	bound := s.opts.ServerFin
	if bound <= 0 {
		bound = 5 * time.Second
	}
	deadline := time.Now().Add(bound)
	h := backendHandler{s: s}
	for {
		s.mu.Lock()
		idle, key := s.idleLocked(), s.mu.key
		s.mu.Unlock()
		if idle {
			return true
		}
		next := time.Now().Add(cancelRetry)
		if next.After(deadline) {
			next = deadline
		}
		_ = s.server.SetReadDeadline(next)
		buf, n, err := s.serverRead.read()
		recancel := false
		if buf != nil {
			if n > 0 {
				s.mu.Lock()
				before := s.mu.received
				s.mu.Unlock()
				if s.backendScan.Feed((*buf)[:n], &h) != nil {
					putBuf(buf)
					return false
				}
				s.mu.Lock()
				// A query ended but more are queued behind it: cancel the next one too.
				recancel = s.mu.received != before && !s.idleLocked()
				s.mu.Unlock()
			}
			putBuf(buf)
		}
		if err != nil {
			if !netx.IsTimeout(err) || !time.Now().Before(deadline) {
				return false
			}
			recancel = true
		}
		if recancel {
			s.opts.Hooks.Cancel(key)
		}
	}
}

// clientToServer is the client->server copier.
func (s *Session) clientToServer() {
	h := frontendHandler{}
	for {
		buf, n, err := s.clientRead.read()
		if n > 0 {
			if !s.relayFromClient(&h, (*buf)[:n]) {
				putBuf(buf)
				return
			}
		}
		if buf != nil {
			putBuf(buf)
		}
		if err != nil {
			s.clientReadFailed(err, h.terminated)
			return
		}
	}
}

// relayFromClient scans and forwards one chunk; false ends the copier.
func (s *Session) relayFromClient(h *frontendHandler, p []byte) bool {
	h.syncPoints = 0
	if err := s.frontendScan.Feed(p, h); err != nil {
		s.end(CauseProtocolError, err)
		return false
	}
	s.mu.Lock()
	if s.mu.cause != CauseNone {
		s.mu.Unlock()
		return false
	}
	if h.terminated {
		s.mu.terminated = true
	}
	if s.mu.serverEOF {
		// The server is gone; drain the client until it closes (bounded by client_fin).
		s.mu.Unlock()
		return true
	}
	wasIdle := s.idleLocked()
	s.mu.sent += h.syncPoints
	if wasIdle && !s.mu.login {
		if h.syncPoints > 0 {
			if s.opts.Observer != nil {
				now := stampNow()
				s.mu.queryStart = now
				if s.mu.txStatus == 'I' {
					s.mu.txStart = now
				}
			}
			// A query starts: no idle bound on the client while the server works.
			s.setReadDeadline(sideClient, time.Time{})
			if s.opts.ServerIdle > 0 {
				s.setReadDeadline(sideServer, time.Now().Add(s.opts.ServerIdle))
			}
		} else {
			// Messages without a sync point (Parse, Bind, Flush...): the client is active,
			// so its idle bound starts again.
			s.armClientIdleLocked()
		}
	}
	s.mu.Unlock()

	s.fromClient.Add(int64(len(p)))
	if s.opts.Observer != nil {
		s.opts.Observer.Relayed(true, len(p))
	}
	s.writingServer.Store(true)
	if _, err := s.writeServer(p); err != nil {
		s.serverFailed(err)
		s.writingServer.Store(false) // after end: see abortedBy
		return false
	}
	s.writingServer.Store(false)
	return true
}

// clientReadFailed decides what a failed client read means.
func (s *Session) clientReadFailed(err error, terminated bool) {
	if netx.IsEOF(err) && !terminated && s.abortedBy(&s.writingClient, s.client, func() bool { return s.mu.serverEOF }) {
		return
	}
	switch {
	case netx.IsEOF(err):
		s.mu.Lock()
		s.mu.clientEOF = true
		if s.mu.cause != CauseNone {
			s.mu.Unlock()
			return
		}
		if s.mu.serverEOF {
			s.mu.Unlock()
			s.end(CauseServerEOF, nil)
			return
		}
		if terminated || s.opts.OnClientFin == FinForward {
			// Pass the FIN on and give the server server_fin to close its side.
			s.closeWrite(sideServer)
			s.mu.finArmed = true
			s.mu.halfClosedSince = stampNow()
			if s.opts.ServerFin > 0 {
				s.setReadDeadline(sideServer, time.Now().Add(s.opts.ServerFin))
			} else {
				s.setReadDeadline(sideServer, time.Time{})
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.end(CauseClientEOF, nil)
	case netx.IsTimeout(err):
		s.mu.Lock()
		now := time.Now()
		if s.mu.cause == CauseNone && s.drainingIdleLocked() && !now.Before(s.drainEndLocked()) {
			// Draining, at a transaction boundary, and the client stayed quiet (or drainBusy
			// has passed): end here.
			cause := s.mu.draining
			s.mu.Unlock()
			s.end(cause, nil)
			return
		}
		cause := CauseClientIdleTimeout
		switch {
		case s.mu.serverEOF:
			cause = CauseClientFinTimeout
		case s.mu.login:
			cause = CauseStartupTimeout
		case s.mu.txStatus != 'I':
			cause = CauseIdleInTransactionTimeout
		}
		s.mu.Unlock()
		s.end(cause, nil)
	case netx.IsClosed(err):
		s.end(CauseClientReset, err)
	default:
		s.mu.Lock()
		s.mu.clientDead = true
		s.mu.Unlock()
		s.end(clientLost(err), err)
	}
}

// abortedBy reports whether a read of one side that returned EOF met not the peer's FIN but a
// connection the kernel aborted (reset, or keepalive / TCP_USER_TIMEOUT gave up) whose error a
// write to that side, in progress on the other copier, took: the error goes to one system call
// only. That write's copier ends the session with the cause the error names (a reader guessing
// would race it), so the reader just returns. writing is the side's write flag; halfClosed
// (called under mu) reports whether pgfront shut down its own sending to that side, after which
// a FIN leaves the socket CLOSED too.
func (s *Session) abortedBy(writing *atomic.Bool, c net.Conn, halfClosed func() bool) bool {
	if !writing.Load() {
		return false
	}
	s.mu.Lock()
	hc := halfClosed()
	s.mu.Unlock()
	return !hc && netx.Aborted(c)
}

// clientLost is the cause for a client connection that failed other than by EOF or one of
// pgfront's own deadlines.
func clientLost(err error) Cause {
	if netx.IsUnreachable(err) {
		return CauseClientUnreachable
	}
	return CauseClientReset
}

// serverLost is clientLost for the server connection.
func serverLost(err error) Cause {
	if netx.IsUnreachable(err) {
		return CauseServerUnreachable
	}
	return CauseServerReset
}

// serverFailed classifies a failed write to the server.
func (s *Session) serverFailed(err error) {
	if netx.IsTimeout(err) {
		s.end(CauseServerIdleTimeout, err) // only reachable when end already ran
		return
	}
	s.end(serverLost(err), err)
}

// frontendHandler counts what the client sends in one chunk.
type frontendHandler struct {
	syncPoints uint64
	terminated bool
}

func (h *frontendHandler) Header(typ byte, _ uint32) error {
	switch typ {
	case 'Q', 'S', 'F':
		h.syncPoints++
	case 'X':
		h.terminated = true
	}
	return nil
}

func (h *frontendHandler) Body(byte, []byte) error { return nil }

// serverToClient is the server->client copier, on its own goroutine.
func (s *Session) serverToClient() {
	defer s.copierDone()
	h := backendHandler{s: s}
	for {
		buf, n, err := s.serverRead.read()
		if n > 0 {
			ok := s.relayFromServer(&h, (*buf)[:n])
			putBuf(buf)
			if !ok {
				return
			}
		} else if buf != nil {
			putBuf(buf)
		}
		if err != nil {
			s.serverReadFailed(err)
			return
		}
	}
}

func (s *Session) relayFromServer(h *backendHandler, p []byte) bool {
	if err := s.backendScan.Feed(p, h); err != nil {
		if errors.Is(err, errStandby) {
			// Not forwarded: the client has not seen this server's login. The cause is set
			// before anyone hears of the fence, since marking the server ends its sessions.
			s.end(CauseFencedStandby, err)
			s.opts.Hooks.Standby()
			return false
		}
		if errors.Is(err, errUnavailable) {
			// Not forwarded either: the server refused this login before anything reached
			// the client (a failover's old primary shutting down, say).
			s.end(CauseServerUnavailable, err)
			s.opts.Hooks.Unavailable()
			return false
		}
		s.end(CauseServerReset, err)
		return false
	}
	s.fromServer.Add(int64(len(p)))
	if s.opts.Observer != nil {
		s.opts.Observer.Relayed(false, len(p))
	}
	s.clientAtBoundary = false
	s.writingClient.Store(true)
	if _, err := s.writeClient(p); err != nil {
		s.mu.Lock()
		ending := s.mu.cause != CauseNone
		s.mu.clientDead = !ending
		s.mu.Unlock()
		s.end(clientLost(err), err)
		s.writingClient.Store(false) // after end: see abortedBy
		return false
	}
	s.writingClient.Store(false)
	s.clientAtBoundary = s.ls.pend[sideClient] == nil && s.backendScan.AtBoundary()
	s.rearmServerIdle()
	return true
}

// rearmServerIdle restarts the server's idle bound once the client has taken what the
// server sent, while a query runs.
func (s *Session) rearmServerIdle() {
	if s.opts.ServerIdle <= 0 {
		return
	}
	s.mu.Lock()
	if s.mu.cause == CauseNone && !s.idleLocked() && !s.mu.finArmed {
		s.setReadDeadline(sideServer, time.Now().Add(s.opts.ServerIdle))
	}
	s.mu.Unlock()
}

// serverReadFailed decides what a failed server read means.
func (s *Session) serverReadFailed(err error) {
	if netx.IsEOF(err) && s.abortedBy(&s.writingServer, s.server, func() bool { return s.mu.finArmed }) {
		return
	}
	switch {
	case netx.IsEOF(err):
		s.mu.Lock()
		s.mu.serverEOF = true
		if s.mu.cause != CauseNone {
			s.mu.Unlock()
			return
		}
		if s.mu.clientEOF || s.mu.terminated {
			cause := CauseClientEOF
			if s.mu.terminated {
				cause = CauseClientTerminate
			}
			s.mu.Unlock()
			s.end(cause, nil)
			return
		}
		// Server closed first: its last words (usually a FATAL) were forwarded. Pass the FIN
		// on and give the client client_fin to close.
		s.closeWrite(sideClient)
		s.mu.halfClosedSince = stampNow()
		if s.opts.ClientFin > 0 {
			s.setReadDeadline(sideClient, time.Now().Add(s.opts.ClientFin))
		} else {
			s.setReadDeadline(sideClient, time.Time{})
		}
		loggedIn := !s.mu.login // a login the server ended may still be retried elsewhere
		s.mu.Unlock()
		if loggedIn {
			s.opts.Hooks.ServerClosed()
		}
	case netx.IsTimeout(err):
		s.mu.Lock()
		cause := CauseServerIdleTimeout
		switch {
		case s.mu.finArmed:
			cause = CauseServerFinTimeout
		case s.mu.login:
			cause = CauseStartupTimeout
		}
		s.mu.Unlock()
		s.end(cause, nil)
	default:
		s.mu.Lock()
		terminated := s.mu.terminated
		s.mu.Unlock()
		if terminated && netx.IsReset(err) {
			// The client said goodbye; how the server's side went after that (a reset when it
			// exits with bytes unread) is no failure of the session.
			s.end(CauseClientTerminate, nil)
			return
		}
		s.end(serverLost(err), err)
	}
}

// backendHandler acts on the server messages pgfront cares about.
type backendHandler struct {
	s *Session
}

func (h *backendHandler) Header(byte, uint32) error { return nil }

func (h *backendHandler) Body(typ byte, body []byte) error {
	s := h.s
	switch typ {
	case 'K':
		key, ok := pgwire.ParseBackendKeyData(body)
		if !ok {
			return &pgwire.ProtocolError{Msg: "invalid BackendKeyData from server"}
		}
		client := key
		if issued := s.backendScan.IssuedSecret(); issued != nil {
			client.Secret = string(issued)
		}
		s.mu.Lock()
		s.mu.key, s.mu.haveKey = key, true // the server's: what a cancel must carry
		s.mu.Unlock()
		s.opts.Hooks.BackendKey(key, client)
	case 'S':
		if s.opts.FenceStandby && isHotStandby(body) && s.inLogin() {
			return errStandby
		}
	case 'E':
		// Only errors during the login matter here; later ones are just relayed.
		if !s.inLogin() {
			return nil
		}
		le := parseLoginError(body)
		if s.fromServer.Load() == 0 && s.fromClient.Load() == 0 && le.Code == pgwire.CodeCannotConnectNow {
			return errUnavailable // the first message: the session can be retried elsewhere
		}
		s.mu.Lock()
		if s.mu.loginErr == nil {
			s.mu.loginErr = le
		}
		s.mu.Unlock()
	case 'Z':
		if len(body) != 1 {
			return &pgwire.ProtocolError{Msg: "invalid ReadyForQuery from server"}
		}
		s.readyForQuery(body[0])
	}
	return nil
}

// inLogin reports whether the server has not sent its first ReadyForQuery yet.
func (s *Session) inLogin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.login
}

// errUnavailable stops the server copier when a login is refused with 57P03.
var errUnavailable = errors.New("server refused the login: cannot connect now (57P03)")

// LoginError is the server's refusal of a login: the SQLSTATE and message of the
// ErrorResponse it sent before its first ReadyForQuery (empty when the message was longer
// than pgfront reads).
type LoginError struct {
	Code    string // SQLSTATE, e.g. 28P01
	Message string // the server's primary message
}

func (e *LoginError) Error() string {
	if e.Code == "" && e.Message == "" {
		return "the server refused the login"
	}
	return "the server refused the login: " + e.Message + " (SQLSTATE " + e.Code + ")"
}

// maxLoginMessage bounds the server message a LoginError keeps (the body is at most the
// scanner's capture anyway).
const maxLoginMessage = 256

// parseLoginError reads the SQLSTATE and message fields of an ErrorResponse body (nil when
// the body was too long to be captured).
func parseLoginError(body []byte) *LoginError {
	le := &LoginError{}
	for len(body) > 1 {
		typ := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		switch v := body[1 : 1+end]; typ {
		case 'C':
			le.Code = string(v)
		case 'M':
			le.Message = strings.ToValidUTF8(string(v[:min(len(v), maxLoginMessage)]), "?")
		}
		body = body[2+end:]
	}
	return le
}

// errStandby stops the server copier when a primary route's server reports in_hot_standby=on.
var errStandby = errors.New("server reports in_hot_standby = on")

// isHotStandby reports whether a ParameterStatus body says in_hot_standby = on.
func isHotStandby(body []byte) bool {
	const name = "in_hot_standby\x00"
	return len(body) > len(name) && string(body[:len(name)]) == name && string(body[len(name):]) == "on\x00"
}

// readyForQuery updates the transaction state and, when the session turns idle, arms the
// client-side idle deadline that fits the transaction status.
func (s *Session) readyForQuery(status byte) {
	var query, tx time.Duration
	txDone := false
	s.mu.Lock()
	login := s.mu.login
	if s.opts.Observer != nil && !login {
		now := stampNow()
		query = time.Duration(now - s.mu.queryStart)
		s.mu.queryStart = now // a pipelined query behind it is timed from here
		if txDone = status == 'I'; txDone {
			tx = time.Duration(now - s.mu.txStart)
			s.mu.txStart = now
		}
	}
	s.readyForQueryLocked(status)
	s.mu.Unlock()
	if login {
		s.opts.Hooks.LoggedIn()
	}
	if s.opts.Observer != nil && !login {
		s.opts.Observer.QueryDone(query)
		if txDone {
			s.opts.Observer.TransactionDone(tx)
		}
	}
}

func (s *Session) readyForQueryLocked(status byte) {
	s.mu.txStatus = status
	s.mu.received++
	if s.mu.received > s.mu.sent {
		s.mu.received = s.mu.sent // a server never sends more; do not wrap
	}
	if s.mu.login {
		s.mu.login = false
		s.mu.readySince = stampNow()
		if s.mu.cause == CauseNone {
			s.setReadDeadline(sideServer, time.Time{})
		}
	}
	if !s.idleLocked() || s.mu.cause != CauseNone || s.mu.finArmed || s.mu.clientEOF {
		return
	}
	s.armClientIdleLocked() // a draining session at a boundary ends after drainQuiet of quiet, or drainBusy
	if s.opts.ServerIdle > 0 {
		s.setReadDeadline(sideServer, time.Time{})
	}
}

// armClientIdleLocked starts the client's idle bound that fits the transaction status (and,
// when draining at a boundary, the quiet moment before the session ends).
func (s *Session) armClientIdleLocked() {
	limit := s.opts.ClientIdle
	if s.mu.txStatus != 'I' {
		limit = s.opts.IdleInTransaction
	}
	now := stampNow()
	s.mu.idleSince = now
	s.mu.idleUntil = 0
	if limit > 0 {
		s.mu.idleUntil = now + stamp(limit)
	}
	s.setReadDeadline(sideClient, s.wakeLocked())
}
