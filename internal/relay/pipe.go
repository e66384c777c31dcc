package relay

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
)

// PipeOptions bound a blind session. A zero duration turns that bound off.
type PipeOptions struct {
	Idle      time.Duration // no byte in either direction (timeouts.client_idle)
	ClientFin time.Duration // the server closed first: time for the client to close
	ServerFin time.Duration // the client closed first: time for the server to close
	Observer  Observer      // only Relayed is called: a blind pipe sees no queries
}

// Pipe relays a session's bytes without reading them: TLS passthrough, where the bytes are
// encrypted end to end between the client and the server. It has none of Session's PostgreSQL
// awareness (no transaction status, no cancel, no end at a transaction boundary, no FATAL of
// pgfront's own: the stream is not pgfront's to write into), but the same bounds on TCP: Idle
// for silence both ways, ClientFin/ServerFin after one side's FIN, and End.
type Pipe struct {
	client, server           net.Conn
	clientRead, serverRead   chunkReader
	writeClient, writeServer func([]byte) (int, error)
	opts                     PipeOptions

	fromClient, fromServer atomic.Int64
	last                   atomic.Int64 // unix nanoseconds of the last byte either way
	running                atomic.Int32
	onEnd                  func(Result)
	// writing[i] is set while a copier writes to the client (0) or the server (1), and until
	// the end it calls when that write fails: see Session.abortedBy.
	writing [2]atomic.Bool

	// mu guards the ending state; deadlines change only under it after checking cause.
	mu struct {
		sync.Mutex
		cause       Cause
		err         error
		clientEOF   bool
		serverEOF   bool
		clientFirst bool // the client's FIN came first
		// reset: one side reset before the other closed; the other side gets resetGrace to
		// show it was closing anyway (then the end is clean). resetClient says whose it was.
		reset           error
		resetClient     bool
		halfClosedSince time.Time
		idle            *time.Timer
	}
}

// NewPipe prepares a blind session on client and server; it owns both from now on.
func NewPipe(client, server net.Conn, opts PipeOptions) *Pipe {
	return &Pipe{client: client, server: server, clientRead: newChunkReader(client),
		serverRead: newChunkReader(server), writeClient: newWriter(client), writeServer: newWriter(server), opts: opts}
}

// Start relays on two new goroutines; onEnd runs once both are done and both conns closed.
func (p *Pipe) Start(onEnd func(Result)) {
	p.onEnd = onEnd
	p.last.Store(time.Now().UnixNano())
	p.running.Store(2)
	if p.opts.Idle > 0 {
		p.mu.Lock()
		p.mu.idle = time.AfterFunc(p.opts.Idle, p.checkIdle)
		p.mu.Unlock()
	}
	go p.clientToServer()
	go p.serverToClient()
}

func (p *Pipe) clientToServer() { p.copy(true) }
func (p *Pipe) serverToClient() { p.copy(false) }

// copy is one direction's copier.
func (p *Pipe) copy(fromClient bool) {
	defer p.copierDone()
	src, dst, rd, write, count := p.server, p.client, p.serverRead, p.writeClient, &p.fromServer
	if fromClient {
		src, dst, rd, write, count = p.client, p.server, p.clientRead, p.writeServer, &p.fromClient
	}
	for {
		buf, n, err := rd.read()
		if n > 0 {
			p.last.Store(time.Now().UnixNano())
			count.Add(int64(n))
			if p.opts.Observer != nil {
				p.opts.Observer.Relayed(fromClient, n)
			}
			w := &p.writing[side(!fromClient)]
			w.Store(true)
			_, werr := write((*buf)[:n])
			putBuf(buf)
			if werr != nil {
				p.failed(!fromClient, werr)
				w.Store(false)
				return
			}
			w.Store(false)
		} else if buf != nil {
			putBuf(buf)
		}
		if err != nil {
			p.readFailed(fromClient, src, dst, err)
			return
		}
	}
}

// side indexes Pipe.writing: 0 for the client, 1 for the server.
func side(client bool) int {
	if client {
		return 0
	}
	return 1
}

// readFailed decides what a failed read of one side means.
func (p *Pipe) readFailed(fromClient bool, src, dst net.Conn, err error) {
	if netx.IsEOF(err) && p.writing[side(fromClient)].Load() {
		// An EOF on a connection the kernel aborted, whose error the write in progress took
		// (see Session.abortedBy): that write's copier ends the pipe with the right cause.
		// pgfront shut down its sending to src only after the other side's FIN.
		p.mu.Lock()
		halfClosed := (fromClient && p.mu.serverEOF) || (!fromClient && p.mu.clientEOF)
		p.mu.Unlock()
		if !halfClosed && netx.Aborted(src) {
			return
		}
	}
	switch {
	case netx.IsEOF(err):
		p.mu.Lock()
		if fromClient {
			p.mu.clientEOF = true
		} else {
			p.mu.serverEOF = true
		}
		if p.mu.cause != CauseNone {
			p.mu.Unlock()
			return
		}
		if p.mu.reset != nil && p.mu.resetClient != fromClient {
			p.mu.Unlock()
			p.end(CauseClientEOF, nil) // both were closing: the reset raced a FIN
			return
		}
		if p.mu.clientEOF && p.mu.serverEOF {
			cause := CauseServerEOF
			if p.mu.clientFirst {
				cause = CauseClientEOF
			}
			p.mu.Unlock()
			p.end(cause, nil)
			return
		}
		// One side is done sending: pass its FIN on and give the other side its bound.
		p.mu.clientFirst = fromClient
		p.mu.halfClosedSince = time.Now()
		if hc, ok := dst.(halfCloser); ok {
			_ = hc.CloseWrite()
		}
		bound := p.opts.ClientFin
		if fromClient {
			bound = p.opts.ServerFin
		}
		deadline := time.Time{}
		if bound > 0 {
			deadline = time.Now().Add(bound)
		}
		_ = dst.SetReadDeadline(deadline)
		p.mu.Unlock()
	case netx.IsTimeout(err):
		p.mu.Lock()
		if p.mu.cause != CauseNone {
			p.mu.Unlock()
			return
		}
		if reset := p.mu.reset; reset != nil && p.mu.resetClient != fromClient {
			client := p.mu.resetClient
			p.mu.Unlock()
			p.failed(client, reset) // the other side stayed: the reset was real
			return
		}
		// Only a FIN bound sets a read deadline: the other side closed and this one did not.
		cause := CauseServerFinTimeout
		if fromClient {
			cause = CauseClientFinTimeout
		}
		p.mu.Unlock()
		p.end(cause, nil)
	case netx.IsReset(err) && p.otherClosed(fromClient):
		// The other side had closed (FIN) and this one was closing: a closed client's kernel
		// answers the FIN or last bytes pgfront passes on with a reset. A clean end.
		cause := CauseServerEOF
		if !fromClient {
			cause = CauseClientEOF
		}
		p.end(cause, nil)
	case netx.IsReset(err) && p.bothResetting(fromClient):
		p.end(CauseClientEOF, nil) // the other side reset first while this one closed
	case netx.IsReset(err) && p.awaitOtherClose(fromClient, err):
		// The other side may be closing too: a client's Terminate and TLS close_notify make
		// PostgreSQL's close a reset, and the server's last bytes make a closed client's
		// kernel answer with one. Its copier decides within resetGrace.
	default:
		p.failed(fromClient, err)
	}
}

// resetGrace is how long a reset waits for the other side to close before it counts as a
// client_reset or server_reset.
const resetGrace = 250 * time.Millisecond

// otherClosed reports whether the side opposite fromClient's has sent its FIN.
func (p *Pipe) otherClosed(fromClient bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fromClient {
		return p.mu.serverEOF
	}
	return p.mu.clientEOF
}

// bothResetting reports whether the other side's reset is waiting on this side's close.
func (p *Pipe) bothResetting(fromClient bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.cause == CauseNone && p.mu.reset != nil && p.mu.resetClient != fromClient
}

// awaitOtherClose records one side's reset and gives the other resetGrace to close; false if
// the pipe is ending already or the other side is gone.
func (p *Pipe) awaitOtherClose(fromClient bool, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.cause != CauseNone || p.mu.clientEOF || p.mu.serverEOF || p.mu.reset != nil {
		return false
	}
	p.mu.reset, p.mu.resetClient = err, fromClient
	other := p.server
	if !fromClient {
		other = p.client
	}
	_ = other.SetReadDeadline(time.Now().Add(resetGrace))
	return true
}

// failed ends the pipe after an error on the client's (client true) or the server's side.
func (p *Pipe) failed(client bool, err error) {
	if client {
		p.end(clientLost(err), err)
	} else {
		p.end(serverLost(err), err)
	}
}

// checkIdle runs on the idle timer: it ends the pipe when nothing moved for Idle, or re-arms.
func (p *Pipe) checkIdle() {
	quiet := time.Since(time.Unix(0, p.last.Load()))
	if quiet >= p.opts.Idle {
		p.end(CauseClientIdleTimeout, nil)
		return
	}
	p.mu.Lock()
	if p.mu.cause == CauseNone && p.mu.idle != nil {
		p.mu.idle.Reset(p.opts.Idle - quiet)
	}
	p.mu.Unlock()
}

// End ends the pipe now with cause; safe from any goroutine, any number of times.
func (p *Pipe) End(cause Cause) { p.end(cause, nil) }

// Drain cannot wait for a transaction boundary it cannot see: a blind session is left to run
// (shutdown's grace period, or an administrator's maint, ends it).
func (p *Pipe) Drain(Cause) {}

func (p *Pipe) end(cause Cause, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.cause != CauseNone {
		return
	}
	p.mu.cause, p.mu.err = cause, err
	past := time.Unix(1, 0)
	_ = p.client.SetDeadline(past)
	_ = p.server.SetDeadline(past)
}

// State is what can be known of a blind session.
func (p *Pipe) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := State{Blind: true, HalfClosedSince: p.mu.halfClosedSince, Ending: p.mu.cause != CauseNone}
	st.IdleSince = time.Unix(0, p.last.Load())
	return st
}

// Bytes returns the bytes relayed so far from the client and from the server.
func (p *Pipe) Bytes() (fromClient, fromServer int64) {
	return p.fromClient.Load(), p.fromServer.Load()
}

func (p *Pipe) copierDone() {
	if p.running.Add(-1) != 0 {
		return
	}
	p.mu.Lock()
	if p.mu.idle != nil {
		p.mu.idle.Stop()
	}
	cause, err := p.mu.cause, p.mu.err
	p.mu.Unlock()
	_ = p.server.Close()
	_ = p.client.Close()
	p.onEnd(Result{Cause: cause, Err: err, FromClient: p.fromClient.Load(), FromServer: p.fromServer.Load()})
}
