package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// cancelTimeout bounds a whole cancel exchange with a server (connect, write, wait for close).
const cancelTimeout = 5 * time.Second

// ErrUnknownCancelKey is StartCancel's error for a key no live session here has.
var ErrUnknownCancelKey = errors.New("cancel request for an unknown backend key")

// CancelRequest results (pgfront_cancel_requests_total, the cancel request log line).
const (
	// cancelForwarded: sent to the server of the session with that key, here or in the
	// draining process this one took over from (via=predecessor).
	cancelForwarded = "forwarded"
	// cancelPeer: the peer instance that holds the session took it (peer=).
	cancelPeer = "peer"
	// cancelFallback: no instance owns the key (a passthrough session's, or its owner is
	// down): sent as received to every eligible server of the route it arrived on; the one
	// whose backend has that key, if any, cancels.
	cancelFallback = "fallback"
	// cancelUnknownKey: dropped, no instance owns the key and there is no fallback (off, or
	// no eligible server).
	cancelUnknownKey = "unknown_key"
	// cancelRateLimited: dropped, no instance owns the key and the route's fallback budget
	// (fleet.cancel_fallback_rate) is spent.
	cancelRateLimited = "rate_limited"
	// cancelFailed: the session was found, the cancel could not be sent to its server.
	cancelFailed = "failed"
)

// CancelResults are the values of a CancelRequest's result, for the metric's documentation.
func CancelResults() []string {
	return []string{cancelForwarded, cancelPeer, cancelFallback, cancelUnknownKey, cancelRateLimited, cancelFailed}
}

// cancelRouted is where a client's CancelRequest went.
type cancelRouted struct {
	result  string
	target  *session        // the session here whose query it cancelled
	server  *cluster.Server // its server
	peer    string          // the peer that took it
	via     string          // "predecessor" when the draining predecessor took it
	servers int             // fallback: the servers it was sent to
	err     error
}

// routeCancel routes a CancelRequest that arrived on route r, in this order: the session here
// whose client got that key; the draining predecessor (Options.ForwardCancel); the peer
// instances whose tag the key carries (Options.PeerCancel); and, when nobody owns it, the
// route's eligible servers, within the route's fallback rate. It runs on the cancel
// connection's own goroutine and is bounded by the timeouts of each step.
func (f *Frontend) routeCancel(r *Route, key pgwire.CancelKey) cancelRouted {
	s, srv, err := f.cancelLocal(key)
	switch {
	case err == nil:
		return cancelRouted{result: cancelForwarded, target: s, server: srv}
	case !errors.Is(err, ErrUnknownCancelKey):
		return cancelRouted{result: cancelFailed, target: s, server: srv, err: err}
	}
	if f.opts.ForwardCancel != nil && f.opts.ForwardCancel(key) {
		return cancelRouted{result: cancelForwarded, via: "predecessor"}
	}
	var peerErr error
	if f.opts.PeerCancel != nil {
		peer, ok, err := f.opts.PeerCancel(key, r.Name)
		if ok {
			return cancelRouted{result: cancelPeer, peer: peer}
		}
		peerErr = err
	}
	out := f.fallbackCancel(r, key)
	if out.err == nil && peerErr != nil {
		out.err = peerErr // why the owner was not asked: the line says so
	}
	return out
}

// fallbackCancel sends key, as received, to every eligible server of r, if r's fallback
// budget allows (one token per CancelRequest).
func (f *Frontend) fallbackCancel(r *Route, key pgwire.CancelKey) cancelRouted {
	lim := f.fallbackLimiter(r)
	if lim == nil {
		return cancelRouted{result: cancelUnknownKey}
	}
	servers := r.Cluster.Servers()
	states := r.Cluster.States(nil, servers)
	idx, _ := r.Select.Select(nil, states)
	if len(idx) == 0 {
		return cancelRouted{result: cancelUnknownKey, err: fmt.Errorf("no %s server of cluster %q for a fallback cancel", r.Select.Role, r.Cluster.Name)}
	}
	if !lim.Allow() {
		return cancelRouted{result: cancelRateLimited}
	}
	d := r.dialer()
	var wg sync.WaitGroup
	errs := make([]error, len(idx))
	for j, i := range idx {
		wg.Add(1)
		go func() { // one server's slowness must not hold up the others
			defer wg.Done()
			errs[j] = f.sendCancel(d, servers[i].Addr, r.ServerTLS, key)
		}()
	}
	wg.Wait()
	out := cancelRouted{result: cancelFallback, servers: len(idx), err: errors.Join(errs...)}
	if len(idx) == 1 {
		out.server = servers[idx[0]]
	}
	return out
}

// fallbackLimiter is route r's fallback token bucket (kept across reloads by route name); nil
// when r has no fallback.
func (f *Frontend) fallbackLimiter(r *Route) *rate.Limiter {
	if r.CancelFallbackRate <= 0 {
		return nil
	}
	burst := max(r.CancelFallbackBurst, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.fallback == nil {
		f.mu.fallback = make(map[string]*rate.Limiter)
	}
	lim := f.mu.fallback[r.Name]
	switch {
	case lim == nil:
		lim = rate.NewLimiter(rate.Limit(r.CancelFallbackRate), burst)
		f.mu.fallback[r.Name] = lim
	case lim.Limit() != rate.Limit(r.CancelFallbackRate) || lim.Burst() != burst:
		lim.SetLimit(rate.Limit(r.CancelFallbackRate))
		lim.SetBurst(burst)
	}
	return lim
}

// cancelLocal cancels the query of this frontend's session whose client got key, sending its
// server the key the server announced.
func (f *Frontend) cancelLocal(key pgwire.CancelKey) (*session, *cluster.Server, error) {
	t, ok := f.cancelTarget(key)
	if !ok {
		return nil, nil, ErrUnknownCancelKey
	}
	return t.s, t.srv, t.send(f)
}

// StartCancel takes a CancelRequest another process relayed (a peer instance, or the
// successor after an upgrade) for the session here whose client got key. It never asks
// anyone else. It returns as soon as it knows whether such a session exists
// (ErrUnknownCancelKey if not), and sends the cancel to that session's server on a goroutine
// of its own, bounded as every cancel is, then calls done (if not nil) with the outcome. The
// asker is answered in the time of a lookup, not of the server's: a server slow to take
// cancels (the moment clients cancel most) must not make the asker give up on the owner and
// fall back to guessing.
func (f *Frontend) StartCancel(key pgwire.CancelKey, done func(error)) error {
	t, ok := f.cancelTarget(key)
	if !ok {
		return ErrUnknownCancelKey
	}
	run := func() {
		err := t.send(f)
		if done != nil {
			done(err)
		}
	}
	select {
	case f.bgSlots <- struct{}{}:
	default:
		// As many sends under way as the peer channel lets in: this one is sent in place,
		// holding up its asker (and the asker's slot) as before, so a flood of requests for
		// a live key cannot open ever more connections to the server.
		run()
		return nil
	}
	f.mu.Lock()
	closed := f.mu.bgClosed
	if !closed {
		f.bg.Add(1)
	}
	f.mu.Unlock()
	if closed {
		<-f.bgSlots
		run() // the frontend is ending: nothing would wait for a goroutine
		return nil
	}
	go func() {
		defer f.bg.Done()
		defer func() { <-f.bgSlots }()
		run()
	}()
	return nil
}

// maxBackgroundCancels bounds the cancels StartCancel sends at once on goroutines of their
// own (the peer channel's in-flight bound); more are sent on their caller's goroutine.
const maxBackgroundCancels = 64

// cancelTarget is a cancel's destination: the session whose client got a key, and what its
// server needs.
type cancelTarget struct {
	s         *session
	srv       *cluster.Server
	serverKey pgwire.CancelKey
	serverTLS ServerTLS
	d         *net.Dialer
}

// cancelTarget finds the live session here whose client got key (false: none, or it has no
// server yet).
func (f *Frontend) cancelTarget(key pgwire.CancelKey) (cancelTarget, bool) {
	s, serverKey, ok := f.registry.Lookup(key)
	if !ok {
		return cancelTarget{}, false
	}
	s.mu.Lock()
	t := cancelTarget{s: s, srv: s.mu.server, serverKey: serverKey, serverTLS: s.route.ServerTLS, d: s.route.dialer()}
	s.mu.Unlock()
	return t, t.srv != nil
}

// send delivers the cancel to the target's server and counts it on the session.
func (t cancelTarget) send(f *Frontend) error {
	if err := f.sendCancel(t.d, t.srv.Addr, t.serverTLS, t.serverKey); err != nil {
		return err
	}
	t.s.cancels.Add(1)
	return nil
}

// sendCancel delivers a CancelRequest for key to the server at addr, dialled by d (the route's
// server-side socket options), and waits (bounded) for the server to close the
// connection, as PostgreSQL does once it has signalled the backend.
//
// Its context is not the frontend's: Close and a shutdown's grace running out cancel that one
// just before they end the sessions, and those are the cancels that must still go out, or the
// backends go on running queries for clients that are gone. cancelTimeout bounds it instead.
func (f *Frontend) sendCancel(d *net.Dialer, addr string, serverTLS ServerTLS, key pgwire.CancelKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	c, _, err := f.dialServer(ctx, d, addr)
	if err != nil {
		return fmt.Errorf("connecting to %s for a cancel request: %w", addr, err)
	}
	defer c.Close()
	if serverTLS != nil {
		// A server that requires TLS takes the cancel over TLS too.
		tc, err := serverTLS.Negotiate(ctx, c, addr)
		if err != nil {
			return fmt.Errorf("cancel request to %s: %w", addr, err)
		}
		c = tc
		defer tc.Close()
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(pgwire.EncodeCancelRequest(key)); err != nil {
		return fmt.Errorf("sending cancel request to %s: %w", addr, err)
	}
	var b [1]byte
	_, _ = io.ReadFull(c, b[:]) // the server answers nothing and closes
	return nil
}

// maxKeyIssues bounds how often a key is issued again because a live session has it already.
const maxKeyIssues = 4

// issueKey issues the secret a client sees (Options.IssueKey), again when a live session of
// this frontend already has the same key: two sessions on servers whose backends share a pid
// would otherwise collide in 2^-24 of cases, and one's cancel would reach the other's query.
func (f *Frontend) issueKey(pid uint32, secret []byte) {
	for range maxKeyIssues {
		f.opts.IssueKey(pid, secret)
		if !f.registry.HasKey(pgwire.CancelKey{ProcessID: pid, Secret: string(secret)}) {
			return
		}
	}
}
