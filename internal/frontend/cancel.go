package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// cancelTimeout bounds a whole cancel exchange with a server (connect, write, wait for close).
const cancelTimeout = 5 * time.Second

// errUnknownCancelKey is a CancelRequest naming no live session; it is dropped and counted.
var errUnknownCancelKey = errors.New("cancel request for an unknown backend key dropped")

// forwardCancel routes a client's CancelRequest to the server holding the session with that
// backend key, and nowhere else.
func (f *Frontend) forwardCancel(key pgwire.CancelKey) error {
	s, ok := f.registry.Lookup(key)
	if !ok {
		return errUnknownCancelKey
	}
	addr := s.ServerAddr()
	if addr == "" {
		return errUnknownCancelKey
	}
	s.mu.Lock()
	serverTLS, ka := s.route.ServerTLS, s.route.ServerTCP
	s.mu.Unlock()
	return f.sendCancel(ka, addr, serverTLS, key)
}

// sendCancel delivers a CancelRequest for key to the server at addr, on a connection with ka's
// socket options (the route's server side), and waits (bounded) for the server to close the
// connection, as PostgreSQL does once it has signalled the backend.
//
// Its context is not the frontend's: Close and a shutdown's grace running out cancel that one
// just before they end the sessions, and those are the cancels that must still go out, or the
// backends go on running queries for clients that are gone. cancelTimeout bounds it instead.
func (f *Frontend) sendCancel(ka netx.KeepAlive, addr string, serverTLS ServerTLS, key pgwire.CancelKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	c, err := ka.Dialer(0).DialContext(ctx, "tcp", addr)
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
