package netx

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a connected loopback pair: the client dialed with net.Dial, the server side
// accepted from ln. Both are closed at the end of the test.
func pair(t *testing.T, ln net.Listener) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

type sockopts struct{ keepalive, idle, intvl, cnt, userTimeout int }

func readOpts(t *testing.T, c *net.TCPConn) sockopts {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o sockopts
	var errs []error
	get := func(fd, level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		errs = append(errs, err)
		return v
	}
	err = rc.Control(func(fd uintptr) {
		o.keepalive = get(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		o.idle = get(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		o.intvl = get(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		o.cnt = get(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		o.userTimeout = get(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	})
	if err = errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestKeepAlive(t *testing.T) {
	ln := listen(t)
	k := KeepAlive{Idle: 7 * time.Second, Interval: 2500 * time.Millisecond, Count: 4, UserTimeout: 1500*time.Millisecond + time.Microsecond}
	want := sockopts{keepalive: 1, idle: 7, intvl: 3, cnt: 4, userTimeout: 1501} // rounded up

	dialed, err := k.Dialer(5*time.Second).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	if got := readOpts(t, accepted.(*net.TCPConn)); got == want {
		t.Fatalf("accepted conn already has the options before Apply: %+v", got)
	}
	if err := k.Apply(accepted.(*net.TCPConn)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"dialed": dialed, "accepted": accepted} {
		if got := readOpts(t, c.(*net.TCPConn)); got != want {
			t.Errorf("%s: options %+v, want %+v", name, got, want)
		}
	}
	if d := k.Dialer(3 * time.Second); d.Timeout != 3*time.Second {
		t.Errorf("Dialer timeout = %v", d.Timeout)
	}
}

func TestKeepAliveDefaultsAndDisabled(t *testing.T) {
	ln := listen(t)
	// Zero Interval and Count take net.KeepAliveConfig's defaults; zero UserTimeout leaves
	// the kernel's (0, off).
	k := KeepAlive{Idle: 30 * time.Second}
	dialed, err := k.Dialer(0).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	if got, want := readOpts(t, dialed.(*net.TCPConn)), (sockopts{1, 30, 15, 9, 0}); got != want {
		t.Errorf("defaults: %+v, want %+v", got, want)
	}

	// Disabled: the dialed socket never gets keepalive, and Apply turns off the keepalive
	// the net package put on the accepted one.
	off := KeepAlive{}
	dialed2, err := off.Dialer(0).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed2.Close()
	for range 2 {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if readOpts(t, c.(*net.TCPConn)).keepalive != 1 {
			t.Fatal("accepted conn without the net package's default keepalive: test is moot")
		}
		if err := off.Apply(c.(*net.TCPConn)); err != nil {
			t.Fatal(err)
		}
		if got := readOpts(t, c.(*net.TCPConn)); got.keepalive != 0 {
			t.Errorf("accepted after Apply(disabled): SO_KEEPALIVE = %d, want 0", got.keepalive)
		}
	}
	if got := readOpts(t, dialed2.(*net.TCPConn)); got.keepalive != 0 || got.userTimeout != 0 {
		t.Errorf("dialed with keepalive disabled: %+v", got)
	}
}

func TestApplyClosedConn(t *testing.T) {
	client, _ := pair(t, listen(t))
	client.Close()
	err := KeepAlive{Idle: time.Second, UserTimeout: time.Second}.Apply(client)
	if err == nil || !IsClosed(err) {
		t.Errorf("Apply on a closed conn = %v, want a net.ErrClosed error", err)
	}
}

// classes returns which classifiers accept err, as a string like "reset,timeout".
func classes(err error) string {
	s := ""
	for _, c := range []struct {
		name string
		is   func(error) bool
	}{{"reset", IsReset}, {"timeout", IsTimeout}, {"unreachable", IsUnreachable}, {"closed", IsClosed}, {"eof", IsEOF}} {
		if c.is(err) {
			if s != "" {
				s += ","
			}
			s += c.name
		}
	}
	return s
}

func TestErrorClasses(t *testing.T) {
	ln := listen(t)
	buf := make([]byte, 8)

	t.Run("eof", func(t *testing.T) {
		client, server := pair(t, ln)
		server.Close()
		_, err := client.Read(buf)
		if got := classes(err); got != "eof" || err != io.EOF {
			t.Errorf("read after peer close: %v classified %q, want eof", err, got)
		}
	})
	t.Run("unexpected eof", func(t *testing.T) {
		client, server := pair(t, ln)
		if _, err := server.Write([]byte("ab")); err != nil {
			t.Fatal(err)
		}
		server.Close()
		_, err := io.ReadFull(client, buf[:4])
		if got := classes(err); got != "eof" || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("short read: %v classified %q, want eof", err, got)
		}
	})
	t.Run("reset", func(t *testing.T) {
		client, server := pair(t, ln)
		if err := server.SetLinger(0); err != nil { // close sends RST
			t.Fatal(err)
		}
		server.Close()
		_, err := client.Read(buf)
		if got := classes(err); got != "reset" || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after RST: %v classified %q, want reset (ECONNRESET)", err, got)
		}
		_, err = client.Write([]byte("x"))
		if got := classes(err); got != "reset" || !errors.Is(err, syscall.EPIPE) {
			t.Errorf("write after RST: %v classified %q, want reset (EPIPE)", err, got)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		client, _ := pair(t, ln)
		if err := client.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := client.Read(buf)
		if got := classes(err); got != "timeout" || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read past deadline: %v classified %q, want timeout", err, got)
		}
	})
	t.Run("closed", func(t *testing.T) {
		client, _ := pair(t, ln)
		client.Close()
		_, err := client.Read(buf)
		if got := classes(err); got != "closed" {
			t.Errorf("read on own closed conn: %v classified %q, want closed", err, got)
		}
		ln2 := listen(t)
		ln2.Close()
		_, err = ln2.Accept()
		if got := classes(err); got != "closed" {
			t.Errorf("accept on closed listener: %v classified %q, want closed", err, got)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		// The errors the kernel gives when it drops a connection whose peer stopped answering
		// (keepalive, TCP_USER_TIMEOUT), or when the network has no way to it. They are not
		// timeouts of pgfront's own, although ETIMEDOUT's Timeout() is true.
		for _, errno := range []syscall.Errno{syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
			err := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
			if got := classes(err); got != "unreachable" {
				t.Errorf("%v classified %q, want unreachable", errno, got)
			}
		}
		// The real thing on loopback: TestAborted.
	})
	t.Run("nil and others", func(t *testing.T) {
		for _, err := range []error{nil, errors.New("other"), syscall.ECONNREFUSED} {
			if got := classes(err); got != "" {
				t.Errorf("%v classified %q, want none", err, got)
			}
		}
	})
}

// zeroWindowTimeout makes the kernel drop a loopback connection as it drops one whose peer
// vanished: the receiving end never reads, so the sender's data waits behind a zero window,
// and the sender's TCP_USER_TIMEOUT (1s) gives up on it. (Since Linux 5.11 that bound counts
// from the first zero-window probe whether or not the probes are answered, which is what makes
// this reproducible without a real network to cut.) It returns the sender and the error its
// write met.
func zeroWindowTimeout(t *testing.T) (*net.TCPConn, error) {
	t.Helper()
	receiver, sender := pair(t, listen(t))
	if err := receiver.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := (KeepAlive{UserTimeout: time.Second}).ApplyUserTimeout(sender); err != nil {
		t.Fatal(err)
	}
	if err := sender.SetWriteDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := sender.Write(chunk); err != nil {
			return sender, err
		}
	}
}

// TestAborted: when the kernel drops a connection, the ETIMEDOUT goes to one call; the next read
// sees EOF, and Aborted tells it apart from a FIN.
func TestAborted(t *testing.T) {
	sender, err := zeroWindowTimeout(t)
	if got := classes(err); got != "unreachable" || !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("write to a peer given up by TCP_USER_TIMEOUT: %v classified %q, want unreachable (ETIMEDOUT)", err, got)
	}
	n, err := sender.Read(make([]byte, 8))
	if n != 0 || err != io.EOF {
		t.Fatalf("read after the write took the error: %d, %v; want EOF", n, err)
	}
	if !Aborted(sender) {
		t.Error("Aborted after the kernel dropped the connection = false")
	}

	ln := listen(t)
	t.Run("fin", func(t *testing.T) {
		client, server := pair(t, ln)
		server.Close()
		if _, err := client.Read(make([]byte, 8)); err != io.EOF {
			t.Fatalf("read after FIN: %v", err)
		}
		if Aborted(client) {
			t.Error("Aborted after a FIN = true")
		}
	})
	t.Run("reset", func(t *testing.T) {
		client, server := pair(t, ln)
		if err := server.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		server.Close()
		if _, err := client.Read(make([]byte, 8)); !IsReset(err) {
			t.Fatalf("first read after RST: %v", err)
		}
		if _, err := client.Read(make([]byte, 8)); err != io.EOF {
			t.Fatalf("second read after RST: %v", err)
		}
		if !Aborted(client) {
			t.Error("Aborted after a reset = false")
		}
	})
	t.Run("no socket", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if Aborted(a) {
			t.Error("Aborted on a pipe = true")
		}
	})
}

// TestListenConfig: connections accepted from a ListenConfig listener have k's keepalive at
// once; ApplyUserTimeout adds TCP_USER_TIMEOUT.
func TestListenConfig(t *testing.T) {
	k := KeepAlive{Idle: 7 * time.Second, Interval: 2500 * time.Millisecond, Count: 4, UserTimeout: 1500*time.Millisecond + time.Microsecond}
	lc := k.ListenConfig()
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	if got := readOpts(t, accepted.(*net.TCPConn)); got != (sockopts{keepalive: 1, idle: 7, intvl: 3, cnt: 4}) {
		t.Fatalf("accepted conn options %+v, want k's keepalive without a user timeout", got)
	}
	if err := k.ApplyUserTimeout(accepted.(*net.TCPConn)); err != nil {
		t.Fatal(err)
	}
	if got := readOpts(t, accepted.(*net.TCPConn)); got.userTimeout != 1501 {
		t.Fatalf("user timeout %d, want 1501", got.userTimeout)
	}
	off := KeepAlive{}.ListenConfig()
	if off.KeepAlive >= 0 || off.KeepAliveConfig.Enable {
		t.Fatalf("disabled keepalive still enabled on the listener: %+v", off)
	}
}
