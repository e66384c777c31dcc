package netx

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// The error classes below map the errors of reads, writes and dials to termination causes.
// They use errors.Is/As only, so they see through net.OpError, os.SyscallError and %w
// wrapping. nil is in no class.

// IsReset reports whether the peer reset the connection (ECONNRESET), or a write found it
// already gone (EPIPE).
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// IsTimeout reports whether err is a timeout: an expired deadline (os.ErrDeadlineExceeded),
// or any net.Error whose Timeout() is true. The latter includes ETIMEDOUT, so a peer given up
// by keepalive or TCP_USER_TIMEOUT is a timeout too: check IsDeadPeer first to tell them
// apart.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsDeadPeer reports whether the kernel gave up on the peer (ETIMEDOUT): keepalive probes or
// data went unanswered for the configured bound.
func IsDeadPeer(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT)
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
