package dcs

import (
	"maps"
	"testing"
	"time"
)

// peerLists collects OnPeers reports; the buffer outlasts the test.
type peerLists chan map[string]string

func (pl peerLists) on(m map[string]string) {
	select {
	case pl <- m:
	default:
		panic("peerLists: buffer full")
	}
}

func (pl peerLists) waitFor(t *testing.T, what string, ok func(map[string]string) bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-pl:
			if ok(m) {
				return
			}
		case <-timeout:
			t.Fatalf("no peer list where %s within 20s", what)
		}
	}
}

// TestPeers: two instances register and see each other; one that stops leaves the other's
// list at once (its lease revoked); after etcd's loss and return the list is current again.
func TestPeers(t *testing.T) {
	e := startEtcd(t)
	opts := Options{Endpoints: []string{e.Endpoint()}, Scope: "pg", DialTimeout: 500 * time.Millisecond}
	la, lb := make(peerLists, 100), make(peerLists, 100)
	a, err := NewPeers(PeerOptions{Options: opts, Name: "a", Addr: "10.0.0.1:8080", OnPeers: la.on, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewPeers(PeerOptions{Options: opts, Name: "b", Addr: "10.0.0.2:8080", OnPeers: lb.on, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	defer a.Stop()
	b.Start()
	both := map[string]string{"a": "10.0.0.1:8080", "b": "10.0.0.2:8080"}
	la.waitFor(t, "a sees both", func(m map[string]string) bool { return maps.Equal(m, both) })
	lb.waitFor(t, "b sees both", func(m map[string]string) bool { return maps.Equal(m, both) })
	b.Stop()
	la.waitFor(t, "b left", func(m map[string]string) bool { return maps.Equal(m, map[string]string{"a": "10.0.0.1:8080"}) })

	e.Stop()
	la.waitFor(t, "the list not current", func(m map[string]string) bool { return m == nil })
	e.Start()
	la.waitFor(t, "a registered again", func(m map[string]string) bool { return m["a"] == "10.0.0.1:8080" })
	if p := PeerPrefix("", "pg"); p != "/service/pg/pgfront/" {
		t.Errorf("PeerPrefix = %q", p)
	}
}
