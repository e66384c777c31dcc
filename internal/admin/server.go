package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds of the admin listener: it faces operators and scripts, so a slow or hostile client
// must not hold a connection or memory for long.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
	maxBodyBytes      = 64 << 10
	// shutdownTimeout bounds the graceful part of Close; handlers still running after it
	// have their connections closed.
	shutdownTimeout = 5 * time.Second
)

// Options configure a Listener.
type Options struct {
	// Listen is host:port; port 0 picks a free port (see Listener.Addr).
	Listen string
	// ReadToken is the bearer token of the read-only scope; empty = no read-only token.
	ReadToken []byte
	// AdminToken is the bearer token of the admin scope (which includes read); empty = none.
	// When both tokens are empty every request has the admin scope.
	AdminToken []byte
	// Backend is what the API reads and acts on. Required.
	Backend Backend
	// Gatherer is served at /metrics; nil serves an empty registry.
	Gatherer prometheus.Gatherer
	// Logger gets the audit log and the listener's errors; nil discards them.
	Logger *slog.Logger
	// PeerCancel, if set, serves POST /api/v1/peer/cancel: CancelRequests forwarded by the
	// other pgfront instances of a fleet. It authenticates requests itself (an HMAC under the
	// fleet secret), so the bearer tokens do not apply to it.
	PeerCancel http.Handler
}

// Listener is the admin HTTP listener (not "Server": api.go's Server is the JSON view of a
// PostgreSQL server). Its methods are safe for concurrent use; Listen, Serve and Close are
// meant to be called once each, in that order.
type Listener struct {
	backend Backend
	log     *slog.Logger
	authp   atomic.Pointer[authenticator]
	rejects *rejectLog
	handler http.Handler
	http    *http.Server

	mu struct {
		sync.Mutex
		ln      net.Listener  // set by Listen
		serving chan struct{} // closed when the Serve goroutine returns; nil before Serve
		closed  bool
	}
	listenAddr string
}

// New checks opts and builds a Listener; it does not bind (see Listen).
func New(opts Options) (*Listener, error) {
	if opts.Backend == nil {
		return nil, errors.New("admin: no backend")
	}
	if opts.Listen == "" {
		return nil, errors.New("admin: no listen address")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	gatherer := opts.Gatherer
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	s := &Listener{
		backend:    opts.Backend,
		log:        logger,
		rejects:    &rejectLog{log: logger},
		listenAddr: opts.Listen,
	}
	s.SetTokens(opts.ReadToken, opts.AdminToken)
	s.handler = s.routes(gatherer, opts.PeerCancel)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler is the server's whole HTTP handler (auth included), for tests.
func (s *Listener) Handler() http.Handler { return s.handler }

func (s *Listener) auth() *authenticator { return s.authp.Load() }

// SetTokens replaces the bearer tokens (a config reload); requests from then on use them.
func (s *Listener) SetTokens(readToken, adminToken []byte) {
	s.authp.Store(newAuthenticator(readToken, adminToken, s.rejects))
}

// Listen binds the listen address.
func (s *Listener) Listen() error {
	ln, err := net.Listen("tcp", s.listenAddr)
	if err != nil {
		return fmt.Errorf("listening on admin address %s: %w", s.listenAddr, err)
	}
	return s.Adopt(ln)
}

// Adopt serves on ln, already bound (a listener handed over by a previous pgfront process),
// instead of binding the listen address; the Listener owns ln from then on.
func (s *Listener) Adopt(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed || s.mu.ln != nil {
		ln.Close()
		return fmt.Errorf("listening on admin address %s: server already listening or closed", s.listenAddr)
	}
	s.mu.ln = ln
	return nil
}

// Listener is the bound listener (nil before Listen), for a hand-over to a new process.
func (s *Listener) Listener() net.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.ln
}

// Addr is the bound address, nil before Listen.
func (s *Listener) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.ln == nil {
		return nil
	}
	return s.mu.ln.Addr()
}

// Serve starts serving on its own goroutine and returns at once. The goroutine lives until
// Close. Serve without a successful Listen does nothing.
func (s *Listener) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.ln == nil || s.mu.serving != nil || s.mu.closed {
		return
	}
	s.mu.serving = make(chan struct{})
	go s.serve(s.mu.ln, s.mu.serving)
}

// serve is the accept loop's goroutine; http.Server.Serve backs off on temporary accept
// errors and returns ErrServerClosed after Shutdown or Close.
func (s *Listener) serve(ln net.Listener, done chan<- struct{}) {
	defer close(done)
	s.log.Info("admin listener serving", "addr", ln.Addr().String(), "auth", s.auth().mode())
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin listener stopped", "addr", ln.Addr().String(), "error", err)
	}
}

// Close stops the listener and waits for running handlers: gracefully for up to
// shutdownTimeout, then by closing their connections. Safe to call more than once.
func (s *Listener) Close() {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.closed = true
	ln, serving := s.mu.ln, s.mu.serving
	s.mu.Unlock()

	if serving == nil {
		// Listen without Serve: the listener is ours to close.
		if ln != nil {
			ln.Close()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("admin listener shutdown timed out, closing connections", "error", err)
		s.http.Close()
	}
	<-serving
}
