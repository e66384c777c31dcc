package netx

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// RawIO returns c with Read and Write done by raw system calls through its RawConn (waiting in
// the runtime's poller when the socket has nothing to read or no room to write; deadlines
// apply as on c). Every other method is c's.
//
// Why: the sockets are non-blocking, so a read or write never blocks, but the syscall package
// tells the scheduler it enters a blocking system call each time; on a proxy that is idle
// between two messages that wakes the runtime's monitor thread on every call, which cost more
// than the read or write itself (a third of pgfront's CPU per transaction in the benchmark).
// Use it for connections that something else reads and writes through net.Conn (crypto/tls);
// the relay uses RawRead and RawWrite directly.
func RawIO(c *net.TCPConn) net.Conn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	return &rawIOConn{TCPConn: c, rc: rc}
}

type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = RawRead(int(fd), p)
			switch rerr {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawIOConn) Write(p []byte) (int, error) {
	done := 0
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, err := RawWrite(int(fd), p[done:])
			switch err {
			case nil:
				done += n
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			werr = err
			return true
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return done, err
}

// RawRead reads from a non-blocking socket without entering the scheduler's system-call state
// (see RawIO). It returns syscall.EAGAIN when nothing is there.
func RawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// RawWrite writes to a non-blocking socket like RawRead reads.
func RawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
