package netnstest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// listenHost listens on the test's side of n's link.
func listenHost(t *testing.T, n *Net) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(n.Host, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// A client inside reaches the test's side; after Cut it vanishes: the test's side hears
// nothing (no FIN, no RST), and only its keepalive gives up on it.
func TestDialAndCut(t *testing.T) {
	n := New(t)
	ln := listenHost(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inside, err := n.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer reset(inside)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != n.Peer {
		t.Fatalf("accepted from %v, want the namespace's address %v", got, n.Peer)
	}
	if _, err := inside.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}

	tc := c.(*net.TCPConn)
	if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 2}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.Cut()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Read(buf)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read after the cut: %v, want ETIMEDOUT from keepalive", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("keepalive 1s+2x1s gave up after %s", d)
	}
}

// The forwarder's server lives behind the link: reachable until the cut, silent after it.
func TestForward(t *testing.T) {
	n := New(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	fwd := n.Forward(t, target.Addr().String())
	if ap := netip.MustParseAddrPort(fwd.Addr()); ap.Addr() != n.Peer {
		t.Fatalf("forwarder on %v, want the namespace's address %v", ap, n.Peer)
	}
	c, err := net.DialTimeout("tcp", fwd.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := target.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("target read %q, %v", buf, err)
	}
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}

	n.Cut()
	if err := unixUserTimeout(c.(*net.TCPConn), time.Second); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("write into the cut link failed at once: %v", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read after the cut: %v, want ETIMEDOUT (user timeout on the unacknowledged write)", err)
	}
}

func unixUserTimeout(c *net.TCPConn, d time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	})
	return errors.Join(err, serr)
}

// Nothing is left once the test is over: no namespace, no link.
func TestCleanup(t *testing.T) {
	var n *Net
	t.Run("uses a namespace", func(t *testing.T) {
		n = New(t)
	})
	if n == nil {
		t.Skip("no namespace was made")
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), n.Name) {
		t.Errorf("namespace %s left behind: %s", n.Name, out)
	}
	if _, err := net.InterfaceByName(n.HostIf); err == nil {
		t.Errorf("link %s left behind", n.HostIf)
	}
}

// The thread that opened a socket inside goes back to the test's namespace (and is not thrown
// away, which would fire the parent-death signal of every process it had started).
func TestInsideReturnsHome(t *testing.T) {
	n := New(t)
	ln := listenHost(t, n)
	runtime.LockOSThread() // keep this goroutine on the thread inside uses
	defer runtime.UnlockOSThread()
	home := nsLink(t, "/proc/self/ns/net")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	reset(c)
	if got := nsLink(t, "/proc/thread-self/ns/net"); got != home {
		t.Fatalf("thread left in namespace %s, want the test's %s", got, home)
	}
}

func nsLink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
