package relay

import (
	"errors"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
)

// A listening socket can be watched by a loop itself (Loops.Listen): the loop accepts when it
// is ready and its Acceptor greets the new socket on that same loop, so a connection costs no
// goroutine wake-up and no post between the accept and the first read. (An accept goroutine
// is woken by Go's poller and posts each socket to a loop, which the eventfd wakes in turn.)
//
// A listener is watched by one loop only: the loops' epoll sets are themselves watched by
// Go's poller, not waited on, so EPOLLEXCLUSIVE cannot pick one of several and every loop
// would wake for every connection. Sessions still spread: GreetFrom greets on the accepting
// loop unless it holds clearly more sessions than another.

// Acceptor receives what a loop accepts from a listener (Loops.Listen). Its methods run on the
// loop's goroutine and must not block.
type Acceptor interface {
	// Accepted owns fd, a non-blocking socket accepted from peer (the zero AddrPort if the
	// kernel gave none): it greets it (Loops.GreetFrom with on), hands it to a goroutine or
	// closes it.
	Accepted(fd int, peer netip.AddrPort, on Origin)
	// AcceptFailed: an accept failed with err (out of file descriptors, say) and the loop
	// stopped watching the listener, so that it does not spin; Listener.Resume watches it
	// again. It is called once per pause.
	AcceptFailed(err error)
}

// Origin is the loop an Acceptor's call runs on (the zero Origin: none).
type Origin struct{ l *loop }

// Listener is a listening socket a loop watches and accepts from.
type Listener struct {
	fd   int
	a    Acceptor
	lp   *loop
	done chan struct{} // closed once the loop stopped watching it and closed fd

	// Owned by the loop's goroutine:
	held    bool // in the loop's listeners (from its first watch until stopped)
	watched bool // in the loop's epoll set
	stopped bool
}

// acceptBatch bounds the accepts of one readiness report, so that a burst of connections
// does not starve the loop's sessions. The socket is watched level-triggered, so the next
// epoll_wait reports the rest again; but that is no news for Go's poller, which watches the
// loop's set edge-triggered, so the loop makes that pass before it parks (loop.more).
const acceptBatch = 16

// listenPad marks a listener's epoll events (EpollEvent.Pad; sessions' registrations are
// numbered from 1 and skip it).
const listenPad = int32(-1 << 31)

// Listen has a loop watch the non-blocking listening socket fd, which the loops own from now
// on (they close it once stopped), and give a's Accepted each connection accepted. It fails
// only when the loops have finished closing (fd is then the caller's); one that is closing
// stops the listener at once.
func (ls *Loops) Listen(fd int, a Acceptor) (*Listener, error) {
	ln := &Listener{fd: fd, a: a, lp: ls.pick(), done: make(chan struct{})}
	if !ln.lp.do(listenOp{ln, opWatch}) {
		return nil, errors.New("event loops closed")
	}
	return ln, nil
}

// Stop has the loop stop watching the listener and close its socket; Done is closed then.
// It never blocks and may be called more than once, from any goroutine.
func (ln *Listener) Stop() {
	// A loop that finished stopped all its listeners (watched, paused or about to be watched)
	// first: nothing is left to do then.
	ln.lp.do(listenOp{ln, opStop})
}

// Resume watches the listener again after AcceptFailed (nothing if it was stopped).
func (ln *Listener) Resume() { ln.lp.do(listenOp{ln, opWatch}) }

// listenOp is a change to a listener asked of its loop (loop.do).
type listenOp struct {
	ln *Listener
	op uint8
}

const (
	opWatch = iota + 1
	opStop
)

// run applies the change (on the loop).
func (o listenOp) run() {
	switch o.op {
	case opWatch:
		o.ln.watch()
	case opStop:
		o.ln.stop()
	}
}

// Done is closed once the listener is stopped and its socket closed: no Accepted call comes
// after it.
func (ln *Listener) Done() <-chan struct{} { return ln.done }

// watch adds the listener to the loop's epoll set (on the loop). A listener the loop holds
// is stopped when the loop ends, watched or not.
func (ln *Listener) watch() {
	l := ln.lp
	if ln.stopped || ln.watched {
		return
	}
	if !ln.held {
		ln.held = true
		l.listeners = append(l.listeners, ln)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln.fd), Pad: listenPad}
	if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		ln.a.AcceptFailed(err)
		return
	}
	ln.watched = true
}

// unwatch takes the listener out of the loop's epoll set (on the loop).
func (ln *Listener) unwatch() {
	if ln.watched {
		_ = rawEpollCtl(ln.lp.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
		ln.watched = false
	}
}

// stop unwatches and closes the listener (on the loop).
func (ln *Listener) stop() {
	if ln.stopped {
		return
	}
	ln.unwatch()
	if ln.held {
		l := ln.lp
		l.listeners = slices.DeleteFunc(l.listeners, func(o *Listener) bool { return o == ln })
		ln.held = false
	}
	ln.stopped = true
	_ = rawClose(ln.fd)
	close(ln.done)
}

// accept takes up to acceptBatch connections (on the loop, when epoll reports the listener).
func (ln *Listener) accept() {
	for range acceptBatch {
		fd, peer, err := netx.RawAccept(ln.fd)
		switch {
		case err == nil:
			// (A Stop that Accepted asks for is applied after the batch.)
			ln.a.Accepted(fd, peer, Origin{ln.lp})
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.ECONNABORTED), errors.Is(err, unix.EPERM), errors.Is(err, unix.EPROTO):
			// The client left before it was taken, or a firewall refused it: the next one.
		default:
			// Out of descriptors or memory: the socket stays ready, and every pass of the loop
			// would fail the same way.
			ln.unwatch()
			ln.a.AcceptFailed(err)
			return
		}
	}
	ln.lp.more = true // the batch is spent: more may be waiting
}

// acceptOn serves a listener's readiness report (the loop's dispatch); a report for a
// listener paused or stopped in the same batch is dropped.
func (l *loop) acceptOn(fd int) {
	for _, ln := range l.listeners {
		if ln.fd == fd && ln.watched {
			ln.accept()
			return
		}
	}
}

// near is pref, unless it holds more than an eighth (and 8) more sessions than the loop with
// fewest, which it returns then; round robin without pref.
func (ls *Loops) near(pref *loop) *loop {
	if pref == nil {
		return ls.pick()
	}
	least := pref
	for _, l := range ls.loops {
		if l.sessions.Load() < least.sessions.Load() {
			least = l
		}
	}
	if n, m := pref.sessions.Load(), least.sessions.Load(); n <= m+m/8+8 {
		return pref
	}
	return least
}
