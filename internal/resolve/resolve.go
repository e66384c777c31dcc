// Package resolve remembers which address a server's host name last connected to, so that a
// login can connect without looking the name up.
//
// A server given by host name (a Kubernetes pod's or service's DNS name, say) used to cost a
// DNS query per login, and such logins could not start on an event loop: a loop must not
// block, and a lookup does. A Cache learns the address from a dial by name that connected
// (Learn). For Hold after that, Lookup returns the address at once, so a loop connects to it
// directly and a goroutine dials it without a query. After Hold, the next login dials by name
// again, which refreshes the entry; nothing is looked up in the background.
//
// An address learned this way can go stale: a pod that restarts comes back with another IP.
// Whoever connects to a remembered address and fails calls Forget and dials the name again,
// and must not count that failure against the server (the server may be up at its new
// address). A name's DNS answer can be stale too (resolvers cache); Hold is short, so what is
// remembered is at most that much older than what the resolver would answer. A name is looked
// up again when its Hold is over; logins that arrive together then may each look it up.
//
// A Cache is safe for concurrent use; Lookup never blocks on I/O.
package resolve

import (
	"net/netip"
	"sync"
	"time"
)

// Hold is how long a learned address is used without asking DNS again.
const Hold = 5 * time.Second

// FirstTry is the part of a connect bound a remembered address gets: half, so that one gone
// stale and silent leaves the rest for a dial of the name.
func FirstTry(bound time.Duration) time.Duration { return bound / 2 }

// Cache maps a server's configured "host:port" to the address a dial by that name last
// connected to.
type Cache struct {
	hold time.Duration
	now  func() time.Time

	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	addr    netip.AddrPort
	learned time.Time
}

// New returns an empty Cache whose entries are used for hold after they are learned.
func New(hold time.Duration) *Cache {
	return &Cache{hold: hold, now: time.Now, m: make(map[string]entry)}
}

// Lookup returns where to connect for hostport without blocking. An IP address with a port
// (and no zone, which needs a lookup of its own) is its own answer, with remembered false.
// A host name gives the address learned for it within Hold, with remembered true. ok is false
// when neither applies: the caller dials the name.
func (c *Cache) Lookup(hostport string) (addr netip.AddrPort, remembered, ok bool) {
	if a, err := netip.ParseAddrPort(hostport); err == nil {
		return a, false, a.Addr().Zone() == ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.m[hostport]
	if !found {
		return netip.AddrPort{}, false, false
	}
	if c.now().Sub(e.learned) >= c.hold {
		delete(c.m, hostport)
		return netip.AddrPort{}, false, false
	}
	return e.addr, true, true
}

// Learn records that a dial by hostport's name connected to addr. IP literals are not kept
// (Lookup answers them itself); neither are addresses with a zone.
func (c *Cache) Learn(hostport string, addr netip.AddrPort) {
	if _, err := netip.ParseAddrPort(hostport); err == nil || !addr.IsValid() || addr.Addr().Zone() != "" {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= sweepAt {
		// Names a reload removed are never looked up again: drop what has expired.
		for k, e := range c.m {
			if now.Sub(e.learned) >= c.hold {
				delete(c.m, k)
			}
		}
	}
	c.m[hostport] = entry{addr: netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), learned: now}
}

// sweepAt is the number of names from which Learn drops expired entries first.
const sweepAt = 64

// Forget drops what hostport is remembered as, if that is still addr: a connect to addr
// failed. A newer address learned meanwhile is kept.
func (c *Cache) Forget(hostport string, addr netip.AddrPort) {
	c.mu.Lock()
	if e, ok := c.m[hostport]; ok && e.addr == addr {
		delete(c.m, hostport)
	}
	c.mu.Unlock()
}

// Len is the number of names remembered now (expired ones included until looked up).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
