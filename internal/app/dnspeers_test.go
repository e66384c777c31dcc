package app_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// freePortOn returns a port free on both loopback addresses (bind and release).
func freePortOn(t *testing.T, hosts ...string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, h := range hosts[1:] {
			o, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every one of", hosts)
	return 0
}

// peerAddrs lists an instance's fleet peers' addresses.
func peerAddrs(e *env) []string {
	var out []string
	for _, p := range e.app.Fleet().Peers() {
		out = append(out, p.Addr)
	}
	return out
}

// TestFleetDNSPeers: a dns_peers name with one address per instance (a headless Service) makes
// every other instance a peer and leaves the instance's own admin listener out, so a
// CancelRequest that reaches the instance without the session is forwarded to the one with it.
func TestFleetDNSPeers(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	secret := fleetSecretFile(t)
	port := freePortOn(t, "127.0.0.1", "127.0.0.2")
	const name = "pgfront-peers.test.invalid"
	var lookups atomic.Int32
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		if host != name {
			return nil, fmt.Errorf("lookup %s: no such host", host)
		}
		lookups.Add(1)
		// As a resolver may: one address twice, once as an IPv4-mapped IPv6 address.
		return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::ffff:127.0.0.2")}, nil
	}
	instance := func(fleetName, adminHost string) *env {
		yaml := oneServerConfig(p, "", fleetYAML(secret, fleetName)+
			fmt.Sprintf("  dns_peers: [%s:%d]\nadmin:\n  listen: %s:%d\n", name, port, adminHost, port))
		return startProxyWith(t, yaml, func(a *app.App) { app.SetLookupIP(a, resolve) })
	}
	a := instance("pgfront-a", "127.0.0.1")
	b := instance("pgfront-b", "127.0.0.2")
	aAddr, bAddr := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.2:%d", port)
	waitFor(t, 10*time.Second, "each instance's DNS peers", func() bool {
		return slices.Equal(peerAddrs(a), []string{bAddr}) && slices.Equal(peerAddrs(b), []string{aAddr})
	})
	if n := lookups.Load(); n < 2 {
		t.Fatalf("%d lookups", n)
	}
	if st := a.app.Fleet().PeerStatuses(); len(st) != 1 || st[0].Source != "dns" {
		t.Errorf("A's peer statuses %+v: want one, from dns", st)
	}
	a.waitMetric(5*time.Second, 1, "pgfront_fleet_peers", "source", "dns")
	if v, ok := a.metric("pgfront_fleet_peers", "source", "config"); !ok || v != 0 {
		t.Errorf("pgfront_fleet_peers{source=config} = %g (present %v), want 0", v, ok)
	}

	s := &cancelSession{name: "A's session", conn: a.pgconnect("rw"), server: p}
	stopSleeping(t, s)
	key := keyOf(s.conn)
	s.start(t)
	client := sendCancelTo(t, b.addr("rw").String(), key)
	waitCancelled(t, s, 10*time.Second)
	if line := logLine(t, b.logs, `msg="cancel request"`, client); logAttr(line, "result") != "peer" || logAttr(line, "peer") != aAddr {
		t.Fatalf("B's cancel request line: %s", line)
	}
	if !strings.Contains(a.logs.String(), `msg="fleet discovery through DNS" names=`+name) {
		t.Errorf("A's log does not say it discovers through DNS:\n%s", a.logs.String())
	}
}

// afterLookup waits until e's discovery has looked its names up once more after its log held
// before, and returns its peers then.
func afterLookup(t *testing.T, e *env, before string) []string {
	t.Helper()
	const line = `msg="fleet discovery through DNS: looked up"`
	n := strings.Count(before, line)
	waitFor(t, 10*time.Second, "a DNS lookup", func() bool { return strings.Count(e.logs.String(), line) > n })
	return peerAddrs(e)
}

// localhostPeers is what a dns_peers entry localhost:port gives on this machine (as the
// discovery takes it: IPv4 addresses when there are any), without the addresses in self.
func localhostPeers(t *testing.T, port int, self ...string) []string {
	t.Helper()
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	var v4, all []string
	for _, ip := range ips {
		a := netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
		if slices.Contains(self, a) || slices.Contains(all, a) {
			continue
		}
		all = append(all, a)
		if ip.Unmap().Is4() {
			v4 = append(v4, a)
		}
	}
	if len(v4) > 0 {
		all = v4
	}
	slices.Sort(all)
	return all
}

// TestFleetDNSPeersResolver: a name the system resolver knows (localhost) gives the instance
// at its address as a peer; an instance leaves its own address out.
func TestFleetDNSPeersResolver(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	secret := fleetSecretFile(t)
	port := freePortOn(t, "127.0.0.1")
	aAddr := fmt.Sprintf("127.0.0.1:%d", port)
	peers := fmt.Sprintf("  dns_peers: [localhost:%d]\n", port)
	a := startProxy(t, oneServerConfig(p, "", fleetYAML(secret, "pgfront-a")+peers+"admin:\n  listen: "+aAddr+"\n"))
	b := startProxy(t, oneServerConfig(p, "", fleetYAML(secret, "pgfront-b")+peers))
	wantB, wantA := localhostPeers(t, port), localhostPeers(t, port, aAddr)
	if !slices.Contains(wantB, aAddr) {
		t.Fatalf("localhost does not resolve to 127.0.0.1 here: %q", wantB)
	}
	waitFor(t, 10*time.Second, "B's DNS peers", func() bool { return slices.Equal(peerAddrs(b), wantB) })
	if got := afterLookup(t, a, ""); !slices.Equal(got, wantA) {
		t.Errorf("A's DNS peers %q, want %q (its own address left out)", got, wantA)
	}
	// The peer answers: a key A does not hold, sent to B, is asked of A, which says unknown.
	key := keyOf(a.pgconnect("rw"))
	key.Secret = string([]byte{key.Secret[0] ^ 0xff, key.Secret[1], key.Secret[2], key.Secret[3]})
	client := sendCancelTo(t, b.addr("rw").String(), key)
	if line := logLine(t, b.logs, `msg="cancel request"`, client); logAttr(line, "result") != "fallback" {
		t.Fatalf("B's cancel request line: %s", line)
	}
	waitFor(t, 10*time.Second, "A's answer to B", func() bool {
		return strings.Contains(a.logs.String(), `msg="peer cancel request" route=rw result=unknown`)
	})
}

// TestFleetDNSPeersReload: a reload that adds dns_peers starts the discovery, one that moves
// the admin listener changes what is left out as this instance's own, and one that drops
// dns_peers forgets the peers they gave.
func TestFleetDNSPeersReload(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	secret := fleetSecretFile(t)
	port := freePortOn(t, "127.0.0.1", "127.0.0.2")
	admin := func(host string) string { return fmt.Sprintf("admin:\n  listen: %s:%d\n", host, port) }
	fleetPart := fleetYAML(secret, "pgfront-b")
	dns := fmt.Sprintf("  dns_peers: [localhost:%d]\n", port)
	plain := oneServerConfig(p, "", fleetPart+admin("127.0.0.2"))
	fe := startProxyFile(t, plain)

	changes := fe.reload(t, oneServerConfig(p, "", fleetPart+dns+admin("127.0.0.2")))
	if !slices.ContainsFunc(changes, func(c string) bool { return strings.Contains(c, "fleet discovery through DNS: localhost:") }) {
		t.Errorf("reload changes %q do not name the discovery", changes)
	}
	want := localhostPeers(t, port)
	waitFor(t, 10*time.Second, "the DNS peers", func() bool { return slices.Equal(peerAddrs(fe.env), want) })

	// The admin listener moves to 127.0.0.1:port, which localhost gives: that is now this
	// instance itself.
	before := fe.logs.String()
	fe.reload(t, oneServerConfig(p, "", fleetPart+dns+admin("127.0.0.1")))
	want = localhostPeers(t, port, fmt.Sprintf("127.0.0.1:%d", port))
	if got := afterLookup(t, fe.env, before); !slices.Equal(got, want) {
		t.Errorf("after the admin listener moved: DNS peers %q, want %q", got, want)
	}

	fe.reload(t, oneServerConfig(p, "", fleetPart+admin("127.0.0.1")))
	if got := peerAddrs(fe.env); len(got) != 0 {
		t.Errorf("peers %q after dns_peers were dropped", got)
	}
	if _, ok := fe.metric("pgfront_fleet_peers", "source", "dns"); ok {
		t.Errorf("pgfront_fleet_peers{source=dns} still exported after dns_peers were dropped")
	}
}
