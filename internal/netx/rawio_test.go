package netx

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawPair is a loopback TCP pair with the first end wrapped by RawIO.
func rawPair(t *testing.T) (wrapped net.Conn, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return RawIO(d.(*net.TCPConn)), a.(*net.TCPConn)
}

func TestRawIOReadWriteEOF(t *testing.T) {
	c, peer := rawPair(t)
	// A write larger than the socket buffers waits for room in the poller and completes.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	errc := make(chan error, 1)
	go func() {
		n, err := c.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		errc <- err
	}()
	got, err := io.ReadAll(io.LimitReader(peer, int64(len(big))))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("peer read %d bytes, %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	// A read waits for data; the peer's FIN is io.EOF.
	go func() { peer.Write([]byte("hello")); peer.CloseWrite() }()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d %v", n, err)
	}
}

func TestRawIODeadlinesAndClose(t *testing.T) {
	c, _ := rawPair(t)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !IsTimeout(err) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadline honoured after %s", d)
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !IsClosed(err) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !IsClosed(err) {
		t.Fatalf("write after Close: %v", err)
	}
}

func TestRawIOReset(t *testing.T) {
	c, peer := rawPair(t)
	_ = peer.SetLinger(0)
	peer.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !IsReset(err) {
		t.Fatalf("read after the peer's reset: %v", err)
	}
}
