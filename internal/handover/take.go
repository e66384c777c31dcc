package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Taken is the new process's side of one hand-over: the listeners received from the old
// process and the connection on which to say ready. Its methods are safe for concurrent use.
//
// Ownership: a claimed listener belongs to the caller from Claim on; the others belong to
// Taken, and Ready or Abort closes them. Exactly one of Ready and Abort should be called;
// Abort after Ready does nothing, so `defer t.Abort()` is the way to not leak on error paths.
type Taken struct {
	conn    *net.UnixConn
	peerPID int

	// mu guards the fields below.
	mu struct {
		sync.Mutex
		listeners []Listener
		claimed   []bool
		finished  bool // Ready or Abort was called
	}
}

// Take connects to the process serving path and receives its listeners. When nothing
// serves path (no socket file, or nothing listening on it) the error wraps ErrNoPeer and the
// cause: the caller binds its listeners fresh. Take takes at most 10s, less if ctx says so;
// ctx bounds Take only, Ready has its own bound. The old process answers one taker at a time:
// a Take while another is in progress waits for it, within that bound.
//
// Once Take returns, the old process waits at most 30s for Ready, after which it keeps its
// listeners and Ready fails.
func Take(ctx context.Context, path string) (_ *Taken, retErr error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connecting to hand-over socket %s: %w: %w", path, ErrNoPeer, err)
		}
		return nil, fmt.Errorf("connecting to hand-over socket %s: %w", path, err)
	}
	c := nc.(*net.UnixConn)
	defer func() {
		if retErr != nil {
			c.Close()
		}
	}()
	if _, err := peerCred(c); err != nil {
		return nil, fmt.Errorf("taking listeners from %s: %w", path, err)
	}

	// One deadline for the whole exchange, set before the context can cut it short, so a
	// cancellation always wins.
	deadline := time.Now().Add(ioTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	m, fds, err := exchangeTake(c)
	if !stop() && err == nil {
		// Cancelled as the exchange ended: the deadline may be in the past by now, which
		// would fail Ready. Give up cleanly instead.
		closeFDs(fds)
		err = ctx.Err()
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return nil, fmt.Errorf("taking listeners from %s: %w", path, err)
	}
	listeners, err := receiveListeners(m.Listeners, fds)
	if err != nil {
		return nil, fmt.Errorf("taking listeners from %s (pid %d): %w", path, m.PID, err)
	}
	t := &Taken{conn: c, peerPID: m.PID}
	t.mu.listeners = listeners
	t.mu.claimed = make([]bool, len(listeners))
	return t, nil
}

// exchangeTake asks for the listeners and returns the offer and its descriptors, which the
// caller owns; on error none is left open.
func exchangeTake(c *net.UnixConn) (message, []int, error) {
	if err := writeMessage(c, newMessage(msgTake), nil); err != nil {
		return message{}, nil, err
	}
	m, fds, err := readMessage(c)
	if err != nil {
		return message{}, nil, fmt.Errorf("waiting for the offer: %w", err)
	}
	switch {
	case m.Type == msgRefuse:
		closeFDs(fds)
		return message{}, nil, fmt.Errorf("%w: %s", ErrRefused, m.Error)
	case m.Type != msgOffer:
		closeFDs(fds)
		return message{}, nil, fmt.Errorf("waiting for the offer: a %s message", m.Type)
	case len(fds) != len(m.Listeners):
		closeFDs(fds)
		return message{}, nil, fmt.Errorf("reading the offer: %d descriptors for %d listeners", len(fds), len(m.Listeners))
	}
	return m, fds, nil
}

// receiveListeners turns the received descriptors into listeners. It takes ownership of
// every descriptor: on error all of them, and every listener built, are closed.
func receiveListeners(descs []description, fds []int) (_ []Listener, retErr error) {
	ls := make([]Listener, 0, len(fds))
	defer func() {
		if retErr != nil {
			for _, l := range ls {
				l.Ln.Close()
			}
		}
	}()
	for i, fd := range fds {
		ln, err := listenerFromFD(fd, descs[i])
		if err != nil {
			closeFDs(fds[i+1:])
			return nil, fmt.Errorf("receiving listener %d (%s %q at %s): %w", i, descs[i].Kind, descs[i].Name, descs[i].Config, err)
		}
		ls = append(ls, Listener{Kind: descs[i].Kind, Name: descs[i].Name, Config: descs[i].Config, Ln: ln})
	}
	return ls, nil
}

// listenerFromFD returns a listener on fd, which it closes in every case (the listener has
// its own duplicate).
func listenerFromFD(fd int, d description) (*net.TCPListener, error) {
	if err := checkListeningTCP(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "handover "+d.Kind+" "+d.Config)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("making a listener: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("making a listener: a %T, not a TCP listener", ln)
	}
	return tl, nil
}

// checkListeningTCP checks that fd is a listening TCP socket, so that nothing else (a pipe,
// a connection, a unix socket) ends up behind a route.
func checkListeningTCP(fd int) error {
	get := func(opt int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt) }
	typ, err := get(unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("checking the descriptor: not a socket: %w", err)
	}
	domain, err := get(unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("checking the descriptor: %w", err)
	}
	proto, err := get(unix.SO_PROTOCOL)
	if err != nil {
		return fmt.Errorf("checking the descriptor: %w", err)
	}
	// Go listens with MPTCP where the kernel has it: that is TCP as far as we care.
	tcp := proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP
	if typ != unix.SOCK_STREAM || (domain != unix.AF_INET && domain != unix.AF_INET6) || !tcp {
		return fmt.Errorf("checking the descriptor: not a TCP socket (domain %d, type %d, protocol %d)", domain, typ, proto)
	}
	accepting, err := get(unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("checking the descriptor: %w", err)
	}
	if accepting != 1 {
		return errors.New("checking the descriptor: a TCP socket that is not listening")
	}
	return nil
}

// PeerPID returns the old process's pid, as it said.
func (t *Taken) PeerPID() int { return t.peerPID }

// Listeners returns every received listener, claimed or not. Close none of them: unclaimed
// ones belong to t.
func (t *Taken) Listeners() []Listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Listener(nil), t.mu.listeners...)
}

// Claim returns the listener for a route or the admin listener, which then belongs to the
// caller, and false if none fits (or after Ready or Abort). A listener fits if it is not
// claimed yet and has the same kind, name and configured address; failing that, the same
// kind and a bound address equal to config resolved (so a renamed route, or an address
// written differently, keeps its socket). A config with port 0 matches only by name: its
// port is whatever the kernel chose, so the address says nothing.
//
// The wildcard addresses 0.0.0.0, :: and an empty host are equal to each other, as "tcp"
// listeners on them are the same dual-stack socket.
func (t *Taken) Claim(kind, name, config string) (*net.TCPListener, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.finished {
		return nil, false
	}
	for i, l := range t.mu.listeners {
		if !t.mu.claimed[i] && l.Kind == kind && l.Name == name && l.Config == config {
			t.mu.claimed[i] = true
			return l.Ln, true
		}
	}
	want, err := net.ResolveTCPAddr("tcp", config)
	if err != nil || want.Port == 0 {
		return nil, false
	}
	for i, l := range t.mu.listeners {
		if t.mu.claimed[i] || l.Kind != kind {
			continue
		}
		if got, ok := l.Ln.Addr().(*net.TCPAddr); ok && sameTCPAddr(got, want) {
			t.mu.claimed[i] = true
			return l.Ln, true
		}
	}
	return nil, false
}

func sameTCPAddr(a, b *net.TCPAddr) bool {
	if a.Port != b.Port {
		return false
	}
	wild := func(ip net.IP) bool { return len(ip) == 0 || ip.IsUnspecified() }
	return a.IP.Equal(b.IP) || (wild(a.IP) && wild(b.IP))
}

// Ready tells the old process that this one serves the claimed listeners, and waits for its
// acknowledgement: once Ready returns nil the old process has stopped accepting and serving
// its hand-over socket, so this process may serve one at the same path. It closes the
// listeners nobody claimed and the connection.
//
// Keep serving the claimed listeners whatever Ready returns: an error means the old process
// may or may not have stopped accepting, and two processes accepting on the same socket is
// harmless, while none would refuse connections.
func (t *Taken) Ready() error {
	unclaimed, ok := t.finish()
	if !ok {
		return errors.New("saying ready: the hand-over already ended")
	}
	defer closeListeners(unclaimed)
	defer t.conn.Close()
	t.conn.SetDeadline(time.Now().Add(ioTimeout))
	if err := writeMessage(t.conn, newMessage(msgReady), nil); err != nil {
		return fmt.Errorf("saying ready to pid %d: %w", t.peerPID, err)
	}
	m, fds, err := readMessage(t.conn)
	closeFDs(fds)
	if err != nil {
		return fmt.Errorf("waiting for pid %d to acknowledge ready: %w", t.peerPID, err)
	}
	if m.Type != msgAck {
		return fmt.Errorf("waiting for pid %d to acknowledge ready: a %s message", t.peerPID, m.Type)
	}
	return nil
}

// Abort ends the hand-over without saying ready, so the old process keeps serving: it
// closes the listeners nobody claimed and the connection. Claimed listeners are the
// caller's to close. It does nothing after Ready or a first Abort.
func (t *Taken) Abort() {
	unclaimed, ok := t.finish()
	if !ok {
		return
	}
	t.conn.Close()
	closeListeners(unclaimed)
}

// finish marks the hand-over as ended and returns the unclaimed listeners, or false if it
// had already ended.
func (t *Taken) finish() ([]*net.TCPListener, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.finished {
		return nil, false
	}
	t.mu.finished = true
	var unclaimed []*net.TCPListener
	for i, l := range t.mu.listeners {
		if !t.mu.claimed[i] {
			unclaimed = append(unclaimed, l.Ln)
		}
	}
	return unclaimed, true
}

func closeListeners(ls []*net.TCPListener) {
	for _, ln := range ls {
		ln.Close()
	}
}
