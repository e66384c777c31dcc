package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// cancelTimeout bounds a whole cancel exchange with a server (connect, write, wait for close).
const cancelTimeout = 5 * time.Second

// errUnknownCancelKey is a CancelRequest naming no live session; it is dropped and counted.
var errUnknownCancelKey = errors.New("cancel request for an unknown backend key dropped")

// CancelRequest results (pgfront_cancel_requests_total, the cancel request log line).
const (
	cancelForwarded  = "forwarded"
	cancelUnknownKey = "unknown_key"
	cancelFailed     = "failed"
)

// CancelSession sends a CancelRequest for key to the server of this frontend's session with
// that backend key; an error when there is none or the cancel could not be sent.
func (f *Frontend) CancelSession(key pgwire.CancelKey) error {
	_, _, err := f.cancelLocal(key)
	return err
}

// forwardCancel routes a client's CancelRequest to the server holding the session with that
// backend key, and nowhere else. It returns that session and server (nil for an unknown key);
// a forwarded cancel counts against the session (its client cancelled a query). A key no
// session here has goes to Options.ForwardCancel (the sessions of a previous pgfront process
// still draining after a hand-over).
func (f *Frontend) forwardCancel(key pgwire.CancelKey) (*session, *cluster.Server, error) {
	s, srv, err := f.cancelLocal(key)
	if errors.Is(err, errUnknownCancelKey) && f.opts.ForwardCancel != nil && f.opts.ForwardCancel(key) {
		return nil, nil, nil
	}
	return s, srv, err
}

// cancelLocal cancels the query of this frontend's session with key.
func (f *Frontend) cancelLocal(key pgwire.CancelKey) (*session, *cluster.Server, error) {
	s, ok := f.registry.Lookup(key)
	if !ok {
		return nil, nil, errUnknownCancelKey
	}
	s.mu.Lock()
	srv, serverTLS, d := s.mu.server, s.route.ServerTLS, s.route.dialer()
	s.mu.Unlock()
	if srv == nil {
		return nil, nil, errUnknownCancelKey
	}
	if err := f.sendCancel(d, srv.Addr, serverTLS, key); err != nil {
		return s, srv, err
	}
	s.cancels.Add(1)
	return s, srv, nil
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
	c, err := d.DialContext(ctx, "tcp", addr)
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
