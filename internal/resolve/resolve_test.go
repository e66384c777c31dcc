package resolve

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clockCache is a Cache on a clock the test moves.
func clockCache(hold time.Duration) (*Cache, *time.Time) {
	c := New(hold)
	now := time.Unix(1_000_000, 0)
	c.now = func() time.Time { return now }
	return c, &now
}

func TestLookupLiteral(t *testing.T) {
	c, _ := clockCache(Hold)
	for _, tc := range []struct {
		in     string
		ok     bool
		answer string
	}{
		{"127.0.0.1:5432", true, "127.0.0.1:5432"},
		{"[::1]:5432", true, "[::1]:5432"},
		{"[fe80::1%eth0]:5432", false, ""}, // a zone is looked up by the dialer
		{"db.example:5432", false, ""},     // nothing learned
	} {
		addr, remembered, ok := c.Lookup(tc.in)
		if ok != tc.ok || remembered {
			t.Errorf("Lookup(%q): ok %v remembered %v, want ok %v remembered false", tc.in, ok, remembered, tc.ok)
			continue
		}
		if ok && addr.String() != tc.answer {
			t.Errorf("Lookup(%q) = %s, want %s", tc.in, addr, tc.answer)
		}
	}
	c.Learn("127.0.0.1:5432", netip.MustParseAddrPort("10.0.0.9:5432"))
	c.Learn("[fe80::1%eth0]:5432", netip.MustParseAddrPort("10.0.0.9:5432"))
	if c.Len() != 0 {
		t.Fatalf("literals learned: %d entries", c.Len())
	}
}

func TestLearnHoldForget(t *testing.T) {
	c, now := clockCache(5 * time.Second)
	name := "pg-0.pg.db.svc:5432"
	first := netip.MustParseAddrPort("[::ffff:10.1.2.3]:5432") // as a dual-stack socket reports it
	c.Learn(name, first)
	addr, remembered, ok := c.Lookup(name)
	if !ok || !remembered || addr.String() != "10.1.2.3:5432" {
		t.Fatalf("after Learn: %s remembered %v ok %v, want 10.1.2.3:5432 remembered", addr, remembered, ok)
	}

	*now = now.Add(4 * time.Second)
	if _, _, ok := c.Lookup(name); !ok {
		t.Fatal("forgotten within the hold")
	}
	*now = now.Add(time.Second)
	if _, _, ok := c.Lookup(name); ok {
		t.Fatal("still used once the hold is over")
	}
	if c.Len() != 0 {
		t.Fatalf("expired entry kept after its Lookup: %d", c.Len())
	}

	// Forget drops the address that failed, not a newer one learned meanwhile.
	c.Learn(name, netip.MustParseAddrPort("10.1.2.3:5432"))
	stale, _, _ := c.Lookup(name)
	c.Learn(name, netip.MustParseAddrPort("10.1.9.9:5432")) // the pod came back elsewhere
	c.Forget(name, stale)
	if addr, _, ok := c.Lookup(name); !ok || addr.String() != "10.1.9.9:5432" {
		t.Fatalf("Forget of the old address dropped the new one: %s ok %v", addr, ok)
	}
	c.Forget(name, netip.MustParseAddrPort("10.1.9.9:5432"))
	if _, _, ok := c.Lookup(name); ok {
		t.Fatal("Forget of the current address kept it")
	}
}

func TestLearnSweepsExpired(t *testing.T) {
	c, now := clockCache(time.Second)
	for i := range sweepAt {
		c.Learn(fmt.Sprintf("old-%d:5432", i), netip.MustParseAddrPort("10.0.0.1:5432"))
	}
	*now = now.Add(2 * time.Second)
	c.Learn("new:5432", netip.MustParseAddrPort("10.0.0.2:5432"))
	if c.Len() != 1 {
		t.Fatalf("%d entries after a sweep, want only the new one", c.Len())
	}
}

// An address with a zone is not kept: Lookup's answers are dialled as they are, and a zone
// needs an interface looked up.
func TestLearnDropsZones(t *testing.T) {
	c, _ := clockCache(Hold)
	c.Learn("db.example:5432", netip.MustParseAddrPort("[fe80::1%eth0]:5432"))
	if c.Len() != 0 {
		t.Fatal("zoned address learned")
	}
}
