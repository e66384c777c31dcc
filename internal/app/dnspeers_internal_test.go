package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/fleet"
)

// TestSelfMatcher: a listener on a given address is only that address; one on an unspecified
// host is its port on any of the host's addresses or a loopback one.
func TestSelfMatcher(t *testing.T) {
	ap := netip.MustParseAddrPort
	local := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::5")}
	tests := []struct {
		bound string
		addr  string
		want  bool
	}{
		{"10.1.2.3:9187", "10.1.2.3:9187", true},
		{"10.1.2.3:9187", "10.1.2.4:9187", false},
		{"10.1.2.3:9187", "10.1.2.3:9188", false},
		{"[::ffff:10.1.2.3]:9187", "10.1.2.3:9187", true},
		{"0.0.0.0:9187", "10.1.2.3:9187", true},
		{"0.0.0.0:9187", "[fd00::5]:9187", true},
		{"0.0.0.0:9187", "127.0.0.1:9187", true},
		{"0.0.0.0:9187", "10.1.2.4:9187", false}, // another pod
		{"0.0.0.0:9187", "10.1.2.3:9188", false},
		{"[::]:9187", "10.1.2.3:9187", true},
	}
	if selfMatcher(netip.AddrPort{}, local)(ap("10.1.2.3:9187")) {
		t.Error("no admin listener: an address is self")
	}
	for _, tt := range tests {
		if got := selfMatcher(ap(tt.bound), local)(ap(tt.addr)); got != tt.want {
			t.Errorf("bound %s: %s is self = %v, want %v", tt.bound, tt.addr, got, tt.want)
		}
	}
}

// TestDNSPeersFollowTheName: the peers follow what the name resolves to, this instance left
// out, and a failing lookup keeps the peers the last good one gave.
func TestDNSPeersFollowTheName(t *testing.T) {
	every := dnsPeersEvery
	dnsPeersEvery = 5 * time.Millisecond
	t.Cleanup(func() { dnsPeersEvery = every })

	var mu sync.Mutex
	answer := []string{"10.0.0.1", "10.0.0.2", "10.0.0.9"}
	var failing, gone bool
	lookups := 0
	a := &App{log: slog.New(slog.NewTextHandler(io.Discard, nil)), fleet: fleet.New(fleet.Options{})}
	a.lookupIP = func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups++
		if host != "peers.test" {
			return nil, errors.New("wrong host " + host)
		}
		if failing {
			return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
		}
		if gone {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []netip.Addr
		for _, s := range answer {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
	self := netip.MustParseAddrPort("10.0.0.9:9187")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.runDNSPeers(ctx, []string{"peers.test:9187"}, self)
	}()
	defer func() { cancel(); <-done }()

	peers := func() []string {
		var out []string
		for _, p := range a.fleet.Peers() {
			out = append(out, p.Addr)
		}
		return out
	}
	waitPeers := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(peers(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("peers %q, want %q", peers(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLookups := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := lookups
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d lookups, want %d", got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitPeers("10.0.0.1:9187", "10.0.0.2:9187")

	mu.Lock()
	failing = true
	n := lookups
	mu.Unlock()
	waitLookups(n + 3)
	if got := peers(); !slices.Equal(got, []string{"10.0.0.1:9187", "10.0.0.2:9187"}) {
		t.Fatalf("after failed lookups: peers %q, want the last good ones", got)
	}

	mu.Lock()
	failing = false
	// 10.0.0.1 left, 10.0.0.3 came; a dual-stack name: its IPv6 addresses are not taken.
	answer = []string{"10.0.0.2", "fd00::2", "10.0.0.3", "::ffff:10.0.0.3", "10.0.0.9"}
	mu.Unlock()
	waitPeers("10.0.0.2:9187", "10.0.0.3:9187")

	mu.Lock()
	answer = []string{"fd00::2", "fd00::3"} // IPv6 only: taken
	mu.Unlock()
	waitPeers("[fd00::2]:9187", "[fd00::3]:9187")

	// A name that no longer exists gives no peers: the Service is gone, and its pods'
	// addresses may be other pods' by now.
	mu.Lock()
	gone = true
	mu.Unlock()
	waitPeers()
}
