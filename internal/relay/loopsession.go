package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
)

// The two sides of a session, as indexes of loopState's arrays.
const (
	sideClient = 0
	sideServer = 1
)

// maxReadsPerPass bounds how many full buffers one socket relays before the loop serves its
// other sessions (a long result must not hold up the rest).
const maxReadsPerPass = 4

// loopState is a session's state on its event loop (Session.lp). It is owned by the loop's
// goroutine; posted is guarded by the loop's mu, and after the session left the loop its
// finishing goroutine owns fd.
type loopState struct {
	fd [2]int // the client's and the server's socket (duplicates the session owns); -1 once closed or taken by a net.Conn
	// pend holds bytes a write to that side could not take yet (nil: none). While they wait,
	// the other side is not read: the same backpressure as a copier blocked in its write.
	pend             [2]*[]byte
	pendOff, pendEnd [2]int
	dl               [2]int64 // read deadline per side (loop time, see loop.base; 0: none)
	heapIdx          int      // index in the loop's timer heap; -1 when not in it
	heapAt           int64    // when the heap entry fires
	stopped          [2]bool  // that side's reads are over (EOF, error, timeout)
	hup              [2]bool  // that side reported a FIN or error: read it to the end, short reads included
	inAgain          bool     // queued in loop.again
	registered, done bool     // on the loop's epoll set; left the loop (finish runs)
	countedIdle      bool     // counted in loop.idle
	fh               frontendHandler
	bh               backendHandler
	posted           bool // queued in loop.mu.posted
}

// enterLoop moves a plain-TCP session onto one of its Loops: the sockets leave Go's poller
// (duplicated, then the net.Conns closed) and the loop takes over from its next pass. False
// (the session unchanged) when a socket has no file descriptor to take.
func (s *Session) enterLoop() bool {
	l := s.opts.Loops.pick()
	if l.isClosed() {
		return false
	}
	// Duplicates for the loop to own; the conns are closed then, which takes the sockets out
	// of Go's poller without closing them.
	cfd, err := netx.DupFD(s.client)
	if err != nil {
		return false
	}
	sfd, err := netx.DupFD(s.server)
	if err != nil {
		_ = rawClose(cfd)
		return false
	}
	_ = s.client.Close()
	_ = s.server.Close()
	s.ls.fd = [2]int{cfd, sfd}
	s.ls.heapIdx = -1
	s.useLoopWriters()
	// One critical section: End and Drain, on other goroutines, see either the closed conns
	// (and set deadlines on them, harmlessly) or the loop.
	s.mu.Lock()
	s.lp = l
	// The closed conns are not needed again (finish makes new ones if it must wait): their
	// few hundred bytes each go now, not when the session ends.
	s.client, s.server = nil, nil
	if d := l.at(s.opts.LoginDeadline); d != 0 {
		s.ls.dl = [2]int64{d, d}
	}
	s.mu.Unlock()
	l.post(s)
	return true
}

// useLoopWriters makes the session's writes (and the backend handler's) the loop's.
func (s *Session) useLoopWriters() {
	s.ls.bh = backendHandler{s: s}
	s.writeClient = s.writeToClient
	s.writeServer = s.writeToServer
}

func (s *Session) writeToClient(p []byte) (int, error) { return s.loopWrite(sideClient, p) }
func (s *Session) writeToServer(p []byte) (int, error) { return s.loopWrite(sideServer, p) }

// loopWrite writes p (at most one read buffer) to one side; what the socket cannot take now
// waits in ls.pend and goes out when it becomes writable. Only a failed write is an error.
func (s *Session) loopWrite(side int, p []byte) (int, error) {
	ls := &s.ls
	off := 0
	for off < len(p) {
		n, err := netx.RawWrite(ls.fd[side], p[off:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			b := getBuf()
			ls.pendEnd[side] = copy(*b, p[off:])
			ls.pendOff[side] = 0
			ls.pend[side] = b
			return len(p), nil
		case err != nil:
			return off, err
		}
		off += n
	}
	return len(p), nil
}

// register adds a posted session's sockets to its loop. Edge-triggered registration reports
// what is ready already, so nothing that arrived before is missed.
func (s *Session) register() {
	s.ls.registered = true
	if err := s.lp.add(s); err != nil {
		s.ls.registered = false
		s.end(CauseServerReset, err) // the loop cannot watch the sockets (out of memory, max_user_watches)
		return
	}
	s.schedule()
}

// onPosted acts on a session another goroutine posted: a new one, an end, or a drain.
func (s *Session) onPosted() {
	if s.ls.done {
		return
	}
	if !s.ls.registered {
		s.register()
	}
	if s.greet != nil {
		s.afterAny()
		return
	}
	s.mu.Lock()
	if s.mu.cause == CauseNone && s.drainingIdleLocked() {
		// Drain at a transaction boundary: end now if the client has been quiet long enough,
		// or wake when it will have been.
		if !time.Now().Before(s.drainEndLocked()) {
			cause := s.mu.draining
			s.mu.Unlock()
			s.end(cause, nil)
		} else {
			s.setReadDeadline(sideClient, s.wakeLocked())
			s.mu.Unlock()
		}
	} else {
		s.mu.Unlock()
	}
	s.afterEvent()
}

// onEvent handles epoll's report for one of the session's sockets.
func (s *Session) onEvent(fd int, ev uint32) {
	if s.greet != nil {
		s.greetEvent(fd, ev)
		s.afterAny()
		return
	}
	side := sideClient
	if fd == s.ls.fd[sideServer] {
		side = sideServer
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && s.ls.pend[side] != nil {
		s.flush(side)
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.ls.hup[side] = true
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.readSide(side)
	}
	s.afterEvent()
}

// onAgain serves a session that had more to read than one pass takes.
func (s *Session) onAgain() {
	for side := range 2 {
		s.readSide(side)
	}
	s.afterEvent()
}

// readSide relays what one side has to say: reads into the loop's buffer, scans, writes to the
// other side, until the socket is drained (a short read empties a stream socket's buffer), the
// other side cannot take more, or maxReadsPerPass buffers went (then the loop comes back).
func (s *Session) readSide(side int) {
	ls := &s.ls
	l := s.lp
	for range maxReadsPerPass {
		if ls.done || ls.stopped[side] || ls.pend[1-side] != nil {
			return // a flush of the other side comes back here
		}
		if dl := ls.dl[side]; dl != 0 && dl <= l.now {
			// As on a goroutine, a deadline that passed wins over bytes waiting.
			s.timeout(side)
			return
		}
		n, err := netx.RawRead(ls.fd[side], l.buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return
		case err == nil && n > 0:
			var ok bool
			if side == sideClient {
				ok = s.relayFromClient(&ls.fh, l.buf[:n])
			} else {
				ok = s.relayFromServer(&ls.bh, l.buf[:n])
			}
			if !ok {
				ls.stopped[side] = true
				return
			}
			if n < len(l.buf) && !ls.hup[side] {
				return
			}
			continue
		}
		ls.stopped[side] = true
		if err == nil {
			err = io.EOF
		} else {
			err = os.NewSyscallError("read", err)
		}
		if side == sideClient {
			s.clientReadFailed(err, ls.fh.terminated)
		} else {
			s.serverReadFailed(err)
		}
		return
	}
	if !ls.inAgain {
		ls.inAgain = true
		l.again = append(l.again, s)
	}
}

// flush writes bytes waiting for one side; once they are out, the other side is read again.
func (s *Session) flush(side int) {
	ls := &s.ls
	b := ls.pend[side]
	for ls.pendOff[side] < ls.pendEnd[side] {
		n, err := netx.RawWrite(ls.fd[side], (*b)[ls.pendOff[side]:ls.pendEnd[side]])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil:
			ls.pend[side] = nil
			putBuf(b)
			s.writeFailed(side, os.NewSyscallError("write", err))
			return
		}
		ls.pendOff[side] += n
	}
	ls.pend[side] = nil
	putBuf(b)
	if side == sideClient {
		s.clientAtBoundary = s.backendScan.AtBoundary()
		// As on a goroutine, whose write returns only now: the server's idle bound runs
		// from the moment its bytes were taken, not from when they were queued.
		s.rearmServerIdle()
	}
	s.readSide(1 - side)
	s.schedule()
}

// writeFailed ends the session after a failed write to one side, as the copiers do.
func (s *Session) writeFailed(side int, err error) {
	if side == sideServer {
		s.serverFailed(err)
		return
	}
	s.mu.Lock()
	s.mu.clientDead = s.mu.cause == CauseNone
	s.mu.Unlock()
	s.end(clientLost(err), err)
}

// timeout is a read deadline that passed on one side: what a copier's read would return.
func (s *Session) timeout(side int) {
	s.ls.stopped[side] = true
	if side == sideClient {
		s.clientReadFailed(os.ErrDeadlineExceeded, s.ls.fh.terminated)
	} else {
		s.serverReadFailed(os.ErrDeadlineExceeded)
	}
}

// onTimer runs when the session's heap entry came up: a deadline passed, or one that moved
// later is re-armed.
func (s *Session) onTimer() {
	if s.greet != nil {
		s.greetTimeout()
		s.afterAny()
		return
	}
	ls := &s.ls
	for side := range 2 {
		if dl := ls.dl[side]; !ls.done && dl != 0 && dl <= s.lp.now && !ls.stopped[side] && ls.pend[1-side] == nil {
			s.timeout(side)
		}
	}
	s.schedule()
	s.afterEvent()
}

// setReadDeadline sets a side's read deadline: the conn's on goroutines, the loop's timer on
// a loop (called on the loop's goroutine, or before the session is registered).
func (s *Session) setReadDeadline(side int, t time.Time) {
	if s.lp == nil {
		_ = s.conn(side).SetReadDeadline(t)
		return
	}
	s.ls.dl[side] = s.lp.at(t)
	s.schedule()
}

// schedule makes the heap entry fire no later than the earliest deadline that can act. A
// deadline that moved later leaves the entry where it was (onTimer re-arms it).
func (s *Session) schedule() {
	ls := &s.ls
	if !ls.registered || ls.done {
		return
	}
	var at int64
	for side := range 2 {
		dl := ls.dl[side]
		if dl == 0 || ls.stopped[side] || (ls.pend[1-side] != nil && dl <= s.lp.now) {
			continue // a read held back by a full destination checks its deadline when it resumes
		}
		if at == 0 || dl < at {
			at = dl
		}
	}
	switch {
	case at == 0:
	case ls.heapIdx < 0:
		ls.heapAt = at
		s.lp.timers.push(s)
	case at < ls.heapAt:
		ls.heapAt = at
		s.lp.timers.up(ls.heapIdx)
	}
}

// afterAny is afterEvent, or afterGreetEvent while the session is greeted.
func (s *Session) afterAny() {
	if s.greet != nil {
		s.afterGreetEvent()
		return
	}
	s.afterEvent()
}

// afterEvent keeps the loop's idle count and, once a cause is set, takes the session off the
// loop and finishes it: on the loop when that needs no write and no wait, otherwise on a
// goroutine of its own.
func (s *Session) afterEvent() {
	ls := &s.ls
	if ls.done {
		return
	}
	s.mu.Lock()
	ending := s.mu.cause != CauseNone
	idle := s.parkedLocked()
	s.mu.Unlock()
	if idle != ls.countedIdle {
		ls.countedIdle = idle
		if idle {
			s.lp.idle.Add(1)
		} else {
			s.lp.idle.Add(-1)
		}
	}
	if !ending {
		return
	}
	ls.done = true
	if ls.heapIdx >= 0 {
		s.lp.timers.removeAt(ls.heapIdx)
	}
	if ls.registered {
		s.lp.remove(s)
	}
	for side, b := range ls.pend {
		if b != nil {
			putBuf(b)
			ls.pend[side] = nil
		}
	}
	if p := s.endPlan(); s.atOnce(&p) {
		s.onEnd(s.finishBy(p)) // onEnd must not block (see Start)
		return
	}
	go s.finishDetached()
}

// finishDetached is the goroutine that ends a session that ran on a loop.
func (s *Session) finishDetached() { s.onEnd(s.finish()) }

// conn is one side's net.Conn.
func (s *Session) conn(side int) net.Conn {
	if side == sideClient {
		return s.client
	}
	return s.server
}

// onLoopFD returns a side's socket while a session that ran on a loop still holds it.
func (s *Session) onLoopFD(side int) (int, bool) {
	if s.lp == nil || s.ls.fd[side] < 0 {
		return -1, false
	}
	return s.ls.fd[side], true
}

// closeWrite passes a FIN on to one side.
func (s *Session) closeWrite(side int) {
	if fd, ok := s.onLoopFD(side); ok {
		_ = rawShutdownWrite(fd)
		return
	}
	if hc, ok := s.conn(side).(halfCloser); ok {
		_ = hc.CloseWrite()
	}
}

// closeSide closes one side's socket.
func (s *Session) closeSide(side int) {
	if fd, ok := s.onLoopFD(side); ok {
		_ = rawClose(fd)
		s.ls.fd[side] = -1
		return
	}
	if c := s.conn(side); c != nil { // nil: a loop session's socket already closed
		_ = c.Close()
	}
}

// takeConn returns one side's net.Conn for a blocking wait in finish: for a session that ran
// on a loop, a new one on its socket (nil if that failed; the socket is then closed).
func (s *Session) takeConn(side int) net.Conn {
	fd, ok := s.onLoopFD(side)
	if !ok {
		return s.conn(side)
	}
	c, err := netx.FDConn(fd)
	s.ls.fd[side] = -1
	if err != nil {
		return nil
	}
	if side == sideClient {
		s.client = c
	} else {
		s.server = c
		s.serverRead = newChunkReader(c)
	}
	return c
}

// finalWrite writes a last message (pgfront's FATAL, a Terminate) to one side within
// FatalWriteTimeout.
func (s *Session) finalWrite(side int, msg []byte) {
	if fd, ok := s.onLoopFD(side); ok {
		n, err := netx.RawWrite(fd, msg)
		if err == nil && n == len(msg) || err != nil && !errors.Is(err, unix.EAGAIN) {
			return
		}
		msg = msg[max(n, 0):] // the socket's buffer is full: wait for room, bounded
	}
	c := s.takeConn(side)
	if c == nil {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(s.opts.FatalWriteTimeout))
	_, _ = c.Write(msg)
}

// resetOnClose makes the server side's close a reset (SO_LINGER 0), so a busy backend's next
// write fails and it stops working for nobody.
func (s *Session) resetOnClose() {
	if fd, ok := s.onLoopFD(sideServer); ok {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		return
	}
	if tc, ok := s.server.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}
