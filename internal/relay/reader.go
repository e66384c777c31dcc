package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
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
	return connReader{c}
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
		n, err := syscall.Read(int(fd), *b)
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

// connReader is the fallback for conns without a file descriptor (TLS, tests): it holds a
// buffer while it waits.
type connReader struct{ c net.Conn }

func (r connReader) read() (*[]byte, int, error) {
	b := getBuf()
	n, err := r.c.Read(*b)
	if n == 0 {
		putBuf(b)
		return nil, 0, err
	}
	return b, n, err
}
