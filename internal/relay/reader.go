package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/pgfront/pgfront/internal/netx"
)

// bufSize is the relay's read size, HAProxy's default bufsize.
const bufSize = 16 << 10

// bufPool holds relay buffers. A session takes one only while bytes are in flight, so an idle
// session holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// chunkReader reads the next chunk of a connection into a pooled buffer. The buffer (nil when
// n == 0 and nothing was taken) belongs to the caller, who returns it with putBuf.
type chunkReader interface {
	read() (buf *[]byte, n int, err error)
}

func newChunkReader(c net.Conn) chunkReader {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return &rawReader{rc: rc}
		}
	}
	return &connReader{c: c}
}

// rawReader waits for readability through the runtime's poller without holding a buffer, then
// reads straight from the socket. Deadlines set on the conn apply to the wait.
type rawReader struct {
	rc syscall.RawConn
	// Results of the callback, kept here so the closure below is allocated once.
	buf   *[]byte
	n     int
	opErr error
	fn    func(fd uintptr) bool
}

func (r *rawReader) read() (*[]byte, int, error) {
	if r.fn == nil {
		r.fn = r.tryRead
	}
	r.buf, r.n, r.opErr = nil, 0, nil
	err := r.rc.Read(r.fn)
	buf, n := r.buf, r.n
	r.buf = nil
	if err == nil {
		err = r.opErr
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	return buf, n, err
}

// tryRead is the RawConn.Read callback: false means "not readable yet, wait".
func (r *rawReader) tryRead(fd uintptr) bool {
	b := getBuf()
	for {
		n, err := netx.RawRead(int(fd), *b)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			putBuf(b)
			return false
		case err != nil:
			putBuf(b)
			r.opErr = err
			return true
		case n == 0:
			putBuf(b)
			return true
		}
		r.buf, r.n = b, n
		return true
	}
}

// smallBufSize is what a connReader waits with after a short read: an idle TLS session then
// holds a small buffer, not a full one (the next read, with data already decrypted, is cheap).
const smallBufSize = 512

var smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}

// connReader is the fallback for conns without a file descriptor (TLS, tests): it must hold a
// buffer while it waits, so after a short read (the session is idle or chatty) it waits with a
// small one, and after a full one with a full one.
type connReader struct {
	c    net.Conn
	full bool // the last read filled a small buffer: more is probably coming
}

func (r *connReader) read() (*[]byte, int, error) {
	if !r.full {
		sb := smallBufPool.Get().(*[]byte)
		n, err := r.c.Read(*sb)
		r.full = n == smallBufSize
		if n == 0 {
			smallBufPool.Put(sb)
			return nil, 0, err
		}
		// Callers return buffers with putBuf: hand over the bytes in a pooled full buffer.
		b := getBuf()
		copy(*b, (*sb)[:n])
		smallBufPool.Put(sb)
		return b, n, err
	}
	b := getBuf()
	n, err := r.c.Read(*b)
	r.full = n > smallBufSize
	if n == 0 {
		putBuf(b)
		return nil, 0, err
	}
	return b, n, err
}

// newWriter returns how the relay writes to c: by raw system calls for sockets (netx.RawIO),
// c.Write otherwise (TLS, whose own writes go to a RawIO connection).
func newWriter(c net.Conn) func([]byte) (int, error) {
	if w := netx.NewRawWriter(c); w != nil {
		return w.Write
	}
	return c.Write
}
