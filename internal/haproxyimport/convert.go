package haproxyimport

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/config"
)

// item is one key of the output: its YAML value, the HAProxy lines it comes from (its
// comment) and, when the meaning differs from HAProxy's, why (a comment line above it).
type item struct {
	key, value string
	srcs       []src
	why        string
}

type outServer struct {
	items []item // name, address, maxconn, weight, patroni
}

type outCluster struct {
	name    string
	items   []item // on_marked_down
	health  []item
	servers []*outServer
	why     string
}

type outRoute struct {
	name     string
	items    []item
	maxLag   []item
	timeouts []item
	why      string
}

// output is the pgfront config to write.
type output struct {
	top      []item // maxconn
	timeouts []item
	admin    []item
	clusters []*outCluster
	routes   []*outRoute
}

// route is a listener being mapped: its frontend side (bind, client timeouts, maxconn) and
// backend side (servers, check, balance, server timeouts); both are the same listen section
// or a frontend and its default_backend.
type route struct {
	name    string
	fe, be  *proxy
	listen  bindSpec
	role    string
	roleWhy string
	lag     string
	servers []*serverSpec
	cluster *cluster
}

// cluster gathers the routes that share servers.
type cluster struct {
	name    string
	routes  []*route
	servers []*clServer
}

// clServer is one server of a cluster, gathered from every section that lists it.
type clServer struct {
	name  string
	addr  address
	specs []*serverSpec
}

// Patroni's health endpoints, by the role pgfront gives the route.
var patroniRoles = map[string]struct{ role, why string }{
	"/":           {"primary", "Patroni answers 200 on / only on the primary"},
	"/primary":    {"primary", ""},
	"/master":     {"primary", ""},
	"/read-write": {"primary", ""},
	"/leader":     {"primary", "Patroni's /leader also answers on a standby cluster's leader, which pgfront counts as a replica"},
	"/replica":    {"replica", "Patroni's /replica also leaves out members tagged noloadbalance; pgfront reads roles only, so drain such a member with `pgfront ctl server CLUSTER/NAME drain`"},
	"/read-only":  {"any", "Patroni's /read-only answers on the replicas and on the primary: role any uses every member that is up. For the replicas first, with the primary as a fallback, use role: replica"},
	"/health":     {"any", "Patroni's /health answers on every member running PostgreSQL: role any uses every member that is up"},
}

// sizeValue is a byte count pgfront's max_lag.bytes reads, as Patroni's lag parameter also
// writes it (16kB, 64MB, 1GB: 1024-based).
var sizeValue = regexp.MustCompile(`^[0-9]{1,15}(B|kB|MB|GB)?$`)

// minute is where a FIN bound stops looking like "a few seconds": the same line as
// `pgfront check` draws.
const minute = time.Minute

func convert(cfg *haConfig, ps *problems, ns *notes) *output {
	o := &output{}
	if cfg.maxconn.set {
		o.top = append(o.top, item{key: "maxconn", value: strconv.Itoa(cfg.maxconn.v), srcs: []src{cfg.maxconn.src},
			why: whyIf(cfg.maxconn.v == 0, "maxconn 0: HAProxy then derives a limit from the open-files limit; 0 is unlimited in pgfront")})
	}
	routes := routesOf(cfg, ps, ns)
	if len(routes) == 0 {
		return o
	}
	clusters := clustersOf(routes, ns)
	for _, c := range clusters {
		o.clusters = append(o.clusters, c.output(ns))
	}
	for _, r := range routes {
		o.routes = append(o.routes, r.output(ns))
	}
	o.globalTimeouts()
	o.adminListen(routes)
	return o
}

func whyIf(cond bool, why string) string {
	if cond {
		return why
	}
	return ""
}

// routesOf picks the listen and frontend sections that map to routes.
func routesOf(cfg *haConfig, ps *problems, ns *notes) []*route {
	var out []*route
	used := map[*proxy]bool{}
	names := map[string]bool{}
	for _, p := range cfg.proxies {
		if p.kind == "backend" {
			continue
		}
		be := p
		if p.kind == "frontend" {
			if !p.defaultBackend.set {
				ns.skip(p.head, "a frontend without default_backend: pgfront routes by listener only (use_backend rules are not mapped)")
				continue
			}
			be = cfg.byName[p.defaultBackend.v]
			if be == nil || be.kind == "frontend" {
				ps.add(p.defaultBackend.src.n, "default_backend %s: no backend or listen section of that name", printable(p.defaultBackend.v))
				continue
			}
			used[be] = true
		}
		if r := newRoute(p, be, ns); r != nil {
			r.name = pgName(p.name)
			for names[r.name] {
				r.name += "_"
			}
			names[r.name] = true
			out = append(out, r)
		}
	}
	for _, p := range cfg.proxies {
		if p.kind == "backend" && !used[p] {
			ns.skip(p.head, "no frontend's default_backend names this backend")
		}
	}
	// Two routes on one address: HAProxy would split the clients between them (SO_REUSEPORT);
	// pgfront refuses such a config.
	for i, a := range out {
		for _, b := range out[:i] {
			if a.listen.addr.port == b.listen.addr.port && (a.listen.addr.host == b.listen.addr.host || wildcard(a.listen.addr.host) || wildcard(b.listen.addr.host)) {
				ps.add(a.listen.src.n, "%s: port %d is also bound by %s (line %d): pgfront listens once per address", a.fe, a.listen.addr.port, b.fe, b.listen.src.n)
			}
		}
	}
	return out
}

func wildcard(host string) bool { return host == "0.0.0.0" || host == "::" }

// newRoute maps a proxy pair, or notes why it cannot.
func newRoute(fe, be *proxy, ns *notes) *route {
	switch {
	case fe.disabled != nil:
		ns.skip(*fe.disabled, "%s is disabled", fe)
		return nil
	case be.disabled != nil:
		ns.skip(*be.disabled, "%s is disabled", be)
		return nil
	case fe.stats != nil && len(be.servers) == 0:
		ns.skip(fe.head, "%s", proxyWhy["stats"])
		return nil
	}
	for _, p := range []*proxy{fe, be} {
		if p.mode.set && p.mode.v != "tcp" {
			ns.skip(p.mode.src, "%s is not a TCP proxy: pgfront relays PostgreSQL", p)
			return nil
		}
	}
	if len(fe.binds) == 0 {
		ns.skip(fe.head, "no TCP bind: it serves no clients")
		return nil
	}
	r := &route{fe: fe, be: be, listen: fe.binds[0]}
	for _, b := range fe.binds[1:] {
		ns.skip(b.src, "%s: pgfront listens on one address per route (the first, %s); add a route for %s", fe, fe.binds[0].addr, b.addr)
	}
	c := be.check
	switch {
	case c.kind == "":
		ns.skip(be.head, "%s has no HTTP health check: pgfront cannot tell which role it serves. Add it by hand as a route with role primary, replica or any", be)
		return nil
	case c.kind != "httpchk":
		ns.skip(c.src, "%s checks with %s, not a Patroni endpoint: pgfront cannot tell which role it serves. Add it by hand as a route with role primary, replica or any (health.check postgres learns roles by logging in)", be, c.kind)
		return nil
	}
	path, query, _ := strings.Cut(c.uri, "?")
	pr, ok := patroniRoles[path]
	if !ok {
		ns.skip(c.src, "%s is not a Patroni health endpoint pgfront maps (/primary, /master, /leader, /read-write, /replica, /read-only, /health)", printable(c.uri))
		return nil
	}
	r.role, r.roleWhy = pr.role, pr.why
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			ns.skip(c.src, "the query of %s is not mapped: %v", printable(c.uri), err)
		}
		for _, k := range slices.Sorted(maps.Keys(q)) {
			v := q[k]
			switch {
			case k == "lag" && r.role == "replica" && len(v) == 1 && sizeValue.MatchString(v[0]):
				r.lag = v[0]
			case k == "lag":
				ns.skip(c.src, "lag=%s: pgfront bounds a replica route's lag with max_lag.bytes (a byte count, or with a unit B, kB, MB or GB)", printable(strings.Join(v, ",")))
			default:
				ns.skip(c.src, "%s=%s: no pgfront equivalent (pgfront reads each member's role, not its tags or replication state)", printable(k), printable(strings.Join(v, ",")))
			}
		}
	}
	for _, s := range be.servers {
		switch _, port := s.params["port"]; {
		case s.params["disabled"].src.n != 0:
			ns.skip(s.src, "server %s is disabled: not mapped (add it to the cluster when it serves)", printable(s.name))
			continue
		case !port:
			ns.skip(s.src, "server %s has no check port: its checks go to its PostgreSQL port, so its Patroni REST API is unknown (write port 8008)", printable(s.name))
			continue
		}
		if _, ok := s.params["check"]; !ok {
			ns.skip(s.src, "server %s has no check: HAProxy never checked it, pgfront will (through Patroni)", printable(s.name))
		}
		for _, kw := range slices.Sorted(maps.Keys(s.params)) {
			if !serverMapped[kw] {
				ns.skip(s.params[kw].src, "%s: %s", kw, serverWhy(kw))
			}
		}
		if p, ok := s.params["backup"]; ok {
			ns.skip(p.src, "backup: pgfront has no backup servers: %s serves like the others", printable(s.name))
		}
		r.servers = append(r.servers, s)
	}
	if len(r.servers) == 0 {
		ns.skip(be.head, "%s has no server left to map", be)
		return nil
	}
	return r
}

// serverWhy says why a server keyword is not mapped.
func serverWhy(kw string) string {
	switch kw {
	case "downinter":
		return "pgfront checks a down server at health.interval (and at fast_interval while it changes state)"
	case "on-marked-up":
		return "pgfront has no backup servers whose sessions a recovered server would take over"
	case "slowstart":
		return "pgfront has no slow start"
	case "maxqueue":
		return "pgfront queues per route and globally (max_queue), not per server"
	case "ssl", "crt", "ca-file", "sni", "verifyhost", "ciphers", "ssl-min-ver", "ssl-max-ver", "alpn":
		return "TLS to the servers is the cluster's server_tls (mode, ca_file, cert_file, key_file), negotiated the PostgreSQL way"
	case "send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn", "proxy-v2-options":
		return "pgfront does not send the PROXY protocol (PostgreSQL does not read it)"
	case "resolvers", "resolve-prefer", "resolve-opts", "resolve-net", "init-addr":
		return "pgfront resolves server names when it connects"
	case "agent-check", "agent-send", "agent-inter", "agent-addr", "agent-port":
		return "pgfront has no agent checks"
	}
	return "no pgfront equivalent"
}

// clustersOf groups routes that share a server (by address) into clusters.
func clustersOf(routes []*route, ns *notes) []*cluster {
	var out []*cluster
	byAddr := map[string]*cluster{}
	for _, r := range routes {
		var c *cluster
		for _, s := range r.servers {
			if other := byAddr[s.addr.String()]; other != nil && other != c {
				if c == nil {
					c = other
					continue
				}
				// r joins two clusters: merge other into c
				c.routes = append(c.routes, other.routes...)
				for _, rr := range other.routes {
					for _, ss := range rr.servers {
						byAddr[ss.addr.String()] = c
					}
				}
				out = slices.DeleteFunc(out, func(x *cluster) bool { return x == other })
			}
		}
		if c == nil {
			c = &cluster{}
			out = append(out, c)
		}
		c.routes = append(c.routes, r)
		for _, s := range r.servers {
			byAddr[s.addr.String()] = c
		}
	}
	for i, c := range out {
		slices.SortStableFunc(c.routes, func(a, b *route) int { return a.fe.head.n - b.fe.head.n })
		c.name = "main"
		if len(out) > 1 {
			c.name = c.routes[0].name
			if i == 0 {
				ns.skip(c.routes[0].fe.head, "the sections share no server: pgfront gets one cluster per group of sections that do, each named after its first route")
			}
		}
		names := map[string]*clServer{}
		index := map[string]*clServer{}
		for _, r := range c.routes {
			r.cluster = c
			for _, s := range r.servers {
				key := s.addr.String()
				cs := index[key]
				if cs == nil {
					name := pgName(s.name)
					for names[name] != nil {
						name += "_"
					}
					cs = &clServer{name: name, addr: s.addr}
					names[name], index[key] = cs, cs
					c.servers = append(c.servers, cs)
				}
				cs.specs = append(cs.specs, s)
			}
		}
	}
	return out
}

// agreed is one server parameter over all the server lines of a cluster.
type agreed struct {
	v    string // "" when absent
	srcs []src
}

// agree reads parameter kw over every server line of the cluster: the first line's value,
// noting when the lines disagree (pgfront has one health section per cluster).
func (c *cluster) agree(kw string, ns *notes) agreed {
	var a agreed
	var values []string
	first := true
	for _, cs := range c.servers {
		for _, s := range cs.specs {
			p, ok := s.params[kw]
			v := p.v
			if ok && v == "" {
				v = "yes" // a flag
			}
			if first {
				a.v, first = v, false
			}
			if !slices.Contains(values, v) {
				values = append(values, v)
			}
			if ok && v == a.v && !slices.Contains(a.srcs, p.src) {
				a.srcs = append(a.srcs, p.src)
			}
		}
	}
	if len(values) > 1 {
		for i, v := range values {
			if v == "" {
				values[i] = "(not set)"
			}
		}
		ns.skip(c.servers[0].specs[0].src, "%s differs between the servers of cluster %s (%s): pgfront has one health setting per cluster, the first server's is used", kw, c.name, strings.Join(values, ", "))
	}
	return a
}

func (c *cluster) output(ns *notes) *outCluster {
	oc := &outCluster{name: c.name}
	first := c.routes[0].be.check
	oc.health = append(oc.health, item{key: "check", value: "patroni", srcs: []src{first.src},
		why: "HAProxy asked each member's Patroni REST API (the check port) whether it serves the listener's role; pgfront reads each member's role from the same API and routes by role"})

	interval := 2 * time.Second // HAProxy's and pgfront's default inter
	if a := c.agree("inter", ns); a.v != "" {
		d, _, _ := parseTime(a.v)
		if d > 0 {
			interval = d
			oc.health = append(oc.health, item{key: "interval", value: config.Duration(d).String(), srcs: a.srcs})
		} else {
			ns.skip(a.srcs[0], "inter 0: pgfront's health.interval must be greater than 0, its default 2s applies")
		}
	}
	fast := 500 * time.Millisecond
	if a := c.agree("fastinter", ns); a.v != "" {
		d, _, _ := parseTime(a.v)
		if d == 0 {
			ns.skip(a.srcs[0], "fastinter 0: pgfront's health.fast_interval must be greater than 0, its default applies")
		}
		if d > 0 {
			why := ""
			if d > interval {
				why = fmt.Sprintf("fastinter %s is longer than inter: pgfront's fast_interval must not be, so it is inter's %s", config.Duration(d), config.Duration(interval))
				d = interval
			}
			fast = d
			oc.health = append(oc.health, item{key: "fast_interval", value: config.Duration(d).String(), srcs: a.srcs, why: why})
		}
	}
	if fast > interval {
		oc.health = append(oc.health, item{key: "fast_interval", value: config.Duration(interval).String(),
			why: "pgfront's default fast_interval (500ms) must not be longer than interval"})
	}
	timeoutSet := false
	var checkSrcs []src
	var check time.Duration
	for _, r := range c.routes {
		if t := r.be.timeouts["check"]; t.set {
			if !slices.Contains(checkSrcs, t.src) {
				checkSrcs = append(checkSrcs, t.src)
			}
			if len(checkSrcs) == 1 {
				check = t.d
			}
		}
	}
	switch {
	case len(checkSrcs) == 0:
	case check == 0:
		ns.skip(checkSrcs[0], "timeout check 0 is no timeout: pgfront bounds each check with health.timeout (default 1s)")
	case check >= interval:
		ns.skip(checkSrcs[0], "not shorter than inter (%s): pgfront's health.timeout must be shorter than interval, its default 1s applies", config.Duration(interval))
	default:
		timeoutSet = true
		oc.health = append(oc.health, item{key: "timeout", value: config.Duration(check).String(), srcs: checkSrcs,
			why: whyIf(len(checkSrcs) > 1, "the sections of this cluster differ in timeout check: the first is used")})
	}
	if !timeoutSet && time.Second >= interval {
		oc.health = append(oc.health, item{key: "timeout", value: config.Duration(interval / 2).String(),
			why: "pgfront's default health.timeout (1s) must be shorter than interval"})
	}
	for _, k := range []struct{ haproxy, key string }{{"rise", "rise"}, {"fall", "fall"}} {
		a := c.agree(k.haproxy, ns)
		switch n, err := strconv.Atoi(a.v); {
		case a.v == "" && k.key == "fall":
			oc.health = append(oc.health, item{key: "fall", value: "3", why: "HAProxy's default fall is 3 (pgfront's is 2): kept"})
		case a.v == "":
		case err != nil || n < 1 || n > 100:
			ns.skip(a.srcs[0], "%s %s: pgfront's %s is from 1 to 100, its default applies", k.haproxy, a.v, k.key)
		default:
			oc.health = append(oc.health, item{key: k.key, value: a.v, srcs: a.srcs})
		}
	}
	if a := c.agree("check-ssl", ns); a.v != "" {
		oc.health = append(oc.health, item{key: "patroni_scheme", value: "https", srcs: a.srcs})
		if v := c.agree("verify", ns); v.v == "none" {
			ns.skip(v.srcs[0], "verify none: pgfront verifies the Patroni API's certificate against the system's roots")
		}
	}
	switch a := c.agree("on-marked-down", ns); a.v {
	case "shutdown-sessions":
		oc.items = append(oc.items, item{key: "on_marked_down", value: "shutdown_sessions", srcs: a.srcs})
	default:
		ns.skip(c.routes[0].be.head, "no on-marked-down shutdown-sessions: HAProxy kept the sessions of a server marked down (an old primary's among them); pgfront's default on_marked_down shutdown_sessions ends them with a clear error. Set on_marked_down: keep for HAProxy's behaviour")
	}

	for _, cs := range c.servers {
		s := &outServer{}
		s.items = append(s.items, item{key: "name", value: yamlString(cs.name), srcs: []src{cs.specs[0].src},
			why: whyIf(cs.name != cs.specs[0].name, fmt.Sprintf("HAProxy's name %q is not a pgfront name (letters, digits, '_', '.', '-', unique in the cluster)", printable(cs.specs[0].name)))})
		s.items = append(s.items, item{key: "address", value: yamlString(cs.addr.String())})
		maxconn, var2 := 0, false
		var mcSrcs []src
		for _, sp := range cs.specs {
			if p, ok := sp.params["maxconn"]; ok {
				n, _ := strconv.Atoi(p.v)
				if len(mcSrcs) > 0 && n != maxconn {
					var2 = true
				}
				maxconn = max(maxconn, n)
				if !slices.Contains(mcSrcs, p.src) {
					mcSrcs = append(mcSrcs, p.src)
				}
			}
		}
		if maxconn > 0 {
			why := ""
			if len(cs.specs) > 1 {
				why = "HAProxy counted maxconn per section; pgfront counts one limit per server across routes"
				if var2 {
					why += ": the largest is used"
				}
			}
			s.items = append(s.items, item{key: "maxconn", value: strconv.Itoa(maxconn), srcs: mcSrcs, why: why})
		}
		var weight *param
		for _, sp := range cs.specs {
			p, ok := sp.params["weight"]
			switch {
			case !ok:
			case weight == nil:
				weight = &p
			case p.v != weight.v:
				ns.skip(p.src, "weight %s: server %s has weight %s before; pgfront has one weight per server, the first is used", p.v, printable(sp.name), weight.v)
			}
		}
		if weight != nil {
			s.items = append(s.items, item{key: "weight", value: weight.v, srcs: []src{weight.src}})
		}
		host := cs.addr.host
		var psrcs []src
		if p, ok := cs.specs[0].params["addr"]; ok {
			host = p.v
			psrcs = append(psrcs, p.src)
		}
		port := cs.specs[0].params["port"]
		if !slices.Contains(psrcs, port.src) {
			psrcs = append(psrcs, port.src)
		}
		n, _ := strconv.Atoi(port.v)
		patroni := address{host, n}
		for _, sp := range cs.specs[1:] {
			h := sp.addr.host
			if p, ok := sp.params["addr"]; ok {
				h = p.v
			}
			if pn, _ := strconv.Atoi(sp.params["port"].v); (address{h, pn}) != patroni {
				ns.skip(sp.src, "server %s is checked at %s here and at %s before: pgfront uses the first", printable(sp.name), address{h, pn}, patroni)
			}
		}
		s.items = append(s.items, item{key: "patroni", value: yamlString(patroni.String()), srcs: psrcs})
		oc.servers = append(oc.servers, s)
	}
	return oc
}

func (r *route) output(ns *notes) *outRoute {
	or := &outRoute{name: r.name}
	or.items = append(or.items,
		item{key: "listen", value: yamlString(r.listen.addr.String()), srcs: []src{r.listen.src}},
		item{key: "cluster", value: yamlString(r.cluster.name)},
		item{key: "role", value: r.role, srcs: []src{r.be.check.src}, why: r.roleWhy})
	if b := r.be.balance; b.set {
		algo, _, _ := strings.Cut(b.v, "(")
		switch algo {
		case "roundrobin", "leastconn", "first":
			or.items = append(or.items, item{key: "balance", value: algo, srcs: []src{b.src}})
		case "static-rr":
			or.items = append(or.items, item{key: "balance", value: "roundrobin", srcs: []src{b.src}, why: "static-rr: pgfront's roundrobin also follows the servers' weights"})
		default:
			ns.skip(b.src, "pgfront balances by first, roundrobin or leastconn: its default applies (first for role primary, roundrobin otherwise)")
		}
	}
	if m := r.fe.maxconn; m.set && m.v > 0 {
		or.items = append(or.items, item{key: "maxconn", value: strconv.Itoa(m.v), srcs: []src{m.src},
			why: "HAProxy leaves connections over a frontend's maxconn in the kernel's accept queue; pgfront queues them for timeouts.queue, then refuses them with FATAL 53300"})
	}
	if rt := r.be.retries; rt.set {
		n := min(rt.v, 10)
		why := "HAProxy retried a failed connect on the same server"
		if r.be.redispatch.set && r.be.redispatch.v == "yes" {
			why += " (option redispatch: the last retry on another)"
		}
		why += "; pgfront tries the next eligible server instead"
		if rt.v > 10 {
			why += ", at most 10 times"
		}
		srcs := []src{rt.src}
		if r.be.redispatch.set {
			srcs = append(srcs, r.be.redispatch.src)
		}
		or.items = append(or.items, item{key: "connect_retries", value: strconv.Itoa(n), srcs: srcs, why: why})
	}
	if r.lag != "" {
		or.maxLag = append(or.maxLag, item{key: "bytes", value: yamlString(r.lag), srcs: []src{r.be.check.src}, why: "Patroni's lag parameter"})
	}
	var listed []string
	for _, s := range r.servers {
		listed = append(listed, s.addr.String())
	}
	for _, cs := range r.cluster.servers {
		if !slices.Contains(listed, cs.addr.String()) {
			or.why = fmt.Sprintf("HAProxy sent this listener's clients to its own servers only; pgfront's route uses every server of cluster %s that has the role", r.cluster.name)
			ns.skip(r.fe.head, "%s", or.why)
			break
		}
	}
	or.timeouts = r.timeouts(ns)
	return or
}

// timeouts maps a route's HAProxy timeouts, in pgfront's schema order.
func (r *route) timeouts(ns *notes) []item {
	fe, be := r.fe, r.be
	var out []item
	add := func(key string, d time.Duration, srcs []src, why string) {
		out = append(out, item{key: key, value: config.Duration(d).String(), srcs: srcs, why: why})
	}

	connect := be.timeouts["connect"]
	switch {
	case connect.set && connect.d > 0:
		add("connect", connect.d, []src{connect.src}, "")
	case connect.set:
		ns.skip(connect.src, "timeout connect 0 is no timeout: pgfront's connect must be greater than 0, its default 3s applies")
	default:
		ns.skip(be.head, "no timeout connect: HAProxy waits for ever for a server; pgfront's default connect 3s applies")
	}
	switch q := be.timeouts["queue"]; {
	case q.set && q.d > 0:
		add("queue", q.d, []src{q.src}, "")
	case q.set:
		ns.skip(q.src, "timeout queue 0 is no timeout in HAProxy but refuses at once in pgfront: its default queue 5s applies")
	case connect.set && connect.d > 0:
		add("queue", connect.d, []src{connect.src}, "HAProxy bounds the queue with timeout connect when timeout queue is not set")
	}

	// Idle: HAProxy (mode tcp) ends a connection silent both ways after the shorter of the
	// client and server timeouts, or after timeout tunnel, which replaces both.
	client, server, tunnel := fe.timeouts["client"], be.timeouts["server"], be.timeouts["tunnel"]
	var cands []timeVal
	if tunnel.set {
		cands = []timeVal{tunnel}
	} else {
		for _, t := range []timeVal{client, server} {
			if t.set {
				cands = append(cands, t)
			}
		}
	}
	if len(cands) == 0 {
		ns.skip(fe.head, "no timeout client or timeout server: HAProxy never ends an idle connection; pgfront's defaults apply (client_idle 1h, idle_in_transaction 10m, server_idle 0: off)")
	} else {
		idle := time.Duration(0)
		for _, t := range cands {
			if t.d > 0 && (idle == 0 || t.d < idle) {
				idle = t.d
			}
		}
		var srcs []src
		for _, t := range cands {
			if t.d == idle {
				srcs = append(srcs, t.src)
			}
		}
		why := "HAProxy (mode tcp) ends a connection that is silent both ways after the shorter of timeout client and timeout server, whatever the session is doing. pgfront bounds each state on its own: idle (client_idle), idle inside a transaction (idle_in_transaction, pgfront's default 10m) and a running query (server_idle, pgfront's default 0: long queries are legal). All three keep HAProxy's bound; shorten idle_in_transaction, or set server_idle: 0, as your applications allow"
		if tunnel.set {
			why = "timeout tunnel replaces timeout client and timeout server once a TCP connection is established. " + why
		}
		if idle == 0 {
			why = "HAProxy's 0 is no timeout: pgfront's 0 turns these bounds off too (TCP keepalive still finds vanished peers)"
		}
		add("client_idle", idle, srcs, why)
		add("idle_in_transaction", idle, srcs, "")
		add("server_idle", idle, srcs, "")
	}

	// FIN: without client-fin/server-fin HAProxy keeps a half-closed connection for the whole
	// client/server (or tunnel) timeout: the trap.
	for _, f := range []struct {
		key, fin, other, side, closed string
		own                           *proxy
		plain                         timeVal
	}{
		{"client_fin", "client-fin", "client", "client", "server", fe, client},
		{"server_fin", "server-fin", "server", "server", "client", be, server},
	} {
		if t := f.own.timeouts[f.fin]; t.set {
			add(f.key, t.d, []src{t.src}, whyIf(t.d == 0, "HAProxy's 0 is no timeout: pgfront's 0 turns the bound off too (pgfront check warns)"))
			continue
		}
		eff := f.plain
		if tunnel.set {
			eff = tunnel
		}
		const trap = "the CLOSE_WAIT/FIN_WAIT2 trap that fills maxconn with dead sessions; pgfront bounds it with %s, 5s by default, which the import keeps"
		switch {
		case !eff.set:
			ns.warn(f.own.head, "no timeout %s and no timeout %s: HAProxy keeps a %s connection whose %s has closed for ever, "+trap, f.other, f.fin, f.side, f.closed, f.key)
		case eff.d == 0:
			ns.warn(eff.src, "0 is no timeout, and there is no timeout %s: HAProxy keeps a %s connection whose %s has closed for ever, "+trap, f.fin, f.side, f.closed, f.key)
		case eff.d > minute:
			ns.warn(eff.src, "no timeout %s: HAProxy keeps a %s connection whose %s has closed for the whole %s, "+trap, f.fin, f.side, f.closed, config.Duration(eff.d), f.key)
		}
	}
	return out
}

// globalTimeouts moves the timeouts every route maps the same way to the global section.
func (o *output) globalTimeouts() {
	for _, key := range []string{"connect", "queue", "client_idle", "idle_in_transaction", "server_idle", "client_fin", "server_fin"} {
		var first *item
		same := true
		for _, r := range o.routes {
			i := slices.IndexFunc(r.timeouts, func(it item) bool { return it.key == key })
			if i < 0 {
				same = false
				break
			}
			it := r.timeouts[i]
			if first == nil {
				first = &it
			} else if it.value != first.value || !slices.Equal(it.srcs, first.srcs) {
				same = false
			}
		}
		if !same || first == nil {
			continue
		}
		o.timeouts = append(o.timeouts, *first)
		for _, r := range o.routes {
			r.timeouts = slices.DeleteFunc(r.timeouts, func(it item) bool { return it.key == key })
		}
	}
}

// adminListen moves the admin listener off a port a route listens on.
func (o *output) adminListen(routes []*route) {
	const host = "127.0.0.1"
	port := 9187
	taken := func(p int) bool {
		return slices.ContainsFunc(routes, func(r *route) bool {
			a := r.listen.addr
			return a.port == p && (a.host == host || wildcard(a.host))
		})
	}
	if !taken(port) {
		return
	}
	for taken(port) {
		port++
	}
	o.admin = append(o.admin, item{key: "listen", value: yamlString(address{host, port}.String()),
		why: fmt.Sprintf("a route listens on port 9187, pgfront's default admin port: the admin listener (stats page, /metrics, pgfront ctl) moves to %d", port)})
}
