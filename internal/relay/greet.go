package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// A session can start on an event loop before it has a server (Loops.GreetFrom): the loop reads
// the client's first packets, answers SSLRequest and GSSENCRequest, connects to the server
// its Greeter chose and forwards the StartupMessage, then relays as any session on a loop. No
// goroutine and no blocking system call is involved from accept to the end, which under
// connection churn halves what a connection costs (each goroutine hand-off and each system
// call the scheduler is told about wakes a thread). Whatever the loop does not handle itself
// (a CancelRequest, a malformed packet, a wait for a slot, a failed connect, a stop) it hands
// to the Greeter's goroutine with the client's socket as it is.

// Greeter decides what a session greeted on a loop does until it is relayed. Packet and
// Connected run on the loop and must not block; HandOff runs on a goroutine of its own.
type Greeter interface {
	// Packet is given each complete first packet from the client. It is still in the
	// socket: Answer and Connect consume it, HandOff leaves it there.
	Packet(pkt *pgwire.FirstPacket) Greeting
	// Connected: the server chosen by Packet accepted the connection on fd (which the
	// session, s, owns). It returns the relay's options and what runs when the session ends
	// (as Begin's onEnd); the StartupMessage is forwarded and the login relayed from then on.
	Connected(s *Session, fd int) (Options, func(Result))
	// HandOff gives the session up before it is relayed: client is a conn on the client's
	// socket, with whatever Packet did not consume still unread (nil if none could be made:
	// the socket is closed). why is nil when Packet asked for it; else the session was
	// stopped (ErrGreetingStopped), the client's first packet was not complete in time
	// (os.ErrDeadlineExceeded), the client closed or reset (an io or network error), or the
	// connect failed (a *ConnectError).
	HandOff(client net.Conn, why error)
}

// Greeting is the Greeter's answer to a first packet.
type Greeting struct {
	Action GreetAction
	// Answer is the byte written for GreetAnswer ('N': no TLS, no GSS encryption).
	Answer byte
	// Server and ConnectTimeout are where and how long GreetConnect connects; Setup sets the
	// socket's options first (keepalive, TCP_USER_TIMEOUT, TCP_NODELAY).
	Server         netip.AddrPort
	ConnectTimeout time.Duration
	Setup          func(fd int) error
}

// GreetAction is what the loop does with a first packet.
type GreetAction uint8

const (
	// GreetHandOff leaves the packet unread and hands the session to Greeter.HandOff.
	GreetHandOff GreetAction = iota
	// GreetAnswer consumes the packet, writes Greeting.Answer and reads the next one.
	GreetAnswer
	// GreetConnect consumes the StartupMessage and connects to Greeting.Server.
	GreetConnect
)

// ErrGreetingStopped is why a greeting session was handed off after End: the Greeter's
// goroutine tells the client.
var ErrGreetingStopped = errors.New("session stopped while it started")

// ConnectError is a connect to a Greeting's server that failed or timed out, or, Local, could
// not be tried (no socket, its options, the loop's epoll set): not the server's fault.
type ConnectError struct {
	Server netip.AddrPort
	Err    error
	Local  bool
}

func (e *ConnectError) Error() string { return fmt.Sprintf("connecting to %s: %v", e.Server, e.Err) }
func (e *ConnectError) Unwrap() error { return e.Err }

// greetState is a session's state while it is greeted (Session.greet; nil once relayed).
type greetState struct {
	g          Greeter
	startup    []byte // the StartupMessage, forwarded once connected
	server     netip.AddrPort
	connecting bool
}

// GreetFrom starts a session with the accepted, non-blocking socket fd, which it owns from
// now on: the client's first packets must arrive by startupDeadline. The session starts on
// the loop of on (the loop that accepted fd), unless that loop holds clearly more sessions
// than another (then on the one with fewest; round robin for the zero Origin), and is
// registered in that loop's next pass (the same pass, for its own loop: no wake-up). It
// returns the session (End stops the greeting: the session is handed off with
// ErrGreetingStopped), or an error when the loops are closed (fd is then the caller's).
func (ls *Loops) GreetFrom(on Origin, fd int, startupDeadline time.Time, g Greeter) (*Session, error) {
	l := ls.near(on.l)
	if l.isClosed() {
		return nil, errors.New("event loops closed")
	}
	s := &Session{greet: &greetState{g: g}, clientAtBoundary: true}
	s.opts.Hooks = NoHooks{}
	s.opts.FatalWriteTimeout = time.Second
	s.ls.fd = [2]int{fd, -1}
	s.ls.heapIdx = -1
	s.mu.Lock()
	s.lp = l
	s.ls.dl[sideClient] = l.at(startupDeadline)
	s.mu.Unlock()
	l.post(s)
	return s, nil
}

// greetEvent handles readiness while the session is greeted.
func (s *Session) greetEvent(fd int, ev uint32) {
	if fd == s.ls.fd[sideServer] {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && s.greet.connecting {
			s.connected()
		}
		return
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.ls.hup[sideClient] = true
	}
	if !s.greet.connecting {
		s.greetRead()
	}
}

// greetRead looks at the client's first packets without taking them (MSG_PEEK): a packet
// is consumed only when the Greeter answers it or connects for it, so a hand-off leaves the
// socket as the client wrote it.
func (s *Session) greetRead() {
	ls, l := &s.ls, s.lp
	for !ls.done && s.greet != nil && !s.greet.connecting {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(ls.fd[sideClient]), uintptr(unsafeBuf(l.buf)),
			uintptr(min(len(l.buf), pgwire.MaxStartupPacketLen)), unix.MSG_PEEK, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			if ls.hup[sideClient] {
				s.handOff(io.ErrUnexpectedEOF) // a FIN or error came with no more bytes
			}
			return
		case e != 0:
			s.handOff(os.NewSyscallError("read", e))
			return
		case n == 0:
			s.handOff(io.EOF)
			return
		}
		p := l.buf[:n]
		size := 4 // until the length word is in
		if len(p) >= 4 {
			if size = int(binary.BigEndian.Uint32(p)); size < 8 || size > pgwire.MaxStartupPacketLen {
				s.handOff(nil) // the Greeter's goroutine reads it and says what is wrong
				return
			}
		}
		if len(p) < size {
			if ls.hup[sideClient] {
				s.handOff(io.ErrUnexpectedEOF) // the client closed mid-packet
			}
			return // the rest comes with the next edge
		}
		raw := append([]byte(nil), p[:size]...)
		pkt, err := pgwire.ParseFirstPacket(raw)
		if err != nil {
			s.handOff(nil)
			return
		}
		gr := s.greet.g.Packet(pkt)
		if gr.Action == GreetHandOff {
			s.handOff(nil)
			return
		}
		if got, err := netx.RawRead(ls.fd[sideClient], l.buf[:size]); err != nil || got != size {
			s.handOff(fmt.Errorf("consuming the first packet: read %d of %d bytes: %v", got, size, err))
			return
		}
		switch gr.Action {
		case GreetAnswer:
			if _, err := netx.RawWrite(ls.fd[sideClient], []byte{gr.Answer}); err != nil {
				s.handOff(os.NewSyscallError("write", err))
				return
			}
		case GreetConnect:
			s.connect(raw, gr)
			return
		}
	}
}

// connect starts connecting to the chosen server.
func (s *Session) connect(startup []byte, gr Greeting) {
	g := s.greet
	g.startup, g.server = startup, gr.Server
	fd, err := netx.RawSocket(gr.Server, gr.Setup)
	if err != nil {
		s.handOff(&ConnectError{Server: gr.Server, Err: err, Local: true})
		return
	}
	s.ls.fd[sideServer] = fd
	if err := s.lp.addFD(s, fd); err != nil {
		s.handOff(&ConnectError{Server: gr.Server, Err: err, Local: true})
		return
	}
	if err := netx.RawConnect(fd, gr.Server); err != nil {
		s.handOff(&ConnectError{Server: gr.Server, Err: err})
		return
	}
	g.connecting = true
	s.ls.dl[sideClient] = 0 // the startup packet is in; the connect has its own bound
	if gr.ConnectTimeout > 0 {
		s.ls.dl[sideServer] = s.lp.now + int64(gr.ConnectTimeout)
	}
	s.schedule()
}

// connected runs when the connecting socket turned writable: connected, or failed.
func (s *Session) connected() {
	g := s.greet
	if err := netx.RawSockError(s.ls.fd[sideServer]); err != nil {
		s.handOff(&ConnectError{Server: g.server, Err: os.NewSyscallError("connect", err)})
		return
	}
	opts, onEnd := g.g.Connected(s, s.ls.fd[sideServer])
	s.beginRelay(opts, onEnd, g.startup)
}

// beginRelay turns the greeted session into a relayed one: what New and Begin do for a
// session that joins a loop with its two sockets.
func (s *Session) beginRelay(opts Options, onEnd func(Result), startup []byte) {
	s.onEnd = onEnd
	s.useLoopWriters()
	s.mu.Lock()
	s.init(opts)
	s.greet = nil
	d := s.lp.at(opts.LoginDeadline)
	s.ls.dl = [2]int64{d, d}
	ending := s.mu.cause != CauseNone
	s.mu.Unlock()
	if ending {
		return // End came while connecting: afterEvent finishes it
	}
	if _, err := s.loopWrite(sideServer, startup); err != nil {
		s.writeFailed(sideServer, os.NewSyscallError("write", err))
		return
	}
	s.schedule()
	// Edges that came while greeting were not acted on: read both sides once.
	s.readSide(sideClient)
	s.readSide(sideServer)
}

// greetTimeout is a greeting deadline that passed.
func (s *Session) greetTimeout() {
	g := s.greet
	if g.connecting && s.ls.dl[sideServer] != 0 && s.ls.dl[sideServer] <= s.lp.now {
		s.handOff(&ConnectError{Server: g.server, Err: os.ErrDeadlineExceeded})
		return
	}
	if !g.connecting && s.ls.dl[sideClient] != 0 && s.ls.dl[sideClient] <= s.lp.now {
		s.handOff(os.ErrDeadlineExceeded)
		return
	}
	s.schedule()
}

// handOff takes the greeted session off its loop and gives the client's socket to the
// Greeter's goroutine; a connecting server socket is closed.
func (s *Session) handOff(why error) {
	ls := &s.ls
	g := s.greet
	ls.done = true
	if ls.heapIdx >= 0 {
		s.lp.timers.removeAt(ls.heapIdx)
	}
	if ls.registered {
		s.lp.remove(s)
	}
	if fd := ls.fd[sideServer]; fd >= 0 {
		_ = rawClose(fd)
		ls.fd[sideServer] = -1
	}
	fd := ls.fd[sideClient]
	ls.fd[sideClient] = -1
	go func() {
		c, err := netx.FDConn(fd) // may wait for the runtime: not on the loop
		if err != nil {
			c = nil
		}
		g.g.HandOff(c, why)
	}()
}

// afterGreetEvent hands off a greeted session that was stopped.
func (s *Session) afterGreetEvent() {
	if s.ls.done || s.greet == nil {
		return
	}
	s.mu.Lock()
	stopped := s.mu.cause != CauseNone
	s.mu.Unlock()
	if stopped {
		s.handOff(ErrGreetingStopped)
	}
}

func unsafeBuf(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
