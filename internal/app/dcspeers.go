package app

import (
	"cmp"
	"net"
	"os"
	"slices"

	"github.com/pgfront/pgfront/internal/dcs"
	"github.com/pgfront/pgfront/internal/fleet"
)

// Fleet discovery through Patroni's DCS: with a fleet secret, an instance whose cluster has a
// dcs section registers its admin listener under /<namespace>/<scope>/pgfront/<fleet name>
// (a lease: an instance that dies leaves the list after 10 s) and takes the instances
// registered there as peers, as source "dcs/<cluster>" next to fleet.peers. While etcd is
// unreachable the last list stays: the peers are most likely still there.

// isLoopback reports whether a host:port names a loopback address (or localhost).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dcsPeers is one cluster's running registration.
type dcsPeers struct {
	key    string // what it was built from: a change means a new registration
	p      *dcs.Peers
	source string
}

// advertised is the address this instance registers: fleet.advertise, else the admin
// listener's bound address with an unspecified host replaced by the host name. "" when
// there is none (no admin listener): the instance is not registered.
func (a *App) advertised(g *generation) string {
	if g.advertise != "" {
		return g.advertise
	}
	if a.admin == nil || a.admin.Addr() == nil {
		return ""
	}
	host, port, err := net.SplitHostPort(a.admin.Addr().String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return ""
		}
	}
	return net.JoinHostPort(host, port)
}

// applyDCSPeers brings the registrations in line with g: one per cluster with a dcs section
// while the fleet has a secret, replaced when the section, the name or the address changed.
// Registrations run only while the App runs (the admin listener's address is known then):
// Start and every later apply call it. reloadMu is held.
func (a *App) applyDCSPeers(g *generation, note func(string, ...any)) {
	if !a.running {
		return
	}
	addr := a.advertised(g)
	want := map[string]string{} // cluster -> key
	for name, plan := range g.clusters {
		if plan.dcs != nil && g.fleetSecret != nil && addr != "" {
			want[name] = plan.dcs.key + "\x00" + g.fleetName + "\x00" + addr
		}
	}
	for name, cur := range a.dcsPeers {
		if want[name] != cur.key {
			a.stopDCSPeers(name)
		}
	}
	for name, key := range want {
		if a.dcsPeers[name] != nil {
			continue
		}
		plan := g.clusters[name]
		source := "dcs/" + name
		self := g.fleetName
		opts := dcs.PeerOptions{Options: plan.dcs.opts, Name: self, Addr: addr,
			OnPeers: func(m map[string]string) { a.discovered(source, self, addr, m) }}
		opts.Logger = a.log.With("cluster", name)
		p, err := dcs.NewPeers(opts)
		if err != nil { // config validation rules these out
			a.log.Error("fleet discovery through the dcs not started", "cluster", name, "err", err)
			continue
		}
		a.dcsPeers[name] = &dcsPeers{key: key, p: p, source: source}
		p.Start()
		if g.advertise == "" && isLoopback(addr) {
			a.log.Warn("fleet discovery: registering a loopback address; only instances on this host can reach it — set fleet.advertise (or admin.listen) to an address the other instances reach",
				"cluster", name, "address", addr)
		}
		note("cluster %s: fleet discovery through the dcs as %s at %s", name, self, addr)
	}
}

// discovered takes a DCS peer list (name -> address, this instance included) as the peers
// of source; nil (etcd unreachable) keeps the last list. An entry with this instance's own
// address is left out too: asking oneself finds nothing (two hosts that both registered a
// loopback address). It runs on the Peers goroutine and never blocks: SetPeers takes only the
// fleet's own lock.
func (a *App) discovered(source, self, selfAddr string, m map[string]string) {
	if m == nil {
		return
	}
	var peers []fleet.Peer
	for name, addr := range m {
		if name != self && addr != selfAddr {
			peers = append(peers, fleet.Peer{Name: name, Addr: addr})
		}
	}
	slices.SortFunc(peers, func(x, y fleet.Peer) int { return cmp.Compare(x.Name, y.Name) })
	a.fleet.SetPeers(source, peers)
}

// stopDCSPeers withdraws a cluster's registration and forgets its peers. reloadMu is held.
func (a *App) stopDCSPeers(name string) {
	d := a.dcsPeers[name]
	if d == nil {
		return
	}
	d.p.Stop()
	delete(a.dcsPeers, name)
	a.fleet.SetPeers(d.source, nil)
}

// stopAllDCSPeers withdraws every registration (stopBackground). reloadMu is held.
func (a *App) stopAllDCSPeers() {
	for name := range a.dcsPeers {
		a.stopDCSPeers(name)
	}
}
