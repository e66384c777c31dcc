package config

import (
	"fmt"
	"sort"
	"time"
)

// finLongBound is where a FIN timeout stops looking like "a few seconds".
const finLongBound = time.Minute

// vanishWarnBound is how long a peer that vanished without FIN or RST may hold a session
// before the tcp settings that allow it are worth a warning.
const vanishWarnBound = time.Minute

// loudIdleBound: a half-close trap whose only other bound is longer than
// this (or absent) is the one that took HAProxy setups down.
const loudIdleBound = 30 * time.Minute

type linter struct {
	c    *Config
	m    *meta
	file string
	out  []Warning
}

// lint returns the warnings for a valid config, in file order.
func lint(c *Config, m *meta, file string) []Warning {
	l := &linter{c: c, m: m, file: file}
	l.timeouts("timeouts", c.Timeouts, c.TCP.Client, func(string) bool { return true })
	l.tcp("tcp", c.TCP, func(string) bool { return true })
	for _, name := range m.inFileOrder("clusters", c.ClusterNames()) {
		l.cluster(c.Clusters[name])
	}
	for _, name := range m.inFileOrder("routes", c.RouteNames()) {
		r := c.Routes[name]
		p := "routes." + name
		// A route is judged on its own only for the checks that read a
		// timeout it overrides; inherited values were judged globally.
		l.timeouts(p+".timeouts", r.Timeouts, r.TCP.Client, func(key string) bool { return m.isSet(p + ".timeouts." + key) })
		l.tcp(p+".tcp", r.TCP, func(side string) bool { return tcpSideSet(m, p+".tcp", side) })
		l.route(r)
	}
	sort.SliceStable(l.out, func(i, j int) bool { return l.out[i].Line < l.out[j].Line })
	return l.out
}

func (l *linter) warn(path, format string, args ...any) {
	l.out = append(l.out, Warning{File: l.file, Line: l.m.line(path), Path: path, Message: fmt.Sprintf(format, args...)})
}

// anySet reports whether own says any of keys is set in this scope.
func anySet(own func(string) bool, keys ...string) bool {
	for _, k := range keys {
		if own(k) {
			return true
		}
	}
	return false
}

// timeouts checks one set of timeouts (global, or a route's resolved ones);
// own reports which keys this scope itself sets.
func (l *linter) timeouts(prefix string, t Timeouts, client TCPSide, own func(key string) bool) {
	// The client side of a half-closed session (server gone, client silent)
	// is bounded, without client_fin, only by the client idle timeouts, and
	// both must be on for that bound to hold in every transaction state.
	clientBound := max(t.ClientIdle, t.IdleInTransaction)
	if t.ClientIdle == 0 || t.IdleInTransaction == 0 {
		clientBound = 0
	}
	if t.ClientFin == 0 && anySet(own, "client_fin", "client_idle", "idle_in_transaction") {
		l.finOff(prefix+".client_fin", "client_fin", "the server closes, the client", clientBound, "client_idle/idle_in_transaction")
	}
	// The server side (client gone, server silent) is bounded only by
	// server_idle, which is off by default.
	if t.ServerFin == 0 && anySet(own, "server_fin", "server_idle") {
		l.finOff(prefix+".server_fin", "server_fin", "the client closes, the server", t.ServerIdle, "server_idle")
	}

	for _, f := range []struct {
		key string
		d   Duration
	}{{"client_fin", t.ClientFin}, {"server_fin", t.ServerFin}} {
		if f.d.D() > finLongBound && own(f.key) {
			l.warn(prefix+"."+f.key, "%s is %s: FIN bounds should be seconds (default 5s); a peer that half-closed and went quiet has nothing more to say, and each such session holds a maxconn slot meanwhile", f.key, f.d)
		}
	}

	if t.ClientIdle == 0 && t.IdleInTransaction == 0 && client.KeepaliveIdle == 0 && anySet(own, "client_idle", "idle_in_transaction") {
		l.warn(prefix+".client_idle", "client_idle and idle_in_transaction are both 0 (off) and the clients' TCP keepalive is off (keepalive_idle: 0): idle sessions are unbounded, and a client that vanished without a FIN holds its maxconn slot forever")
	}
}

// tcp warns when a tcp section (global, or a route's on the sides judge names: the sides it
// sets anything of) lets a vanished peer hold a session longer than vanishWarnBound. When both
// sides are too long for the same reason, set by the same key, that is one warning.
func (l *linter) tcp(path string, t TCP, judge func(side string) bool) {
	type finding struct{ who, path, why string }
	var found []finding
	for _, sd := range t.sides() {
		if !judge(sd.key) {
			continue
		}
		s := *sd.side
		bound, ok := s.VanishBound()
		if ok && bound <= vanishWarnBound {
			continue
		}
		key := "keepalive_idle"
		var why string
		switch {
		case s.KeepaliveIdle == 0:
			why = "keepalive is off (keepalive_idle 0), so nothing notices while the session is idle or waits for a query: it is held for ever"
		case s.UserTimeout == 0:
			key = "user_timeout"
			why = "user_timeout is 0 (off), so while data waits for its acknowledgement (a query, a result, a closed receive window) the kernel retransmits for about 15 minutes"
		default:
			if s.UserTimeout.D() > vanishWarnBound {
				key = "user_timeout"
			}
			why = fmt.Sprintf("keepalive (keepalive_idle %s, keepalive_interval %s) and user_timeout (%s) give up on it only after %s", s.KeepaliveIdle, s.KeepaliveInterval, s.UserTimeout, Duration(bound))
		}
		f := finding{who: sd.key, path: tcpPath(l.m, path, sd.key, key), why: why}
		if n := len(found); n > 0 && found[n-1].path == f.path && found[n-1].why == f.why {
			found[n-1].who = "client or server"
			continue
		}
		found = append(found, f)
	}
	for _, f := range found {
		holds := "its session, its backend (and the locks its transaction holds) and a maxconn slot"
		switch f.who {
		case "server":
			holds = "its clients' sessions and maxconn slots"
		case "client or server":
			holds = "a session, its backend (and the locks its transaction holds) and a maxconn slot"
		}
		l.warn(f.path, "a %s that vanishes without FIN or RST (its network torn down, its machine gone) can hold %s for more than a minute: %s; "+
			"keep it under a minute (the defaults give up within 13s: keepalive_idle 5s, keepalive_interval 2s, user_timeout 13s)", f.who, holds, f.why)
	}
}

// finOff warns about a FIN timeout turned off: the HAProxy half-close trap.
func (l *linter) finOff(path, key, who string, bound Duration, boundKeys string) {
	until := fmt.Sprintf("until %s (%s) ends them", boundKeys, bound)
	loud := bound == 0 || bound.D() > loudIdleBound
	if bound == 0 {
		until = fmt.Sprintf("forever, as %s is off too", boundKeys)
	}
	msg := fmt.Sprintf("%s is 0 (off): after %s may never close its side; half-closed sessions can hold maxconn slots %s. "+
		"This is the HAProxy CLOSE_WAIT/FIN_WAIT2 trap", key, who, until)
	if loud {
		msg = "DANGER: " + msg + ", which fills maxconn until every new client is refused"
	}
	l.warn(path, "%s; set %s to a few seconds (default 5s)", msg, key)
}

func (l *linter) route(r *Route) {
	p := "routes." + r.Name
	if r.TLS.Mode == "passthrough" {
		l.warn(p+".tls.mode", "passthrough relays TLS sessions blind, encrypted end to end: for those sessions pgfront cannot route cancel requests, see transactions (no idle_in_transaction bound, no drain at a transaction boundary), fence a standby in-band, or send its own FATAL errors; only TCP bounds (client_idle as inactivity, client_fin, server_fin) apply. Plain-text sessions on this route keep every feature. Use terminate to keep them all")
	}
	if r.OnClientFin == "forward" && r.Timeouts.ServerFin == 0 {
		l.warn(p+".on_client_fin", "on_client_fin is forward and server_fin is 0 (off): after a client half-closes, nothing bounds the wait for the server to close, and the session holds its maxconn slot until it does; set server_fin or use on_client_fin: abort")
	}
	cl := l.c.Clusters[r.Cluster]
	l.failoverWait(r, cl)
	// Learned roles can change at any time: only a static role can be
	// missing for good.
	if cl == nil || !cl.Health.StaticRoles() {
		return
	}
	if _, ok := l.m.lines[p+".max_lag"]; ok {
		l.warn(p+".max_lag", "max_lag has no effect: health.check %s of cluster %q does not measure replication lag (use postgres or patroni)", cl.Health.Check, r.Cluster)
	}
	if r.Role != "primary" && r.Role != "replica" {
		return
	}
	for _, s := range cl.Servers {
		if s.Role == r.Role {
			return
		}
	}
	l.warn(p+".role", "cluster %q has no server with role %s: this route has nowhere to send clients", r.Cluster, r.Role)
}

// patroniElection is how long a default Patroni election takes at least: the leader key's
// ttl.
const patroniElection = 30 * time.Second

// failoverWait warns when a primary route of a Patroni cluster refuses clients before a
// default election can have ended. It points at the route's own failover_wait, or at the
// global one it inherits.
func (l *linter) failoverWait(r *Route, cl *Cluster) {
	if cl == nil || cl.Health.Check != "patroni" || r.Role != "primary" || r.Timeouts.FailoverWait.D() >= patroniElection {
		return
	}
	path := "routes." + r.Name + ".timeouts.failover_wait"
	if _, own := l.m.lines[path]; !own {
		path = "timeouts.failover_wait"
	}
	l.warn(path, "failover_wait is %s on route %s, shorter than a default Patroni election (ttl 30s): clients that arrive when the leader fails are refused with 57P03 before a new one can be elected; the default 35s waits it out",
		r.Timeouts.FailoverWait, r.Name)
}

func (l *linter) cluster(cl *Cluster) {
	p := "clusters." + cl.Name + ".health"
	if cl.Health.StaticRoles() {
		l.warn(p+".check", "health.check is %s: roles are static: pgfront will not follow a failover (a promoted replica keeps its configured role); use postgres or patroni", cl.Health.Check)
	}
	if cl.Health.Password != "" {
		l.warn(p+".password", "a plain-text password in the config file: prefer password_file or password_env")
	}
}
