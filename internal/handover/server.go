package handover

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is one listening socket offered for hand-over, or received in one.
type Listener struct {
	Kind   string // KindRoute or KindAdmin
	Name   string // route name; "" for the admin listener
	Config string // the listen address as written in the config, e.g. "0.0.0.0:5000" or "127.0.0.1:0"
	Ln     *net.TCPListener
}

// Server answers hand-over requests on a unix socket for the old process; see Serve.
type Server struct {
	path         string
	offer        func() []Listener
	handedOver   func()
	logger       *slog.Logger
	readyTimeout time.Duration

	ln    *net.UnixListener
	bound os.FileInfo // the socket file we bound, so that we unlink only our own

	stop chan struct{} // closed by Close: ends the accept loop's back-off
	done chan struct{} // closed when the serve goroutine has returned

	// mu guards the fields below, shared by Close and the serve goroutine.
	mu struct {
		sync.Mutex
		closed    bool          // Close was called, or a taker said ready
		committed bool          // a taker said ready: handedOver is (being) called
		conn      *net.UnixConn // the request being answered; Close closes it
		stopped   bool          // the listener was closed (and the file unlinked if ours)
		stopErr   error         // what stopping the listener returned
	}
}

// Serve serves hand-over requests on the unix socket at path until Close, or until one
// hand-over succeeded.
//
// For each request it calls offer, on its own goroutine, for the listeners to hand over (an
// empty list is fine, e.g. while draining when only the admin listener is left), sends
// duplicates of their descriptors, then waits up to 30s for the taker to say it serves them.
// Only then does it stop serving (closing and unlinking its socket), acknowledge, and call
// handedOver, at most once and on its own goroutine; so the old process stops accepting only
// after the new one accepts. handedOver may call Close. A taker that hangs up, fails or times
// out before saying ready changes nothing: requests are answered one at a time, and later
// ones are answered as before.
//
// A stale socket file at path (nothing listening: connecting is refused) is replaced; a live
// one is ErrInUse, and any other file at path an error. logger may be nil.
func Serve(path string, offer func() []Listener, handedOver func(), logger *slog.Logger) (*Server, error) {
	return serve(path, offer, handedOver, logger, defaultReadyTimeout)
}

// serve is Serve with the wait for "ready" as a parameter, for tests.
func serve(path string, offer func() []Listener, handedOver func(), logger *slog.Logger, readyTimeout time.Duration) (*Server, error) {
	if offer == nil || handedOver == nil {
		return nil, errors.New("serving hand-over requests: offer and handedOver are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening for hand-over requests: %w", err)
	}
	ln.SetUnlinkOnClose(false) // we unlink only if the file is still ours
	// The mode set by bind(2) depends on the umask; peerCred guards the moment before chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("restricting the hand-over socket to its owner: %w", err)
	}
	bound, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("inspecting the hand-over socket: %w", err)
	}
	s := &Server{
		path:         path,
		offer:        offer,
		handedOver:   handedOver,
		logger:       logger.With("handover_socket", path),
		readyTimeout: readyTimeout,
		ln:           ln,
		bound:        bound,
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	go s.serve()
	return s, nil
}

// removeStaleSocket removes the socket file at path if no process listens on it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("inspecting %s: not a socket (mode %s)", path, fi.Mode())
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err == nil {
		c.Close()
		return fmt.Errorf("binding %s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// Close stops serving and unlinks the socket file if it is still ours. It waits for a
// request being answered to end, but not for a handedOver call in progress (which may itself
// call Close); after a hand-over it does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	committed, already := s.mu.committed, s.mu.closed
	s.mu.closed = true
	conn := s.mu.conn
	s.mu.Unlock()
	if committed {
		return nil
	}
	var err error
	if !already {
		close(s.stop)
		if conn != nil {
			conn.Close()
		}
		err = s.stopListening()
	}
	<-s.done
	return err
}

// stopListening closes the listener and unlinks the socket file if it is still the one we
// bound: after a hand-over the new process may already serve its own at the same path.
func (s *Server) stopListening() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.stopped {
		return s.mu.stopErr
	}
	s.mu.stopped = true
	err := s.ln.Close()
	if err != nil {
		err = fmt.Errorf("closing the hand-over socket: %w", err)
	}
	if fi, lerr := os.Lstat(s.path); lerr == nil && os.SameFile(fi, s.bound) {
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("unlinking the hand-over socket: %w", rerr))
		}
	}
	s.mu.stopErr = err
	return err
}

// serve is the accept loop: it owns the listener's accepting and answers one request at a
// time. It returns when the listener is closed, after calling handedOver if a taker said
// ready.
func (s *Server) serve() {
	defer close(s.done)
	var delay time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off rather than spin, and try again.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger.Warn("accepting a hand-over request", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
			}
			continue
		}
		delay = 0
		if s.answer(c) {
			s.handedOver()
			return
		}
	}
}

// answer answers one request on c and reports whether the taker said ready, in which case
// the listener is already stopped. It closes c.
func (s *Server) answer(c *net.UnixConn) (committed bool) {
	defer c.Close()
	if !s.track(c) {
		return false
	}
	defer s.untrack()

	cred, err := peerCred(c)
	if err != nil {
		s.logger.Warn("refusing a hand-over request", "err", err)
		return false
	}
	log := s.logger.With("taker_pid", cred.Pid)
	n, err := s.sendOffer(c)
	switch {
	case errors.Is(err, io.EOF):
		// A probe (another process checking whether we are alive) or a taker that gave up.
		log.Debug("hand-over taker left before asking", "err", err)
		return false
	case errors.Is(err, net.ErrClosed):
		log.Debug("hand-over request cut short by Close", "err", err)
		return false
	case err != nil:
		log.Warn("offering listeners for hand-over", "err", err)
		return false
	}
	log.Info("offered listeners for hand-over; waiting for the taker to serve", "listeners", n)

	if err := s.awaitReady(c); err != nil {
		if errors.Is(err, net.ErrClosed) {
			log.Debug("hand-over request cut short by Close", "err", err)
		} else {
			log.Warn("hand-over not completed; still serving", "err", err)
		}
		return false
	}
	if !s.commit() {
		log.Info("hand-over taker said ready after Close; not handing over")
		return false
	}
	// The ack goes after the listener is stopped: once the taker's Ready returns, it can
	// serve hand-over requests of its own at the same path.
	c.SetDeadline(time.Now().Add(ioTimeout))
	if err := writeMessage(c, newMessage(msgAck), nil); err != nil {
		log.Warn("acknowledging the taker's ready; handing over anyway", "err", err)
	}
	log.Info("listeners handed over")
	return true
}

// track records c as the request being answered, unless Close was called.
func (s *Server) track(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	s.mu.conn = c
	return true
}

func (s *Server) untrack() {
	s.mu.Lock()
	s.mu.conn = nil
	s.mu.Unlock()
}

// commit marks the hand-over as done, unless Close came first, and stops the listener.
func (s *Server) commit() bool {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return false
	}
	s.mu.closed, s.mu.committed = true, true
	s.mu.Unlock()
	if err := s.stopListening(); err != nil {
		s.logger.Warn("stopping the hand-over socket", "err", err)
	}
	return true
}

// sendOffer reads the taker's request and sends it the offered listeners, or a refusal. It
// returns how many listeners it sent.
func (s *Server) sendOffer(c *net.UnixConn) (int, error) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	m, fds, err := readMessage(c)
	closeFDs(fds) // a taker has no business sending descriptors
	if err == nil && len(fds) > 0 {
		err = fmt.Errorf("reading the request: %d unexpected descriptors", len(fds))
	}
	if err == nil && m.Type != msgTake {
		err = fmt.Errorf("reading the request: a %s message, want %s", m.Type, msgTake)
	}
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			s.refuse(c, err)
		}
		return 0, err
	}

	offer := newMessage(msgOffer)
	fds, err = s.describe(s.offer(), &offer)
	if err != nil {
		s.refuse(c, err)
		return 0, err
	}
	defer closeFDs(fds)
	if err := writeMessage(c, offer, fds); err != nil {
		return 0, err
	}
	return len(fds), nil
}

// describe fills m's descriptions of ls and returns duplicates of their descriptors, which
// the caller closes.
func (s *Server) describe(ls []Listener, m *message) (fds []int, err error) {
	if len(ls) > MaxListeners {
		return nil, fmt.Errorf("describing listeners: %d, over the limit of %d", len(ls), MaxListeners)
	}
	defer func() {
		if err != nil {
			closeFDs(fds)
			fds = nil
		}
	}()
	for i, l := range ls {
		d := description{Kind: l.Kind, Name: l.Name, Config: l.Config}
		if err := d.validate(); err != nil {
			return fds, fmt.Errorf("describing listener %d: %w", i, err)
		}
		if l.Ln == nil {
			return fds, fmt.Errorf("describing listener %d (%s %q): no listener", i, l.Kind, l.Name)
		}
		fd, err := dupListener(l.Ln)
		if err != nil {
			return fds, fmt.Errorf("describing listener %d (%s %q): %w", i, l.Kind, l.Name, err)
		}
		fds = append(fds, fd)
		m.Listeners = append(m.Listeners, d)
	}
	return fds, nil
}

// dupListener returns a close-on-exec duplicate of ln's descriptor, without the os.File that
// ln.File would register with the poller.
func dupListener(ln *net.TCPListener) (int, error) {
	raw, err := ln.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("duplicating listener: %w", err)
	}
	fd, dupErr := -1, error(nil)
	if err := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("duplicating listener: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("duplicating listener: %w", dupErr)
	}
	return fd, nil
}

// refuse tells the taker why it gets nothing, best effort.
func (s *Server) refuse(c *net.UnixConn, why error) {
	m := newMessage(msgRefuse)
	m.Error = why.Error()
	if len(m.Error) > 1024 {
		m.Error = m.Error[:1024]
	}
	c.SetWriteDeadline(time.Now().Add(ioTimeout)) // the read may have used up the deadline
	if err := writeMessage(c, m, nil); err != nil {
		s.logger.Debug("sending a refusal", "err", err)
	}
}

// awaitReady waits, at most readyTimeout, for the taker to say it serves.
func (s *Server) awaitReady(c *net.UnixConn) error {
	c.SetDeadline(time.Now().Add(s.readyTimeout))
	m, fds, err := readMessage(c)
	closeFDs(fds)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("waiting for ready: the taker hung up: %w", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("waiting for ready: no word from the taker in %s: %w", s.readyTimeout, err)
	case err != nil:
		return fmt.Errorf("waiting for ready: %w", err)
	case len(fds) > 0:
		return fmt.Errorf("waiting for ready: %d unexpected descriptors", len(fds))
	case m.Type != msgReady:
		return fmt.Errorf("waiting for ready: a %s message", m.Type)
	}
	return nil
}
