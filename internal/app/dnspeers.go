package app

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/fleet"
)

// Fleet discovery through DNS: every address a fleet.dns_peers name resolves to is a peer at
// the name's port, as source "dns" next to fleet.peers. A Kubernetes headless Service is such
// a name: one address per pod, the pods of a Deployment included, whose names change. The names
// are looked up again every dnsPeersEvery. A lookup that fails keeps the name's last addresses
// (the instances are most likely still there); a name that does not exist (NXDOMAIN: the
// Service was deleted or renamed) gives none, so that addresses other pods may now hold are
// not sent cancel keys. Of a name's addresses only the IPv4 ones are taken when it has any
// (a dual-stack Service gives each pod twice, and each peer is asked), and this instance's own
// admin listener is left out.

// dnsPeersEvery is how often the names are looked up: an instance that came up is asked for
// its keys within this (until then its cancels take the fallback). A variable for tests.
var dnsPeersEvery = 10 * time.Second

// dnsLookupTimeout bounds one name's lookup.
const dnsLookupTimeout = 5 * time.Second

// dnsPeers is the running discovery.
type dnsPeers struct {
	key    string // the names it was started for: a change means a new discovery
	cancel context.CancelFunc
	done   chan struct{}
}

// applyDNSPeers starts, replaces or stops the discovery as g asks: running while the fleet has
// a secret and dns_peers names, and only while the App runs (the admin listener's address,
// which is left out, is known then). reloadMu is held.
func (a *App) applyDNSPeers(g *generation, note func(string, ...any)) {
	if !a.running {
		return
	}
	key := ""
	if g.fleetSecret != nil && len(g.dnsPeers) > 0 {
		key = strings.Join(g.dnsPeers, " ")
		if a.admin != nil && a.admin.Addr() != nil {
			key += " (admin " + a.admin.Addr().String() + ")" // what is left out
		}
	}
	if a.dnsPeers != nil && a.dnsPeers.key == key {
		return
	}
	a.stopDNSPeers()
	if key == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dnsPeers{key: key, cancel: cancel, done: make(chan struct{})}
	a.dnsPeers = d
	names := slices.Clone(g.dnsPeers)
	var admin netip.AddrPort // the zero AddrPort without an admin listener: nothing is left out
	if a.admin != nil && a.admin.Addr() != nil {
		admin, _ = netip.ParseAddrPort(a.admin.Addr().String())
	}
	go func() {
		defer close(d.done)
		a.runDNSPeers(ctx, names, admin)
	}()
	a.log.Info("fleet discovery through DNS", "names", strings.Join(names, ","), "every", dnsPeersEvery)
	note("fleet discovery through DNS: %s", strings.Join(names, ", "))
}

// stopDNSPeers ends the discovery and forgets its peers. reloadMu is held.
func (a *App) stopDNSPeers() {
	d := a.dnsPeers
	if d == nil {
		return
	}
	d.cancel()
	<-d.done
	a.dnsPeers = nil
	a.fleet.SetPeers("dns", nil)
}

// runDNSPeers looks the names up until ctx ends, now and then every dnsPeersEvery, leaving
// out the admin listener bound at admin (with the host's addresses as they are at each round).
func (a *App) runDNSPeers(ctx context.Context, names []string, admin netip.AddrPort) {
	last := make(map[string][]fleet.Peer, len(names)) // by name: what its last good lookup gave
	failing := make(map[string]bool, len(names))
	var current []fleet.Peer
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		isSelf := selfMatcher(admin, hostAddrs(admin))
		for _, name := range names {
			peers, err := a.lookupPeers(ctx, name, isSelf)
			if ctx.Err() != nil {
				return
			}
			var dnsErr *net.DNSError
			gone := errors.As(err, &dnsErr) && dnsErr.IsNotFound // the name, not the DNS
			switch {
			case gone && len(last[name]) > 0:
				a.log.Warn("fleet discovery through DNS: no such name; no peers from it", "name", name)
			case err != nil && !gone && !failing[name]:
				a.log.Warn("fleet discovery through DNS: lookup failed; keeping the peers it gave last", "name", name, "peers", len(last[name]), "err", err)
			case err == nil && failing[name]:
				a.log.Info("fleet discovery through DNS: lookup works again", "name", name, "peers", len(peers))
			}
			failing[name] = err != nil && !gone
			if !failing[name] {
				last[name] = peers
			}
		}
		var all []fleet.Peer
		for _, name := range names {
			for _, p := range last[name] {
				if !slices.Contains(all, p) {
					all = append(all, p)
				}
			}
		}
		if !slices.Equal(all, current) {
			addrs := make([]string, len(all))
			for i, p := range all {
				addrs[i] = p.Addr
			}
			a.log.Info("fleet discovery through DNS: peers", "peers", strings.Join(addrs, ","))
			a.fleet.SetPeers("dns", all)
			current = all
		}
		a.log.Debug("fleet discovery through DNS: looked up", "peers", len(all))
		t.Reset(dnsPeersEvery)
	}
}

// lookupPeers resolves name (host:port) into a peer per address, sorted, this instance's own
// admin listener left out.
func (a *App) lookupPeers(ctx context.Context, name string, isSelf func(netip.AddrPort) bool) ([]fleet.Peer, error) {
	host, portText, err := net.SplitHostPort(name)
	if err != nil {
		return nil, err // config validation rules this out
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, dnsLookupTimeout)
	defer cancel()
	addrs, err := a.lookupIP(lctx, host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	if slices.ContainsFunc(addrs, netip.Addr.Is4) {
		addrs = slices.DeleteFunc(addrs, func(ip netip.Addr) bool { return !ip.Is4() })
	}
	var peers []fleet.Peer
	for _, ip := range addrs {
		ap := netip.AddrPortFrom(ip, uint16(port))
		if isSelf(ap) {
			continue
		}
		p := fleet.Peer{Addr: ap.String()}
		if !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	slices.SortFunc(peers, func(x, y fleet.Peer) int { return strings.Compare(x.Addr, y.Addr) })
	return peers, nil
}

// hostAddrs is this host's addresses when the admin listener at admin is on an unspecified
// host (0.0.0.0, ::), whose port on any of them is this instance; none otherwise.
func hostAddrs(admin netip.AddrPort) []netip.Addr {
	if !admin.Addr().IsUnspecified() {
		return nil
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// selfMatcher reports whether an address is the admin listener bound at bound: that address,
// or for a listener on an unspecified host (0.0.0.0, ::) its port on a loopback address or
// one of local (the host's addresses). The zero bound (no admin listener) matches nothing.
func selfMatcher(bound netip.AddrPort, local []netip.Addr) func(netip.AddrPort) bool {
	if !bound.IsValid() {
		return func(netip.AddrPort) bool { return false }
	}
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	if !bound.Addr().IsUnspecified() {
		return func(ap netip.AddrPort) bool { return ap == bound }
	}
	mine := make(map[netip.Addr]bool, len(local))
	for _, l := range local {
		mine[l.Unmap()] = true
	}
	return func(ap netip.AddrPort) bool {
		return ap.Port() == bound.Port() && (mine[ap.Addr()] || ap.Addr().IsLoopback())
	}
}
