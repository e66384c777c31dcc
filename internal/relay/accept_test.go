package relay

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/netx"
)

// recordingAcceptor keeps what a loop gave it; it closes the sockets.
type recordingAcceptor struct {
	mu       sync.Mutex
	peers    []netip.AddrPort
	origins  []*loop
	failures []error
	accepted chan struct{}
	failed   chan struct{}
}

func newRecordingAcceptor() *recordingAcceptor {
	return &recordingAcceptor{accepted: make(chan struct{}, 64), failed: make(chan struct{}, 64)}
}

func (a *recordingAcceptor) Accepted(fd int, peer netip.AddrPort, on Origin) {
	_ = unix.Close(fd)
	a.mu.Lock()
	a.peers = append(a.peers, peer)
	a.origins = append(a.origins, on.l)
	a.mu.Unlock()
	a.accepted <- struct{}{}
}

func (a *recordingAcceptor) AcceptFailed(err error) {
	a.mu.Lock()
	a.failures = append(a.failures, err)
	a.mu.Unlock()
	a.failed <- struct{}{}
}

// dupListenerFD is a duplicate of a TCP listener's socket, as the frontend gives Listen.
func dupListenerFD(t *testing.T, ln *net.TCPListener) int {
	t.Helper()
	fd, err := netx.DupFD(ln)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// loopsAndListener starts n loops and a loopback TCP listener, both closed when the test ends.
func loopsAndListener(t *testing.T, n int) (*Loops, *net.TCPListener) {
	t.Helper()
	p, err := newLoops(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, listenLoopback(t)
}

// listenLoopback is a TCP listener on 127.0.0.1, closed when the test ends.
func listenLoopback(t *testing.T) *net.TCPListener {
	t.Helper()
	tl, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	return tl
}

// dialClients connects n clients to tl, closed when the test ends; each is waited for on
// accepted (nil: not waited for).
func dialClients(t *testing.T, tl *net.TCPListener, n int, accepted <-chan struct{}) []net.Conn {
	t.Helper()
	var clients []net.Conn
	for range n {
		c, err := net.Dial("tcp4", tl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
		if accepted != nil {
			waitFor(t, accepted, "an accept")
		}
	}
	return clients
}

// TestListenAcceptsOnLoop: a loop watching a listener accepts each connection and hands it
// to the Acceptor on that loop, with the client's address; once stopped it accepts none and
// has closed its duplicate of the socket.
func TestListenAcceptsOnLoop(t *testing.T) {
	p, tl := loopsAndListener(t, 2)
	a := newRecordingAcceptor()
	fd := dupListenerFD(t, tl)
	ln, err := p.Listen(fd, a)
	if err != nil {
		t.Fatal(err)
	}
	clients := dialClients(t, tl, 3, a.accepted)
	a.mu.Lock()
	for i, c := range clients {
		if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); a.peers[i] != want {
			t.Errorf("accept %d: peer %v, want %v", i, a.peers[i], want)
		}
		if a.origins[i] != ln.lp {
			t.Errorf("accept %d: origin %p, want the watching loop %p", i, a.origins[i], ln.lp)
		}
	}
	a.mu.Unlock()

	ln.Stop()
	ln.Stop() // again: nothing
	waitFor(t, ln.Done(), "the listener to stop")
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("the loop's duplicate is still open (%v)", err)
	}
	// The connection is queued on the listener (still open here), not taken by the loop.
	dialClients(t, tl, 1, nil)
	tl.SetDeadline(time.Now().Add(10 * time.Second))
	sc, err := tl.Accept()
	if err != nil {
		t.Fatalf("the stopped loop took the connection: %v", err)
	}
	sc.Close()
	select {
	case <-a.accepted:
		t.Fatal("Accepted after Stop")
	default:
	}
}

// TestListenAcceptsBurst: connections waiting beyond one batch of accepts are all taken, with
// no other event to wake the loop.
func TestListenAcceptsBurst(t *testing.T) {
	p, tl := loopsAndListener(t, 1)
	const n = 3*acceptBatch + 1
	dialClients(t, tl, n, nil)
	a := newRecordingAcceptor()
	a.accepted = make(chan struct{}, n)
	ln, err := p.Listen(dupListenerFD(t, tl), a)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ln.Stop(); <-ln.Done() }()
	for i := range n {
		waitFor(t, a.accepted, fmt.Sprintf("accept %d of %d", i+1, n))
	}
}

// TestListenAcceptFailurePauses: an accept that fails (here a listening socket shut down:
// EINVAL) is reported once and the loop stops watching the socket instead of spinning on it;
// Resume watches it again.
func TestListenAcceptFailurePauses(t *testing.T) {
	p, tl := loopsAndListener(t, 1)
	a := newRecordingAcceptor()
	fd := dupListenerFD(t, tl)
	if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen(fd, a)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, a.failed, "the accept failure")
	ln.Resume()
	waitFor(t, a.failed, "the failure after Resume")
	// Passes of the loop for another listener's connection do not try the paused one again.
	tl2 := listenLoopback(t)
	ln2, err := p.Listen(dupListenerFD(t, tl2), a)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ln2.Stop(); <-ln2.Done() }()
	dialClients(t, tl2, 3, a.accepted)
	// Stop goes through the loop: every pass it made meanwhile is behind it.
	ln.Stop()
	waitFor(t, ln.Done(), "the listener to stop")
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.failures) != 2 {
		t.Fatalf("%d failures reported, want 2 (one per watch): %v", len(a.failures), a.failures[:min(len(a.failures), 3)])
	}
	for i, err := range a.failures {
		if err != unix.EINVAL { // EEXIST: Resume found the socket still watched
			t.Errorf("failure %d: %v, want EINVAL", i, err)
		}
	}
}

// TestLoopsCloseStopsListeners: closing the loops stops their listeners, watched or paused
// (Done, socket closed); a Listen after it is refused and leaves the socket to the caller.
func TestLoopsCloseStopsListeners(t *testing.T) {
	p, tl := loopsAndListener(t, 2) // closed again below
	a := newRecordingAcceptor()
	fd := dupListenerFD(t, tl)
	ln, err := p.Listen(fd, a)
	if err != nil {
		t.Fatal(err)
	}
	// Another, paused after a failed accept (not watched, but the loop's to stop).
	pfd := dupListenerFD(t, listenLoopback(t))
	if err := unix.Shutdown(pfd, unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	paused, err := p.Listen(pfd, a)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, a.failed, "the accept failure")
	p.Close()
	waitFor(t, ln.Done(), "the listener to stop")
	waitFor(t, paused.Done(), "the paused listener to stop")
	for _, fd := range []int{fd, pfd} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("a listener's socket is still open (%v)", err)
		}
	}
	ln.Stop() // after the loop finished: nothing
	ln.Resume()

	fd2 := dupListenerFD(t, tl)
	defer unix.Close(fd2)
	if _, err := p.Listen(fd2, a); err == nil {
		t.Fatal("Listen on closed loops succeeded")
	}
	if _, err := unix.FcntlInt(uintptr(fd2), unix.F_GETFD, 0); err != nil {
		t.Errorf("a refused Listen closed the caller's socket: %v", err)
	}
}

// TestGreetFromStaysNear: a session accepted on a loop starts there unless that loop holds
// clearly more sessions than another.
func TestGreetFromStaysNear(t *testing.T) {
	a, b := &loop{}, &loop{}
	ls := &Loops{loops: []*loop{a, b}}
	for _, tc := range []struct {
		na, nb int64
		want   *loop
	}{
		{0, 0, a},
		{8, 0, a},
		{9, 0, b},
		{1000, 900, a},
		{1000, 880, b},
		{0, 500, a},
	} {
		a.sessions.Store(tc.na)
		b.sessions.Store(tc.nb)
		if got := ls.near(a); got != tc.want {
			t.Errorf("sessions %d/%d: chose the other loop", tc.na, tc.nb)
		}
	}
}
