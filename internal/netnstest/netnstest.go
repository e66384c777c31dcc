// Package netnstest gives tests a network they can cut: a network namespace of the test's own,
// joined to the test's namespace by a veth pair with link-local addresses (169.254.0.0/16).
// Sockets inside the namespace are opened by the test process itself, on a thread that enters
// the namespace for that moment, so no helper process runs. Cut takes the namespace's end of
// the link down: from then on nothing from inside reaches the test's side and nothing reaches
// in — no FIN, no RST, no ICMP — as when a Kubernetes pod's network is torn down under it.
//
//	n := netnstest.New(t)                 // skips when `ip netns` is unavailable or not permitted
//	c, err := n.Dial(ctx, "169.254.9.1:6432")   // a client inside, reaching a listener on n.Host
//	fwd := n.Forward(t, "127.0.0.1:5432") // a TCP forwarder inside, to a server outside
//	n.Cut()                               // the peers inside vanish
//
// Everything is removed in t.Cleanup: the veth pair, the namespace, the forwarder and its
// connections. Requires Linux, iproute2 and CAP_NET_ADMIN (root).
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Net is a network namespace linked to the test's own by a veth pair.
type Net struct {
	t *testing.T
	// Name is the namespace's name (ip netns list).
	Name string
	// HostIf and PeerIf are the veth ends: HostIf in the test's namespace, PeerIf inside Name.
	HostIf, PeerIf string
	// Host is HostIf's address, Peer is PeerIf's: listen on Host to be reached from inside,
	// on Peer (from inside) to be reached from the test's side.
	Host, Peer netip.Addr
}

// New creates the namespace and its link, with a /30 of 169.254.0.0/16 no local interface uses,
// and removes them at the end of the test. It skips the test, saying why, when the ip command
// (iproute2) is missing or creating a namespace is not permitted.
func New(t *testing.T) *Net {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netnstest needs iproute2's ip command (ip netns, ip link), not found: ", err)
	}
	id := randomHex(t, 4)
	n := &Net{t: t, Name: "pgfront-test-" + id, HostIf: "pgfh" + id, PeerIf: "pgfp" + id}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Skipf("netnstest needs `ip netns add` (iproute2, root or CAP_SYS_ADMIN and CAP_NET_ADMIN), which failed: %v: %s",
			err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { n.run("ip", "netns", "del", n.Name) })
	n.Host, n.Peer = n.freeSubnet()
	n.must("ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", n.PeerIf, "netns", n.Name)
	// Deleting one end deletes both; the namespace's end would go with the namespace, but its
	// sockets could keep the namespace alive for a while.
	t.Cleanup(func() { n.run("ip", "link", "del", n.HostIf) })
	n.must("ip", "addr", "add", n.Host.String()+"/30", "dev", n.HostIf)
	n.must("ip", "link", "set", n.HostIf, "up")
	n.must("ip", "-n", n.Name, "addr", "add", n.Peer.String()+"/30", "dev", n.PeerIf)
	n.must("ip", "-n", n.Name, "link", "set", n.PeerIf, "up")
	n.must("ip", "-n", n.Name, "link", "set", "lo", "up")
	return n
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freeSubnet picks a random /30 of 169.254.0.0/16 that no local address is in (other tests,
// and other processes, may have links of their own), and returns its two host addresses.
func (n *Net) freeSubnet() (host, peer netip.Addr) {
	used := func(p netip.Prefix) bool {
		ifaces, err := net.Interfaces()
		if err != nil {
			n.t.Fatal(err)
		}
		for _, ifc := range ifaces {
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(ipn.IP); ok && p.Contains(ip.Unmap()) {
						return true
					}
				}
			}
		}
		return false
	}
	for range 100 {
		var r [2]byte
		if _, err := rand.Read(r[:]); err != nil {
			n.t.Fatal(err)
		}
		// Avoid 169.254.0.0/24 and 169.254.255.0/24, reserved by RFC 3927.
		third := 1 + int(r[0])%254
		fourth := int(r[1]) &^ 3
		base := netip.AddrFrom4([4]byte{169, 254, byte(third), byte(fourth)})
		if p := netip.PrefixFrom(base, 30); !used(p) {
			return base.Next(), base.Next().Next()
		}
	}
	n.t.Fatal("no free /30 in 169.254.0.0/16")
	return
}

func (n *Net) must(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// run is must for cleanups: a failure is reported, not fatal.
func (n *Net) run(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Errorf("cleanup: %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// Cut takes the namespace's end of the link down: every peer inside vanishes at once, without a
// FIN or a RST, and the test's side keeps its link (its packets go nowhere).
func (n *Net) Cut() {
	n.t.Helper()
	n.must("ip", "-n", n.Name, "link", "set", n.PeerIf, "down")
}

// inside runs f with the calling goroutine's thread in the namespace: sockets f opens belong to
// the namespace for their whole life. The thread is locked for the moment and returns to the
// test's namespace afterwards. It must not be discarded instead (by letting a locked goroutine
// exit): the kernel sends a child's parent-death signal when the thread that forked it exits,
// and pgtest's PostgreSQL servers shut down on that signal.
func (n *Net) inside(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the test's network namespace: %w", err)
	}
	defer unix.Close(home)
	fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", n.Name, err)
	}
	err = unix.Setns(fd, unix.CLONE_NEWNET)
	_ = unix.Close(fd)
	if err != nil {
		return fmt.Errorf("entering namespace %s: %w", n.Name, err)
	}
	defer func() {
		// A thread that cannot go home must not run anything else: stop here, loudly.
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("netnstest: returning to the test's network namespace: %v", err))
		}
	}()
	return f()
}

// Dial opens a TCP connection from inside the namespace to addr (the test's side is reached at
// n.Host). The caller owns the connection; closing it with SetLinger(0) leaves nothing behind
// in a namespace whose link is cut.
func (n *Net) Dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := n.inside(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Listen opens a TCP listener inside the namespace, on addr (n.Peer and a port, or port 0).
// Connections it accepts belong to the namespace too.
func (n *Net) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.inside(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Forwarder relays TCP connections accepted inside the namespace to a target outside it: a
// server that lives behind the link, and vanishes with it.
type Forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     struct {
		sync.Mutex
		conns  map[*net.TCPConn]bool
		closed bool
	}
}

// Forward starts a forwarder on n.Peer (a free port) to target and returns it; its address is
// what the test's side dials. It stops at the end of the test, resetting every connection.
func (n *Net) Forward(t *testing.T, target string) *Forwarder {
	t.Helper()
	ln, err := n.Listen(netip.AddrPortFrom(n.Peer, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{ln: ln, target: target}
	f.mu.conns = make(map[*net.TCPConn]bool)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

// Addr is where the forwarder listens, inside the namespace.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// accept runs until the listener is closed.
func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.relay(c.(*net.TCPConn))
	}
}

// track registers c so close can reset it; false when the forwarder is closing.
func (f *Forwarder) track(c *net.TCPConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.closed {
		return false
	}
	f.mu.conns[c] = true
	return true
}

// relay copies one accepted connection to a new one to the target, both ways, until either
// ends (or close resets both).
func (f *Forwarder) relay(in *net.TCPConn) {
	defer f.wg.Done()
	if !f.track(in) {
		reset(in)
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", f.target)
	if err != nil {
		reset(in)
		return
	}
	out := c.(*net.TCPConn)
	if !f.track(out) {
		reset(in)
		reset(out)
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src *net.TCPConn) {
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// close stops accepting, resets every connection and waits for the goroutines.
func (f *Forwarder) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	f.mu.closed = true
	for c := range f.mu.conns {
		reset(c)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// reset closes c with a RST, so no socket lingers in FIN_WAIT or retransmits behind a cut link.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
