package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// namePattern is what route, cluster and server names may look like: they
// become metric labels and log fields.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// envName is a portable environment variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

const (
	maxConnectRetries = 10
	maxRiseFall       = 100
	maxJitter         = 0.5
	maxKeepaliveCount = 127                              // TCP_KEEPCNT limit
	maxKeepaliveSecs  = 32767                            // TCP_KEEPIDLE / TCP_KEEPINTVL limit
	maxUserTimeout    = math.MaxInt32 * time.Millisecond // TCP_USER_TIMEOUT is an int of ms
)

type validator struct {
	c  *Config
	m  *meta
	ps *problems
}

// validate checks the defaulted config c and records every problem in ps.
func validate(c *Config, m *meta, ps *problems) {
	v := &validator{c: c, m: m, ps: ps}
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.nonNegative("maxconn", c.MaxConn)
	v.nonNegative("max_queue", c.MaxQueue)
	v.tcp("tcp", c.TCP, func(string) bool { return true })
	v.positive("timeouts.startup", c.Timeouts.Startup)
	v.positive("timeouts.connect", c.Timeouts.Connect)

	if len(c.Clusters) == 0 {
		v.bad("clusters", "at least one cluster is required")
	}
	for _, name := range m.inFileOrder("clusters", c.ClusterNames()) {
		v.cluster(c.Clusters[name])
	}

	if len(c.Routes) == 0 {
		v.bad("routes", "at least one route is required")
	}
	listens := map[string][]listenAddr{} // by port
	for _, name := range m.inFileOrder("routes", c.RouteNames()) {
		v.route(c.Routes[name], listens)
	}
	v.admin(listens)
	v.alerts()
	v.fleet()
}

// admin checks the admin listener: off loopback it needs a token, and it must not take a
// route's address.
func (v *validator) admin(listens map[string][]listenAddr) {
	a := v.c.Admin
	v.oneSource("admin", "read token", "read_token_file", a.ReadTokenFile, "read_token_env", a.ReadTokenEnv)
	v.oneSource("admin", "admin token", "admin_token_file", a.AdminTokenFile, "admin_token_env", a.AdminTokenEnv)
	if a.Listen == "" {
		return
	}
	host, port, err := splitAddr(a.Listen, true)
	if err != nil {
		v.bad("admin.listen", "%v", err)
		return
	}
	tokens := a.ReadTokenFile != "" || a.ReadTokenEnv != "" || a.AdminTokenFile != "" || a.AdminTokenEnv != ""
	if !tokens && !isLoopback(host) {
		v.bad("admin.listen", "%s is not a loopback address: set admin.admin_token_file or admin.admin_token_env (and/or a read token) so the admin API is not open to the network", a.Listen)
	}
	if port != "0" {
		for _, other := range listens[port] {
			if listenClash(host, other.host) {
				v.bad("admin.listen", "listen address %s is already used by route %q", a.Listen, other.route)
				break
			}
		}
	}
}

// isLoopback reports whether a listen host binds loopback only ("localhost" counts).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// oneSource checks a pair of secret sources (a file and an environment variable): each says
// something and at most one is set.
func (v *validator) oneSource(p, what, fileKey, file, envKey, env string) {
	v.notEmpty(p+"."+fileKey, file)
	if v.m.isSet(p+"."+envKey) && !envName.MatchString(env) {
		v.bad(p+"."+envKey, "%q is not an environment variable name (letters, digits and '_', not starting with a digit)", env)
	}
	if v.m.isSet(p+"."+fileKey) && v.m.isSet(p+"."+envKey) {
		v.bad(p+"."+envKey, "%s and %s are both set: give one source of the %s", fileKey, envKey, what)
	}
}

func (v *validator) alerts() {
	a := v.c.Alerts
	v.positive("alerts.sample_interval", a.SampleInterval)
	v.nonNegative("alerts.close_wait", a.CloseWait)
	v.nonNegative("alerts.fin_wait2", a.FinWait2)
	v.nonNegative("alerts.queue", a.Queue)
	if !(a.FDUsage >= 0 && a.FDUsage <= 1) {
		v.bad("alerts.fd_usage", "must be a fraction from 0 to 1 (0 = off), not %g", a.FDUsage)
	}
}

func (v *validator) bad(path, format string, args ...any) {
	v.ps.add(v.m.line(path), path, format, args...)
}

// tcp checks a tcp section's resolved sides: the global one (path "tcp"), or a route's, on the
// sides judge names (a side a route sets nothing of was checked globally).
func (v *validator) tcp(path string, t TCP, judge func(side string) bool) {
	for _, sd := range t.sides() {
		if !judge(sd.key) {
			continue
		}
		s := *sd.side
		at := func(key string) string { return tcpPath(v.m, path, sd.key, key) }
		if s.KeepaliveIdle == 0 {
			if s.KeepaliveCount < 0 || s.KeepaliveCount > maxKeepaliveCount {
				v.bad(at("keepalive_count"), "must be from 0 to %d, not %d", maxKeepaliveCount, s.KeepaliveCount)
			}
		} else {
			v.keepaliveSeconds(at("keepalive_idle"), s.KeepaliveIdle)
			v.keepaliveSeconds(at("keepalive_interval"), s.KeepaliveInterval)
			if s.KeepaliveCount < 1 || s.KeepaliveCount > maxKeepaliveCount {
				v.bad(at("keepalive_count"), "must be from 1 to %d while keepalive is on (keepalive_idle > 0), not %d", maxKeepaliveCount, s.KeepaliveCount)
			}
		}
		if s.UserTimeout.D() > maxUserTimeout {
			v.bad(at("user_timeout"), "must be at most %s", Duration(maxUserTimeout.Truncate(time.Second)))
		}
	}
}

// tcpPath is where a finding about key of side in the tcp section at path is reported: that
// side's key if the file sets it, else the key for both sides if set. A value defaulted or
// inherited is reported as the side's key when the section sets anything for that side alone,
// else as the key for both sides (so both sides' findings are one); either path's line is its
// nearest enclosing node's.
func tcpPath(m *meta, path, side, key string) string {
	own, both := path+"."+side+"."+key, path+"."+key
	switch {
	case m.isSet(own):
		return own
	case m.isSet(both):
		return both
	}
	for _, f := range (&TCPSide{}).fields() {
		if m.isSet(path + "." + side + "." + f.key) {
			return own
		}
	}
	return both
}

// tcpSideSet reports whether the tcp section at path sets any key of side (for it or for both).
func tcpSideSet(m *meta, path, side string) bool {
	for _, f := range (&TCPSide{}).fields() {
		if tcpSet(m.isSet, path, side, f.key) {
			return true
		}
	}
	return false
}

// keepaliveSeconds checks a keepalive time the kernel takes in whole
// seconds, 1..32767.
func (v *validator) keepaliveSeconds(path string, d Duration) {
	switch {
	case d <= 0:
		v.bad(path, "must be greater than 0 while keepalive is on (keepalive_idle > 0)")
	case d.D()%time.Second != 0:
		v.bad(path, "must be whole seconds (the kernel counts keepalive in seconds), not %s", d)
	case d.D() > maxKeepaliveSecs*time.Second:
		v.bad(path, "must be at most %ds, not %s", maxKeepaliveSecs, d)
	}
}

func (v *validator) cluster(cl *Cluster) {
	p := "clusters." + cl.Name
	v.name(p, cl.Name, "cluster")
	if len(cl.Servers) == 0 && cl.DCS == nil {
		v.bad(p+".servers", "cluster %q needs at least one server", cl.Name)
	}
	first := map[string]string{} // server name -> path of its first use
	for i, s := range cl.Servers {
		sp := index(p+".servers", i)
		switch {
		case s.Name == "":
			v.bad(sp+".name", "is required")
		case !namePattern.MatchString(s.Name):
			v.bad(sp+".name", "%q must match %s", s.Name, namePattern)
		case first[s.Name] != "":
			v.bad(sp+".name", "duplicate server name %q in cluster %q (first at %s)", s.Name, cl.Name, first[s.Name])
		default:
			first[s.Name] = sp
		}
		if s.Address == "" {
			v.bad(sp+".address", "is required")
		} else if _, _, err := splitAddr(s.Address, false); err != nil {
			v.bad(sp+".address", "%v", err)
		}
		switch {
		case s.Role != "" || v.m.isSet(sp+".role"):
			v.oneOf(sp+".role", s.Role, "primary", "replica")
		case cl.Health.StaticRoles():
			v.bad(sp+".role", "is required (primary or replica) when health.check is %s: roles are static", cl.Health.Check)
		}
		v.nonNegative(sp+".maxconn", s.MaxConn)
		v.nonNegative(sp+".weight", s.Weight)
		switch {
		case v.m.isSet(sp + ".patroni"):
			if _, _, err := splitAddr(s.Patroni, false); err != nil {
				v.bad(sp+".patroni", "%v", err)
			}
		case cl.Health.Check == "patroni":
			v.bad(sp+".patroni", "is required when health.check is patroni (host:port of this node's Patroni REST API, e.g. 127.0.0.1:8008)")
		}
	}
	v.oneOf(p+".on_marked_down", cl.OnMarkedDown, "shutdown_sessions", "keep")
	v.health(p+".health", cl.Health)
	v.serverTLS(p+".server_tls", cl.ServerTLS)
	v.dcs(p+".dcs", cl)
}

// serverTLS checks a cluster's TLS towards its servers.
func (v *validator) serverTLS(p string, t ServerTLS) {
	v.oneOf(p+".mode", t.Mode, "disable", "prefer", "require", "verify-ca", "verify-full")
	for _, k := range []struct{ key, val string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		v.notEmpty(p+"."+k.key, k.val)
	}
	switch t.Mode {
	case "verify-ca", "verify-full":
		if t.CAFile == "" {
			v.bad(p+".mode", "%s needs ca_file: the roots that sign the servers' certificates", t.Mode)
		}
	case "disable":
		for _, k := range []string{"ca_file", "cert_file", "key_file"} {
			if v.m.isSet(p + "." + k) {
				v.bad(p+"."+k, "has no effect while server_tls.mode is disable")
			}
		}
	default:
		if t.CAFile != "" {
			v.bad(p+".ca_file", "is only used by verify-ca and verify-full (mode %s encrypts without verifying); use mode verify-ca or verify-full", t.Mode)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") && t.Mode != "disable" {
		v.bad(p+".cert_file", "cert_file and key_file go together: give both or neither")
	}
}

// routeTLS checks what a route offers TLS clients.
func (v *validator) routeTLS(p string, t RouteTLS) {
	v.oneOf(p+".mode", t.Mode, "disable", "terminate", "passthrough")
	v.notEmpty(p+".cert_file", t.CertFile)
	v.notEmpty(p+".key_file", t.KeyFile)
	v.notEmpty(p+".client_ca_file", t.ClientCAFile)
	if t.Mode != "terminate" {
		for _, k := range []string{"cert_file", "key_file", "require", "client_ca_file", "sni"} {
			if _, ok := v.m.lines[p+"."+k]; ok {
				v.bad(p+"."+k, "applies only to tls.mode terminate (this route's tls.mode is %s)", t.Mode)
			}
		}
		return
	}
	if t.CertFile == "" || t.KeyFile == "" {
		v.bad(p+".mode", "terminate needs cert_file and key_file: the certificate pgfront shows clients")
	}
	for _, name := range slices.Sorted(maps.Keys(t.SNI)) {
		np := p + ".sni." + name
		cl := t.SNI[name]
		switch {
		case !sniName.MatchString(name):
			v.bad(np, "%q is not a TLS server name (a DNS name such as db1.example.com, lower case, no port)", name)
		case cl == "":
			v.bad(np, "needs a cluster name")
		case v.c.Clusters[cl] == nil:
			v.bad(np, "unknown cluster %q (defined: %s)", cl, strings.Join(v.c.ClusterNames(), ", "))
		}
	}
}

// sniName is what an SNI map key may be: a lower-case DNS name, optionally with a leading
// wildcard label.
var sniName = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (v *validator) health(p string, h Health) {
	v.oneOf(p+".check", h.Check, "postgres", "patroni", "tcp", "none")
	v.positive(p+".interval", h.Interval)
	v.positive(p+".fast_interval", h.FastInterval)
	v.positive(p+".timeout", h.Timeout)
	if h.Interval > 0 && h.FastInterval > h.Interval {
		v.againstInterval(p, "fast_interval", h.FastInterval, h.Interval, "must not be longer than", "is longer than")
	}
	if h.Interval > 0 && h.Timeout > 0 && h.Timeout >= h.Interval {
		v.againstInterval(p, "timeout", h.Timeout, h.Interval, "must be shorter than", "is not shorter than")
	}
	v.between(p+".rise", h.Rise, 1, maxRiseFall)
	v.between(p+".fall", h.Fall, 1, maxRiseFall)
	if !(h.Jitter >= 0 && h.Jitter <= maxJitter) {
		v.bad(p+".jitter", "must be from 0 to %g (a fraction of interval), not %g", maxJitter, h.Jitter)
	}
	v.notEmpty(p+".user", h.User)
	v.notEmpty(p+".database", h.Database)
	v.oneOf(p+".patroni_scheme", h.PatroniScheme, "http", "https")

	// Password sources: each must say something, and only one may be set.
	v.notEmpty(p+".password_file", h.PasswordFile)
	v.notEmpty(p+".password", h.Password)
	if v.m.isSet(p+".password_env") && !envName.MatchString(h.PasswordEnv) {
		v.bad(p+".password_env", "%q is not an environment variable name (letters, digits and '_', not starting with a digit)", h.PasswordEnv)
	}
	var sources []string
	for _, k := range []string{"password_file", "password_env", "password"} {
		if v.m.isSet(p + "." + k) {
			sources = append(sources, k)
		}
	}
	sort.SliceStable(sources, func(i, j int) bool { return v.m.line(p+"."+sources[i]) < v.m.line(p+"."+sources[j]) })
	for _, k := range sources[min(1, len(sources)):] {
		v.bad(p+"."+k, "%s and %s are both set: give one password source (password_file, password_env or password)", sources[0], k)
	}
}

// againstInterval reports a health duration (key, d) that breaks its bound
// against the interval. When the file left key at its default, the
// interval is what changed, so the message points at the interval's line.
// rule says what key must be, broken what it is.
func (v *validator) againstInterval(p, key string, d, interval Duration, rule, broken string) {
	path := p + "." + key
	if v.m.isSet(path) || !v.m.isSet(p+".interval") {
		v.bad(path, "%s interval (%s), not %s", rule, interval, d)
		return
	}
	v.ps.add(v.m.line(p+".interval"), path, "is %s (the default), which %s interval (%s): set %s too", d, broken, interval, key)
}

// listenAddr is a route's listen host, remembered to find clashes.
type listenAddr struct {
	host, route string
}

func (v *validator) route(r *Route, listens map[string][]listenAddr) {
	p := "routes." + r.Name
	v.name(p, r.Name, "route")

	if r.Listen == "" {
		v.bad(p+".listen", "is required")
	} else if host, port, err := splitAddr(r.Listen, true); err != nil {
		v.bad(p+".listen", "%v", err)
	} else if port != "0" { // port 0 picks a free port: never a clash
		for _, other := range listens[port] {
			if listenClash(host, other.host) {
				v.bad(p+".listen", "listen address %s is already used by route %q", r.Listen, other.route)
				break
			}
		}
		listens[port] = append(listens[port], listenAddr{host: host, route: r.Name})
	}

	switch {
	case r.Cluster == "":
		v.bad(p+".cluster", "is required")
	case v.c.Clusters[r.Cluster] == nil && len(v.c.Clusters) == 0:
		v.bad(p+".cluster", "unknown cluster %q (no clusters are defined)", r.Cluster)
	case v.c.Clusters[r.Cluster] == nil:
		v.bad(p+".cluster", "unknown cluster %q (defined: %s)", r.Cluster, strings.Join(v.c.ClusterNames(), ", "))
	}
	v.oneOf(p+".role", r.Role, "primary", "replica", "any")
	v.oneOf(p+".balance", r.Balance, "first", "roundrobin", "leastconn")
	v.oneOf(p+".on_client_fin", r.OnClientFin, "abort", "forward")
	v.nonNegative(p+".maxconn", r.MaxConn)
	v.tcp(p+".tcp", r.TCP, func(side string) bool { return tcpSideSet(v.m, p+".tcp", side) })
	if r.ConnectRetries < 0 || r.ConnectRetries > maxConnectRetries {
		v.bad(p+".connect_retries", "must be from 0 to %d, not %d", maxConnectRetries, r.ConnectRetries)
	}
	// Lag bounds and fallback describe how replicas qualify.
	switch r.Role {
	case "replica":
		v.oneOf(p+".fallback", r.Fallback, "primary", "none")
		if cl := v.c.Clusters[r.Cluster]; r.SyncStandbyOnly && cl != nil && cl.Health.Check != "patroni" {
			v.bad(p+".sync_standby_only", "needs health.check patroni in cluster %q (only Patroni says which replicas are synchronous standbys; with check %s the route would never have a server)",
				r.Cluster, cl.Health.Check)
		}
	case "primary", "any":
		for _, k := range []string{"max_lag", "fallback", "sync_standby_only"} {
			if _, ok := v.m.lines[p+"."+k]; ok {
				v.bad(p+"."+k, "applies only to replica routes (this route's role is %s)", r.Role)
			}
		}
	}
	v.routeTLS(p+".tls", r.TLS)
	if r.ProxyProtocol != nil {
		// An entry that failed to decode was reported already.
		if _, listed := v.m.lines[p+".proxy_protocol.trusted[0]"]; !listed {
			v.bad(p+".proxy_protocol.trusted", "lists no network: name the load balancers' source networks (a route that trusts none would refuse every client)")
		}
	}
	// Inherited values were checked once, globally.
	if v.m.isSet(p + ".timeouts.startup") {
		v.positive(p+".timeouts.startup", r.Timeouts.Startup)
	}
	if v.m.isSet(p + ".timeouts.connect") {
		v.positive(p+".timeouts.connect", r.Timeouts.Connect)
	}
}

func (v *validator) name(path, name, what string) {
	if !namePattern.MatchString(name) {
		v.bad(path, "%s name %q must match %s", what, name, namePattern)
	}
}

// oneOf checks an enumerated string; "" that the file did not set means
// the field is missing.
func (v *validator) oneOf(path, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	if val == "" && !v.m.isSet(path) {
		v.bad(path, "is required (%s)", orList(allowed))
		return
	}
	v.bad(path, "must be %s, not %q", orList(allowed), val)
}

func (v *validator) between(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.bad(path, "must be from %d to %d, not %d", lo, hi, n)
	}
}

// notEmpty rejects a string the file set to "" where "" means nothing.
func (v *validator) notEmpty(path, s string) {
	if s == "" && v.m.isSet(path) {
		v.bad(path, "must not be empty (leave the key out instead)")
	}
}

func (v *validator) nonNegative(path string, n int) {
	if n < 0 {
		v.bad(path, "must not be negative, not %d", n)
	}
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.bad(path, "must be greater than 0")
	}
}

// orList renders "a", "a or b", "a, b or c".
func orList(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// splitAddr checks a host:port. A server address needs a host; a listen
// address may leave it empty (all interfaces) and use port 0 (a free port).
func splitAddr(addr string, listen bool) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("must be host:port, e.g. 127.0.0.1:5432, not %q", addr)
	}
	if !listen && host == "" {
		return "", "", fmt.Errorf("%q needs a host", addr)
	}
	lo := 1
	if listen {
		lo = 0
	}
	n, err := strconv.Atoi(port)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" || n < lo || n > 65535 {
		return "", "", fmt.Errorf("port of %q must be a number from %d to 65535", addr, lo)
	}
	return host, strconv.Itoa(n), nil
}

// listenClash reports whether listeners on hosts a and b with the same port
// cannot both bind: the same host, or a wildcard that covers the other.
func listenClash(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	return a == b || wildcardCovers(a, b) || wildcardCovers(b, a)
}

func wildcardCovers(w, h string) bool {
	switch w {
	case "", "::": // Go listens dual-stack on these
		return true
	case "0.0.0.0":
		ip := net.ParseIP(h)
		return ip == nil || ip.To4() != nil // a host name may resolve to IPv4
	}
	return false
}

// inFileOrder sorts the names under prefix (clusters, routes) by the line
// they appear on, so problems read top to bottom.
func (m *meta) inFileOrder(prefix string, names []string) []string {
	out := append([]string(nil), names...)
	sort.SliceStable(out, func(i, j int) bool {
		return m.lines[join(prefix, out[i])] < m.lines[join(prefix, out[j])]
	})
	return out
}
