// Package sockmon samples the kernel's TCP states of pgfront's own sockets and attributes each
// to the route (client side) or route + server (server side) it belongs to; other processes'
// sockets on the same host are never counted.
//
// The kernel lists every socket of the network namespace, without saying which process
// holds it (and sockets pgfront has closed, in TIME_WAIT or FIN_WAIT2, are held by none). So
// a socket is pgfront's by its addresses: its local address is a route's listen address
// (client side), or its 4-tuple is one of the server connections pgfront dialled and
// registered (server side).
//
//	m := sockmon.New(sockmon.Options{})
//	m.AddListener("main", netip.MustParseAddrPort("0.0.0.0:5432"))
//	// on each server connection pgfront dials:
//	m.TrackServerConn(local, remote, "main", "pg", "pg-1")
//	// on each scrape or tick:
//	s, err := m.Sample()
//	closeWait := s.Counts[sockmon.Key{Route: "main", Side: sockmon.SideServer,
//		Cluster: "pg", Server: "pg-1", State: netx.TCPCloseWait}]
package sockmon

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
)

// Side is which of a session's two connections a socket belongs to.
type Side uint8

// The sides of a session.
const (
	SideClient Side = iota + 1 // accepted from a client on a route's listener
	SideServer                 // dialled by pgfront to a server
)

// String returns "client" or "server".
func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	}
	return "Side(" + strconv.Itoa(int(s)) + ")"
}

// Key is one counter of a sample.
type Key struct {
	Route   string
	Side    Side
	Cluster string // server side only
	Server  string // server side only
	State   netx.TCPState
}

// Sample is the count of pgfront's sockets by Key at one moment.
type Sample struct {
	At      time.Time
	Took    time.Duration // cost of reading and attributing
	Source  string        // "sock_diag" or "proc"
	Scanned int           // sockets in the namespace
	Counts  map[Key]int   // only pgfront's sockets; LISTEN sockets not counted
}

// Options configures a Monitor.
type Options struct {
	// Read dumps the namespace's TCP sockets; nil means netx.ReadTCPSockets. (A seam for tests.)
	Read func(dst []netx.Socket) ([]netx.Socket, string, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// numStates is the stride of the count table: the kernel's states are numbered below it.
const numStates = 16

// chunk is how many sockets are attributed per hold of the registration lock, so that
// TrackServerConn, on the connect path, never waits for a whole table.
const chunk = 4096

// label is what a socket is attributed to: a route's client side, or one server of a
// route. Labels are interned: each is stored once and referred to by its index.
type label struct {
	route, cluster, server string
	side                   Side
}

// listener is a route's bound listen address.
type listener struct {
	addr  netip.Addr // unmapped, no zone
	port  uint16
	label uint32
}

// matches reports whether a socket with local address ip (unmapped) on l's port is l's. An
// unspecified listen address matches every local address of its family; [::] matches IPv4
// too, as Go binds it dual-stack for network "tcp".
func (l listener) matches(ip netip.Addr) bool {
	if l.addr == ip {
		return true
	}
	return l.addr.IsUnspecified() && (l.addr.Is6() || ip.Is4())
}

// connKey is a server connection's identity in the kernel's table. Addresses are in their
// 16-byte form, so a conn's IPv4 address and the kernel's IPv4-mapped one (dual-stack
// socket) are the same key; it holds no pointers, so the GC never scans the map's keys.
type connKey struct {
	local, remote [16]byte
	lport, rport  uint16
}

func makeConnKey(local, remote netip.AddrPort) connKey {
	return connKey{local.Addr().As16(), remote.Addr().As16(), local.Port(), remote.Port()}
}

// conn is a tracked server connection. Epochs number the samples (see Monitor.mu.epoch).
type conn struct {
	label   uint32
	tracked uint32 // epoch of the first sample that began after it was tracked
	seen    uint32 // epoch of the last sample that listed it
	// inode is the first nonzero inode a sample saw for the 4-tuple. Another inode on the
	// same 4-tuple is another socket (the tuple was reused after pgfront's was gone).
	inode uint32
}

// Monitor attributes the kernel's TCP sockets to pgfront's routes and servers. It is safe
// for concurrent use; Samples run one at a time.
type Monitor struct {
	read func(dst []netx.Socket) ([]netx.Socket, string, error)
	now  func() time.Time

	// sampling serialises Sample and guards its scratch space, reused between samples.
	sampling struct {
		sync.Mutex
		socks  []netx.Socket
		counts []int // by label*numStates + state
	}

	// mu guards the registrations. Sample holds it only while attributing a chunk of
	// sockets, never while reading the kernel's table.
	mu struct {
		sync.Mutex
		labels     []label
		labelIndex map[label]uint32
		listeners  []listener
		// listenPorts has a bit per port some listener is on: most sockets are ruled
		// out of the client side by one bit test.
		listenPorts [65536 / 64]uint64
		conns       map[connKey]conn
		// epoch is the number of the next sample; it starts at 1, so seen == 0 is never.
		// (uint32: at one sample a second it wraps after 136 years.)
		epoch uint32
	}
}

// New returns a Monitor with no listeners and no tracked connections.
func New(opts Options) *Monitor {
	m := &Monitor{read: opts.Read, now: opts.Now}
	if m.read == nil {
		m.read = netx.ReadTCPSockets
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.mu.labelIndex = make(map[label]uint32)
	m.mu.conns = make(map[connKey]conn)
	m.mu.epoch = 1
	return m
}

// internLocked returns l's index, adding it if new. Labels are never removed: there are
// as many as routes and servers the configurations have named.
func (m *Monitor) internLocked(l label) uint32 {
	if i, ok := m.mu.labelIndex[l]; ok {
		return i
	}
	i := uint32(len(m.mu.labels))
	m.mu.labels = append(m.mu.labels, l)
	m.mu.labelIndex[l] = i
	return i
}

// AddListener registers a route's bound listen address: every socket whose local address is
// that address (an unspecified listen IP matches any local IP with that port, v4-mapped or
// not) is that route's client side — including sockets pgfront has already closed
// (TIME_WAIT, FIN_WAIT2 orphans), since the listening port is pgfront's.
//
// 0.0.0.0 matches IPv4 addresses only; [::] matches both families (a dual-stack listener).
// An address registered again, for any route, keeps its first route. Invalid addresses
// are ignored.
func (m *Monitor) AddListener(route string, addr netip.AddrPort) {
	if !addr.IsValid() {
		return
	}
	l := listener{addr: addr.Addr().Unmap().WithZone(""), port: addr.Port()}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, old := range m.mu.listeners {
		if old.addr == l.addr && old.port == l.port {
			return
		}
	}
	l.label = m.internLocked(label{route: route, side: SideClient})
	m.mu.listeners = append(m.mu.listeners, l)
	m.mu.listenPorts[l.port/64] |= 1 << (l.port % 64)
}

// RemoveListener forgets a listening address (a reload closed that route's listener); its
// sockets no longer count for any route.
func (m *Monitor) RemoveListener(addr netip.AddrPort) {
	a := addr.Addr().Unmap().WithZone("")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.listeners = slices.DeleteFunc(m.mu.listeners, func(l listener) bool { return l.addr == a && l.port == addr.Port() })
	clear(m.mu.listenPorts[:])
	for _, l := range m.mu.listeners {
		m.mu.listenPorts[l.port/64] |= 1 << (l.port % 64)
	}
}

// TrackServerConn registers one server-side connection pgfront dialled (local and remote as
// the conn reports them). It is cheap: a map insert under a mutex. Entries are forgotten on
// their own: a Sample drops every tracked conn the kernel no longer lists (only those
// tracked before that sample began, so a conn dialled during a sample is never dropped by
// it). Orphaned sockets pgfront closed (FIN_WAIT*, TIME_WAIT, LAST_ACK) stay attributed
// while the kernel lists them.
//
// Registering a 4-tuple again replaces its labels. Invalid addresses are ignored.
func (m *Monitor) TrackServerConn(local, remote netip.AddrPort, route, cluster, server string) {
	if !local.IsValid() || !remote.IsValid() {
		return
	}
	k := makeConnKey(local, remote)
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.internLocked(label{route: route, cluster: cluster, server: server, side: SideServer})
	m.mu.conns[k] = conn{label: l, tracked: m.mu.epoch}
}

// Tracked is the number of server conns tracked now (for tests and memory checks).
func (m *Monitor) Tracked() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.conns)
}

// Sample reads the kernel's table once and counts pgfront's sockets by Key. It also forgets
// the tracked conns the table no longer lists. On error nothing is forgotten.
func (m *Monitor) Sample() (Sample, error) {
	m.sampling.Lock()
	defer m.sampling.Unlock()
	start := m.now()

	m.mu.Lock()
	epoch := m.mu.epoch
	m.mu.epoch++
	m.mu.Unlock()

	socks, source, err := m.read(m.sampling.socks[:0])
	m.sampling.socks = socks[:0]
	if err != nil {
		return Sample{}, fmt.Errorf("sampling tcp sockets: %w", err)
	}

	scanned := len(socks)
	seen := 0 // tracked conns this sample listed
	for len(socks) > 0 {
		n := min(len(socks), chunk)
		m.mu.Lock()
		seen += m.attributeLocked(socks[:n], epoch)
		m.mu.Unlock()
		socks = socks[n:]
	}

	m.mu.Lock()
	if seen != len(m.mu.conns) {
		m.pruneLocked(epoch)
	}
	counts := m.countsLocked()
	m.mu.Unlock()

	return Sample{
		At:      start,
		Took:    m.now().Sub(start),
		Source:  source,
		Scanned: scanned,
		Counts:  counts,
	}, nil
}

// attributeLocked counts the sockets that are pgfront's into m.sampling.counts and marks the
// tracked conns listed as seen in epoch. It returns how many tracked conns it marked.
func (m *Monitor) attributeLocked(socks []netx.Socket, epoch uint32) (seen int) {
	if n := len(m.mu.labels) * numStates; len(m.sampling.counts) < n {
		m.sampling.counts = append(m.sampling.counts, make([]int, n-len(m.sampling.counts))...)
	}
	counts := m.sampling.counts
	for i := range socks {
		s := &socks[i]
		if s.State == netx.TCPListen || s.State >= numStates {
			continue
		}
		if p := s.Local.Port(); m.mu.listenPorts[p/64]&(1<<(p%64)) != 0 {
			if l, ok := m.listenerLocked(s.Local); ok {
				counts[int(l)*numStates+int(s.State)]++
				continue
			}
		}
		if len(m.mu.conns) == 0 {
			continue
		}
		k := makeConnKey(s.Local, s.Remote)
		c, ok := m.mu.conns[k]
		if !ok || c.seen == epoch { // not tracked, or listed twice by a changing table
			continue
		}
		if s.Inode != 0 {
			switch {
			case c.inode == 0:
				c.inode = uint32(s.Inode)
			case c.inode != uint32(s.Inode):
				// Another socket on the 4-tuple: pgfront's is gone.
				delete(m.mu.conns, k)
				continue
			}
		}
		c.seen = epoch
		m.mu.conns[k] = c
		seen++
		counts[int(c.label)*numStates+int(s.State)]++
	}
	return seen
}

// listenerLocked returns the label of the listener whose address is local, if any.
func (m *Monitor) listenerLocked(local netip.AddrPort) (uint32, bool) {
	ip, port := local.Addr().Unmap(), local.Port()
	for _, l := range m.mu.listeners {
		if l.port == port && l.matches(ip) {
			return l.label, true
		}
	}
	return 0, false
}

// pruneLocked forgets the conns tracked before sample epoch began that it did not list.
func (m *Monitor) pruneLocked(epoch uint32) {
	for k, c := range m.mu.conns {
		if c.tracked <= epoch && c.seen != epoch {
			delete(m.mu.conns, k)
		}
	}
}

// countsLocked turns m.sampling.counts into a Sample's map and zeroes it for the next one.
func (m *Monitor) countsLocked() map[Key]int {
	counts := m.sampling.counts
	n := 0
	for _, c := range counts {
		if c != 0 {
			n++
		}
	}
	out := make(map[Key]int, n)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		l := m.mu.labels[i/numStates]
		out[Key{Route: l.route, Side: l.side, Cluster: l.cluster, Server: l.server, State: netx.TCPState(i % numStates)}] = c
		counts[i] = 0
	}
	return out
}
