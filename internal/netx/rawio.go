package netx

import (
	"io"
	"net"
	"sync"
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
	rw := &rawIOConn{TCPConn: c, rc: rc, w: newRawWriter(rc)}
	rw.readFn = rw.tryRead
	return rw
}

type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn
	// rmu guards one Read's state; the callback is allocated once, so a read allocates
	// nothing.
	rmu    sync.Mutex
	rp     []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool
	// wmu makes Write safe for concurrent use, as net.Conn promises (crypto/tls serialises
	// its writes already, so it is never contended).
	wmu sync.Mutex
	w   *RawWriter
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rp = nil
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

// tryRead is the RawConn.Read callback: false means "nothing to read yet, wait".
func (c *rawIOConn) tryRead(fd uintptr) bool {
	for {
		c.rn, c.rerr = RawRead(int(fd), c.rp)
		switch c.rerr {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true
	}
}

func (c *rawIOConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.Write(p)
}

// RawWriter writes to a socket with RawWrite through its RawConn, waiting in the runtime's
// poller when the socket is full; deadlines set on the conn apply. Its callback is allocated
// once, so a write allocates nothing. One goroutine at a time may use it.
type RawWriter struct {
	rc  syscall.RawConn
	p   []byte
	err error
	fn  func(fd uintptr) bool
}

// NewRawWriter returns a RawWriter for c, or nil when c has no file descriptor (TLS, pipes).
func NewRawWriter(c net.Conn) *RawWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return newRawWriter(rc)
}

func newRawWriter(rc syscall.RawConn) *RawWriter {
	w := &RawWriter{rc: rc}
	w.fn = w.tryWrite
	return w
}

// Write writes all of p unless an error (a deadline, a reset) stops it first.
func (w *RawWriter) Write(p []byte) (int, error) {
	w.p, w.err = p, nil
	err := w.rc.Write(w.fn)
	n := len(p) - len(w.p)
	w.p = nil
	if err == nil {
		err = w.err
	}
	return n, err
}

func (w *RawWriter) tryWrite(fd uintptr) bool {
	for len(w.p) > 0 {
		n, err := RawWrite(int(fd), w.p)
		switch err {
		case nil:
			w.p = w.p[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.err = err
			return true
		}
	}
	return true
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
