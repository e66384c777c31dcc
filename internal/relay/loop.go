package relay

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
)

// Loops runs plain-TCP sessions on event loops of pgfront's own instead of two copier
// goroutines each: one loop per CPU (GOMAXPROCS), each a goroutine with its own epoll set. A
// session on a loop is a state struct; the loop reads whichever socket is ready straight into
// its one read buffer, scans the framing and writes to the other socket in the same pass, with
// no goroutine hand-off and no read that returns EAGAIN before each wait (Go's poller makes
// one per message). An idle session costs its Session struct and its sockets: no goroutine,
// no buffer.
//
// A loop never blocks its thread: its epoll set is itself watched by Go's poller, and the loop
// goroutine parks there when no socket is ready (a thread blocked in epoll_wait would hold a
// Go P until sysmon takes it back, up to 10 ms later, stalling every other goroutine). It
// collects ready sockets with epoll_wait(timeout 0), a batch per wake-up. Deadlines are a
// timer heap per loop, whose earliest entry is the epoll set's read deadline in Go's poller.
//
// Sockets are taken out of Go's own poller when a session joins a loop (Session.Begin dups
// each file descriptor and closes the net.Conn), so a ready socket wakes only its loop; a
// greeted session's sockets never were in it (greet.go). A session that ends with nothing to
// write or wait for finishes on its loop; otherwise its end runs on a goroutine of its own
// (Session.finish: pgfront's FATAL, the cancel of a running query, the server's Terminate),
// which gets net.Conns back on the same sockets only when it has to wait on one.
//
// Everything about a loop's sessions is touched by that loop's goroutine only; other
// goroutines (End, Drain, Begin) post the session to the loop, which acts on it in its next
// pass. The session's callbacks (Options.Hooks but Cancel, IssueKey, Observer) run on the
// loop's goroutine: a slow one stalls every session
// of that loop, so they must not block. Loops is safe for concurrent use; Close stops the
// loops.
type Loops struct {
	loops []*loop
	next  atomic.Uint32
}

// NewLoops starts one event loop per GOMAXPROCS.
func NewLoops() (*Loops, error) { return newLoops(runtime.GOMAXPROCS(0)) }

func newLoops(n int) (*Loops, error) {
	ls := &Loops{}
	for range n {
		l, err := newLoop()
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.loops = append(ls.loops, l)
	}
	return ls, nil
}

// Close stops the loops. Sessions still on them are ended with CauseShutdown first (a
// greeted one is handed off; an end that writes or waits runs on a goroutine of its own), and
// their listeners are stopped.
func (ls *Loops) Close() {
	for _, l := range ls.loops {
		l.close()
	}
}

// Parked is the number of sessions idle on the loops now (logged in, no query running): held
// without a goroutine or a buffer.
func (ls *Loops) Parked() int {
	n := 0
	for _, l := range ls.loops {
		n += int(l.idle.Load())
	}
	return n
}

// Sessions is the number of sessions the loops hold now.
func (ls *Loops) Sessions() int {
	n := 0
	for _, l := range ls.loops {
		n += int(l.sessions.Load())
	}
	return n
}

// pick chooses the loop for a new session (round robin).
func (ls *Loops) pick() *loop {
	return ls.loops[int(ls.next.Add(1))%len(ls.loops)]
}

// loop is one event loop. Fields without a comment are owned by its goroutine.
type loop struct {
	epfd    int
	epf     *os.File        // epfd in Go's poller: where the loop goroutine waits
	epRaw   syscall.RawConn // epf's, for the wait
	wakefd  int             // eventfd in the epoll set, written to wake the loop for posted sessions
	done    chan struct{}
	armed   int64 // the read deadline set on epf (loop time; 0: none)
	ready   int   // what the last epoll_wait returned
	events  []unix.EpollEvent
	closing bool       // pass saw the loop closed
	spare   []*Session // the posted queue's other slice, reused

	buf  []byte     // the read buffer: bytes read are relayed before the next read
	byFD []*Session // session by socket file descriptor
	// genByFD is the registration number of the socket now at that descriptor, also carried
	// by its epoll events (EpollEvent.Pad): an event collected before its socket was closed
	// and the number reused in the same batch (a loop connects a socket mid-batch) is dropped.
	genByFD []int32
	nextGen int32
	timers  timerHeap
	again   []*Session // sessions with more to read: served before waiting
	more    bool       // a listener may have more to accept: poll again before waiting
	// Loop times are nanoseconds since base on the monotonic clock (a step of the wall clock
	// moves no deadline); 0 means none.
	base time.Time
	now  int64 // read once per pass

	idle     atomic.Int64 // sessions idle (State.Parked)
	sessions atomic.Int64

	listeners []*Listener // held: watched, or paused after a failed accept

	// mu guards the posted queues and the sleeping flag, and Session.ls.posted.
	mu struct {
		sync.Mutex
		posted   []*Session
		ops      []listenOp
		sleeping bool // (about to be) parked: a post must write wakefd
		closed   bool
		finished bool // endAll stopped the listeners: do refuses
	}
}

func newLoop() (*loop, error) {
	l, err := makeLoop()
	if err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// makeLoop is newLoop without the loop's goroutine.
func makeLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll set: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("adding eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l := &loop{epfd: epfd, wakefd: wakefd, done: make(chan struct{}), buf: make([]byte, bufSize),
		events: make([]unix.EpollEvent, 256), base: time.Now()}
	l.epf = os.NewFile(uintptr(epfd), "epoll") // non-blocking: added to Go's poller
	rc, err := l.epf.SyscallConn()
	if err != nil {
		l.epf.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l.epRaw = rc
	return l, nil
}

func (l *loop) close() {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return
	}
	l.mu.closed = true
	l.mu.Unlock()
	l.wake()
	<-l.done
	_ = l.epf.Close()
	unix.Close(l.wakefd)
}

func (l *loop) wake() {
	var one [8]byte
	one[0] = 1
	_, _ = netx.RawWrite(l.wakefd, one[:])
}

// post asks the loop to look at s in its next pass: a new session to register, or one whose
// cause or drain changed. Safe from any goroutine; never blocks.
func (l *loop) post(s *Session) {
	l.mu.Lock()
	if s.ls.posted {
		l.mu.Unlock()
		return
	}
	s.ls.posted = true
	l.mu.posted = append(l.mu.posted, s)
	l.unlockAndWake()
}

// unlockAndWake unlocks l.mu after something was queued, and wakes the loop if it sleeps.
func (l *loop) unlockAndWake() {
	sleeping := l.mu.sleeping
	l.mu.sleeping = false
	l.mu.Unlock()
	if sleeping {
		l.wake()
	}
}

// do asks the loop to change a listener in its next pass. Safe from any goroutine, the loop's
// own included; never blocks. False once the loop has finished (its listeners are stopped).
func (l *loop) do(op listenOp) bool {
	l.mu.Lock()
	if l.mu.finished {
		l.mu.Unlock()
		return false
	}
	l.mu.ops = append(l.mu.ops, op)
	l.unlockAndWake()
	return true
}

// epollEvents is what a session's sockets are watched for, edge-triggered: registered once,
// never modified.
const epollEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// run is the loop's goroutine. The loop's body is the epoll set's RawConn.Read callback
// (pass): Read resets the set's readiness in Go's poller once, then pass serves what is ready
// and returns false to park until the poller sees the set readable again. Readiness that
// comes while a pass runs is kept by the poller, so a pass that served a batch parks without
// first asking epoll_wait for an empty answer (one system call per wake-up saved). Read
// returns at the earliest timer's deadline (the next pass fires it) or when the loop closes.
func (l *loop) run() {
	defer close(l.done)
	pass := l.pass
	for {
		err := l.epRaw.Read(pass)
		if l.closing {
			l.endAll()
			return
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The earliest timer is due. Fire it here: Read fails at once, without calling
			// pass, until the deadline moves.
			l.now = l.clock()
			l.fireTimers()
			l.armed = -1 // set it again even if the earliest timer is unchanged
			l.armTimer()
		case err != nil:
			panic(fmt.Sprintf("relay: waiting on the epoll set: %v", err)) // closed under the loop: a bug
		}
	}
}

// pass serves the loop until nothing is left to do, then returns false (park), or true once
// the loop is closed.
func (l *loop) pass(uintptr) bool {
	for {
		l.mu.Lock()
		if l.mu.closed {
			l.mu.Unlock()
			l.closing = true
			return true
		}
		l.mu.sleeping = false
		posted := l.mu.posted
		l.mu.posted = l.spare[:0]
		for _, s := range posted {
			s.ls.posted = false
		}
		ops := l.mu.ops
		l.mu.ops = nil
		l.mu.Unlock()
		for _, op := range ops {
			op.run()
		}

		l.pollNow()
		l.now = l.clock()
		full := l.ready == len(l.events)
		for _, ev := range l.events[:l.ready] {
			l.dispatch(ev)
		}
		l.ready = 0
		if len(l.again) > 0 {
			again := l.again
			l.again = nil
			for _, s := range again {
				s.ls.inAgain = false
				s.onAgain()
			}
			clear(again)
			if l.again == nil {
				l.again = again[:0]
			}
		}
		for i, s := range posted {
			s.onPosted()
			posted[i] = nil
		}
		l.spare = posted[:0]
		l.fireTimers()

		if full || len(l.again) > 0 || l.more {
			l.more = false
			continue // more may be ready now
		}
		l.mu.Lock()
		idle := len(l.mu.posted) == 0 && len(l.mu.ops) == 0
		l.mu.sleeping = idle
		l.mu.Unlock()
		if idle {
			l.armTimer()
			if len(l.timers) == 0 || l.timers[0].ls.heapAt > l.clock() {
				return false
			}
		}
	}
}

// dispatch hands one collected event to its session.
func (l *loop) dispatch(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wakefd {
		var b [8]byte
		_, _ = netx.RawRead(l.wakefd, b[:])
		return
	}
	if ev.Pad == listenPad {
		l.acceptOn(fd)
		return
	}
	if fd < len(l.byFD) {
		if s := l.byFD[fd]; s != nil && l.genByFD[fd] == ev.Pad {
			s.onEvent(fd, ev.Events)
		}
	}
}

// pollNow collects ready sockets into l.events without blocking (epoll_wait with timeout 0; a
// raw system call: it cannot block, so the runtime need not hand the P over).
func (l *loop) pollNow() {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
			uintptr(len(l.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			panic(fmt.Sprintf("relay: epoll_wait: %v", e)) // EBADF/EFAULT/EINVAL: a bug
		}
		l.ready = int(n)
		return
	}
}

// clock is the loop's time now.
func (l *loop) clock() int64 { return max(int64(time.Since(l.base)), 1) }

// at is t in the loop's time (0 for the zero time: no deadline; at least 1 otherwise).
func (l *loop) at(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(l.base)), 1)
}

// armTimer makes the epoll set's read deadline the earliest timer's.
func (l *loop) armTimer() {
	var at int64
	if len(l.timers) > 0 {
		at = l.timers[0].ls.heapAt
	}
	if at == l.armed {
		return
	}
	l.armed = at
	t := time.Time{}
	if at != 0 {
		t = l.base.Add(time.Duration(at)) // monotonic, as the poller's deadline is
	}
	_ = l.epf.SetReadDeadline(t)
}

// endAll ends the sessions still on a closing loop (greeted ones are handed off) and stops
// its listeners; a session posted after this is not served (enterLoop and Greet check
// first), a listener change is refused (do).
func (l *loop) endAll() {
	l.mu.Lock()
	l.mu.finished = true
	ops := l.mu.ops
	l.mu.ops = nil
	l.mu.Unlock()
	for _, op := range ops {
		op.ln.stop() // watched or not
	}
	for len(l.listeners) > 0 {
		l.listeners[0].stop()
	}
	for _, s := range l.byFD {
		if s != nil && !s.ls.done {
			s.end(CauseShutdown, nil)
			s.afterAny()
		}
	}
	l.mu.Lock()
	posted := l.mu.posted
	l.mu.posted = nil
	for _, s := range posted {
		s.ls.posted = false
	}
	l.mu.Unlock()
	for _, s := range posted {
		if s.ls.done {
			continue
		}
		if !s.ls.registered {
			s.register()
		}
		s.end(CauseShutdown, nil)
		s.afterAny()
	}
}

// isClosed reports whether the loop was closed.
func (l *loop) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.closed
}

// add registers a session's sockets (a greeted session's server socket comes later: addFD).
func (l *loop) add(s *Session) error {
	for i, fd := range s.ls.fd {
		if fd < 0 {
			continue
		}
		if err := l.addFD(s, fd); err != nil {
			if i == 1 && s.ls.fd[0] >= 0 {
				_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.ls.fd[0], nil)
				l.byFD[s.ls.fd[0]] = nil
			}
			return err
		}
	}
	l.sessions.Add(1)
	return nil
}

// addFD registers one of a session's sockets.
func (l *loop) addFD(s *Session, fd int) error {
	if l.nextGen++; l.nextGen == listenPad {
		l.nextGen++ // wrapped: that number marks listeners
	}
	ev := unix.EpollEvent{Events: epollEvents, Fd: int32(fd), Pad: l.nextGen}
	if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("adding a socket to the event loop: %w", err)
	}
	for fd >= len(l.byFD) {
		l.byFD = append(l.byFD, make([]*Session, len(l.byFD)+64)...)
		l.genByFD = append(l.genByFD, make([]int32, len(l.genByFD)+64)...)
	}
	l.byFD[fd] = s
	l.genByFD[fd] = l.nextGen
	return nil
}

// remove unregisters a session's sockets (they stay open).
func (l *loop) remove(s *Session) {
	for _, fd := range s.ls.fd {
		if fd >= 0 && fd < len(l.byFD) && l.byFD[fd] == s {
			_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			l.byFD[fd] = nil
		}
	}
	l.sessions.Add(-1)
}

// fireTimers acts on the sessions whose earliest deadline has passed.
func (l *loop) fireTimers() {
	for len(l.timers) > 0 {
		s := l.timers[0]
		if s.ls.heapAt > l.now {
			return
		}
		l.timers.pop()
		s.onTimer()
	}
}

// timerHeap is a min-heap of sessions by ls.heapAt; each session is in it at most once
// (ls.heapIdx, -1 when not). Deadlines that move later are left in place and re-armed when
// they come up (most moves are later), so a query costs no heap operation.
type timerHeap []*Session

func (h *timerHeap) push(s *Session) {
	s.ls.heapIdx = len(*h)
	*h = append(*h, s)
	h.up(s.ls.heapIdx)
}

func (h *timerHeap) pop() {
	h.removeAt(0)
}

func (h *timerHeap) removeAt(i int) {
	old := *h
	n := len(old) - 1
	s := old[i]
	if i != n {
		old[i] = old[n]
		old[i].ls.heapIdx = i
	}
	old[n] = nil
	*h = old[:n]
	s.ls.heapIdx = -1
	if i != n {
		h.down(i)
		h.up(i)
	}
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].ls.heapAt <= h[i].ls.heapAt {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].ls.heapAt < h[c].ls.heapAt {
			c = r
		}
		if h[i].ls.heapAt <= h[c].ls.heapAt {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ls.heapIdx = i
	h[j].ls.heapIdx = j
}

// The loops' own system calls on sockets never block (the sockets are non-blocking; a close
// without SO_LINGER returns at once), so they are made as raw system calls: the runtime is not
// told, and sysmon never hands a P over because one of them ran long (the loopback FIN or
// handshake work done inside them can take tens of microseconds).

func rawErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// rawClose closes fd.
func rawClose(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return rawErr(e)
}

// rawShutdownWrite sends fd's FIN.
func rawShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return rawErr(e)
}

// rawEpollCtl is epoll_ctl.
func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return rawErr(e)
}
