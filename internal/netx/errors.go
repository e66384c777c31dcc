package netx

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The error classes below map the errors of reads, writes and dials to termination causes.
// They use errors.Is/As only, so they see through net.OpError, os.SyscallError and %w
// wrapping. The classes are disjoint, and nil is in none.

// IsReset reports whether the peer reset the connection (ECONNRESET), or a write found it
// already gone (EPIPE).
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// IsTimeout reports whether err is a timeout of pgfront's own: an expired deadline
// (os.ErrDeadlineExceeded), or any other net.Error whose Timeout() is true. A peer the kernel
// gave up on (ETIMEDOUT, whose Timeout() is true too) is not one: see IsUnreachable.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && !IsUnreachable(err)
}

// IsUnreachable reports whether the peer stopped answering: the kernel gave up on it because
// keepalive probes went unanswered or sent data stayed unacknowledged for TCP_USER_TIMEOUT
// (ETIMEDOUT), or the network reported it out of reach (EHOSTUNREACH, ENETUNREACH). Such a
// peer vanished without FIN or RST: its machine, pod or network is gone.
func IsUnreachable(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// IsClosed reports whether the operation used a connection or listener this process had
// already closed (net.ErrClosed): our own shutdown, not the peer's doing.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// IsEOF reports whether the peer closed its sending side (io.EOF), possibly in the middle of
// a message (io.ErrUnexpectedEOF).
func IsEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Aborted reports whether c's connection was aborted by the kernel (a reset from the peer, or
// keepalive or TCP_USER_TIMEOUT giving up on it) rather than closed by the peer's FIN. Use it
// when a read returned EOF: the error of an abort goes to one system call only, and another
// goroutine's call on the same socket (a write, while this one reads) may have taken it, so the
// read sees a bare EOF as if the peer had sent a FIN. After a FIN the socket is CLOSE_WAIT;
// after an abort it is CLOSED. Only meaningful while this side has not shut down its sending
// (after a shutdown, the peer's FIN leaves the socket CLOSED too); false for a conn without a
// socket.
func Aborted(c net.Conn) bool {
	if u, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var state int
	var gerr error
	err = rc.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); gerr == nil {
			state = int(info.State)
		}
	})
	return err == nil && gerr == nil && TCPState(state) == TCPClose
}
