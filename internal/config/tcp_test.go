package config

import (
	"errors"
	"testing"
	"time"
)

// The promise: with the defaults, a client or server that vanishes without FIN or RST
// is given up within 15s, whatever its session is doing.
func TestTCPDefaultsGiveUpWithin15s(t *testing.T) {
	c, _ := mustParse(t, base)
	for _, sd := range c.TCP.sides() {
		bound, ok := sd.side.VanishBound()
		if !ok || bound > 15*time.Second {
			t.Errorf("default tcp.%s %+v: a vanished peer held for %s (bounded: %v), want at most 15s", sd.key, *sd.side, bound, ok)
		}
	}
	if c.Routes["rw"].TCP != c.TCP {
		t.Errorf("route tcp %+v, want the global %+v", c.Routes["rw"].TCP, c.TCP)
	}
}

// VanishBound models the kernel: keepalive probes after keepalive_idle of silence, one every
// keepalive_interval, the connection dropped at the first probe time at which the silence has
// lasted user_timeout; and user_timeout for data (or a closed window) waiting.
func TestVanishBound(t *testing.T) {
	side := func(idle, intvl string, count int, ut string) TCPSide {
		return TCPSide{KeepaliveIdle: d(idle), KeepaliveInterval: d(intvl), KeepaliveCount: count, UserTimeout: d(ut)}
	}
	for _, tc := range []struct {
		name string
		s    TCPSide
		want time.Duration // 0: unbounded
	}{
		{"defaults", side("5s", "2s", 4, "13s"), 13 * time.Second},
		{"the e2e tests' short values", side("1s", "1s", 2, "2s"), 2 * time.Second},
		{"user timeout between two probes: the next probe", side("5s", "2s", 4, "12s"), 13 * time.Second},
		{"user timeout before the first probe: the second one", side("10s", "1s", 4, "3s"), 11 * time.Second},
		{"user timeout longer than keepalive", side("1s", "1s", 2, "30s"), 30 * time.Second},
		{"pgfront's old defaults", side("30s", "10s", 3, "60s"), 60 * time.Second},
		{"keepalive off", side("0", "2s", 0, "13s"), 0},
		{"user timeout off", side("5s", "2s", 4, "0"), 0},
	} {
		got, ok := tc.s.VanishBound()
		if want := tc.want != 0; ok != want || got != tc.want {
			t.Errorf("%s: %s (bounded %v), want %s (bounded %v)", tc.name, got, ok, tc.want, want)
		}
	}
}

// Keys directly under tcp set both sides; a side's own key wins, wherever it is in the file; a
// route overrides key by key and inherits the rest from the resolved global section.
func TestTCPSidesAndRoutes(t *testing.T) {
	route := "    tcp:\n      user_timeout: 20s\n      client: {keepalive_interval: 3s}\n"
	for _, global := range []string{
		"tcp:\n  keepalive_idle: 7s\n  server: {keepalive_idle: 9s}\n",
		"tcp:\n  server: {keepalive_idle: 9s}\n  keepalive_idle: 7s\n", // the side's key first
	} {
		c, w := mustParse(t, global+base+route+roRoute)
		if len(w) != 0 {
			t.Errorf("warnings: %v", w)
		}
		def := defaultTCPSide
		wantClient, wantServer := def, def
		wantClient.KeepaliveIdle, wantServer.KeepaliveIdle = d("7s"), d("9s")
		if c.TCP != (TCP{Client: wantClient, Server: wantServer}) {
			t.Errorf("%q: global tcp %+v", global, c.TCP)
		}
		rwClient, rwServer := wantClient, wantServer
		rwClient.KeepaliveInterval = d("3s")
		rwClient.UserTimeout, rwServer.UserTimeout = d("20s"), d("20s")
		if got := c.Routes["rw"].TCP; got != (TCP{Client: rwClient, Server: rwServer}) {
			t.Errorf("%q: route rw tcp %+v", global, got)
		}
		if got := c.Routes["ro"].TCP; got != c.TCP {
			t.Errorf("%q: route ro tcp %+v, want the global %+v", global, got, c.TCP)
		}
	}
}

func TestTCPProblems(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []want
	}{
		{"unknown key in a side", "tcp:\n  client:\n    nodelay: true\n" + base,
			[]want{{"nodelay", "tcp.client.nodelay", "known: keepalive_idle, keepalive_interval, keepalive_count, user_timeout"}}},
		{"unknown key in a route's tcp", base + "    tcp:\n      keepalive_idel: 5s\n",
			[]want{{"keepalive_idel", "routes.rw.tcp.keepalive_idel", `did you mean "keepalive_idle"?`}}},
		{"a side's own bad key", "tcp:\n  server:\n    keepalive_interval: 1500ms\n" + base,
			[]want{{"keepalive_interval", "tcp.server.keepalive_interval", "whole seconds"}}},
		{"a bad key for both sides is one problem", "tcp:\n  keepalive_interval: 1500ms\n" + base,
			[]want{{"keepalive_interval", "tcp.keepalive_interval", "whole seconds"}}},
		{"route", base + "    tcp:\n      client:\n        keepalive_count: 0\n",
			[]want{{"keepalive_count", "routes.rw.tcp.client.keepalive_count", "must be from 1 to 127 while keepalive is on"}}},
		{"route turning keepalive on over a global count of 0", "tcp:\n  keepalive_idle: 0\n  keepalive_count: 0\n" + base + "    tcp:\n      keepalive_idle: 5s\n",
			// The count the route inherits is reported at the route's tcp section, once.
			[]want{{"    tcp:", "routes.rw.tcp.keepalive_count", "must be from 1 to 127"}}},
		{"route turning one side's keepalive on over a global count of 0", "tcp:\n  keepalive_idle: 0\n  keepalive_count: 0\n" + base + "    tcp:\n      server:\n        keepalive_idle: 5s\n",
			[]want{{"      server:", "routes.rw.tcp.server.keepalive_count", "must be from 1 to 127"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.src), "test.yaml")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			checkFindings(t, tc.src, asFindings(e.Problems), tc.want)
		})
	}
}

func TestTCPLint(t *testing.T) {
	const hint = "keep it under a minute (the defaults give up within 13s"
	for _, tc := range []struct {
		name, src string
		want      []want
	}{
		{"defaults are quiet", base, nil},
		{"a minute is still fine", "tcp:\n  keepalive_idle: 30s\n  keepalive_interval: 10s\n  keepalive_count: 3\n  user_timeout: 60s\n" + base, nil},
		{"user_timeout off, both sides", "tcp:\n  user_timeout: 0\n" + base,
			[]want{{"user_timeout", "tcp.user_timeout", "a client or server that vanishes without FIN or RST (its network torn down, its machine gone) can hold a session, its backend (and the locks its transaction holds) and a maxconn slot for more than a minute: user_timeout is 0 (off), so while data waits for its acknowledgement (a query, a result, a closed receive window) the kernel retransmits for about 15 minutes; " + hint}}},
		{"server keepalive off", "tcp:\n  server:\n    keepalive_idle: 0\n    keepalive_count: 0\n" + base,
			[]want{{"keepalive_idle", "tcp.server.keepalive_idle", "a server that vanishes without FIN or RST (its network torn down, its machine gone) can hold its clients' sessions and maxconn slots for more than a minute: keepalive is off (keepalive_idle 0)"}}},
		{"route: a long client user_timeout", base + "    tcp:\n      client:\n        user_timeout: 2m\n",
			[]want{{"user_timeout", "routes.rw.tcp.client.user_timeout", "a client that vanishes without FIN or RST (its network torn down, its machine gone) can hold its session, its backend (and the locks its transaction holds) and a maxconn slot for more than a minute: keepalive (keepalive_idle 5s, keepalive_interval 2s) and user_timeout (2m) give up on it only after 2m"}}},
		{"route: slow keepalive", base + "    tcp:\n      keepalive_idle: 60s\n",
			[]want{{"keepalive_idle", "routes.rw.tcp.keepalive_idle", "a client or server that vanishes"}}},
		{"a global finding is not repeated per route", "tcp:\n  user_timeout: 0\n" + base + roRoute + "    tcp:\n      server: {keepalive_idle: 3s}\n",
			[]want{{"user_timeout", "tcp.user_timeout", "a client or server that vanishes"},
				// ro sets its server side: judged again there (it inherits user_timeout 0).
				{"server: {keepalive_idle: 3s}", "routes.ro.tcp.server.user_timeout", "a server that vanishes"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, w := mustParse(t, tc.src)
			checkFindings(t, tc.src, asFindings(w), tc.want)
		})
	}
}
