package haproxyimport

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/config"
)

// src is where a value came from: a line of the HAProxy file.
type src struct {
	n    int
	text string
}

// srcOf returns l as a source.
func srcOf(l line) src { return src{l.n, l.text()} }

// timeVal is a time setting; set reports whether the file gave it. 0 means "no timeout".
type timeVal struct {
	d   time.Duration
	src src
	set bool
}

// strVal and intVal are other settings, with the same meaning of set.
type strVal struct {
	v   string
	src src
	set bool
}

type intVal struct {
	v   int
	src src
	set bool
}

// param is one keyword of a server or default-server line, with its value ("" for a flag).
type param struct {
	v   string
	src src
}

// checkSpec is a proxy's health check: option httpchk (with http-check send) or another kind.
type checkSpec struct {
	kind   string // "" (a TCP connect), "httpchk", "pgsql-check", "tcp-check", ...
	method string
	uri    string
	src    src // the line that chose the kind, or http-check send when it set the URI
}

// proxy is a defaults, listen, frontend or backend section with its settings resolved: a
// proxy starts as a copy of its defaults section, then its own lines apply.
type proxy struct {
	kind, name string
	head       src

	// Inherited from defaults.
	mode           strVal
	maxconn        intVal
	timeouts       map[string]timeVal // client, server, connect, queue, client-fin, server-fin, check, tunnel
	balance        strVal
	retries        intVal
	redispatch     strVal // set: option redispatch; v "no" for "no option redispatch"
	check          checkSpec
	defaultServer  map[string]param
	defaultBackend strVal

	// The proxy's own.
	binds    []bindSpec
	servers  []*serverSpec
	stats    *src // the first stats keyword: a stats page, not a PostgreSQL listener
	disabled *src
}

// bindSpec is one address of a bind line (or of the old "listen NAME ADDR").
type bindSpec struct {
	addr address
	src  src
}

// serverSpec is a server line with its default-server parameters merged in.
type serverSpec struct {
	name   string
	addr   address
	src    src
	params map[string]param
}

// clone copies d for a new proxy: the inherited settings, deep, and none of d's own.
func (d *proxy) clone(kind, name string, head src) *proxy {
	p := *d
	p.kind, p.name, p.head = kind, name, head
	p.timeouts = maps.Clone(d.timeouts)
	p.defaultServer = maps.Clone(d.defaultServer)
	p.binds, p.servers, p.stats, p.disabled = nil, nil, nil, nil
	return &p
}

func newDefaults() *proxy {
	return &proxy{kind: "defaults", timeouts: map[string]timeVal{}, defaultServer: map[string]param{}}
}

// haConfig is the HAProxy file read into proxies.
type haConfig struct {
	maxconn intVal
	proxies []*proxy // listen, frontend and backend sections, in file order
	byName  map[string]*proxy
}

// knownTimeouts are the timeouts the importer maps; the others (HTTP ones, tarpit,
// client-hs) are HAProxy's but mean nothing for PostgreSQL.
var knownTimeouts = map[string]bool{
	"client": true, "server": true, "connect": true, "queue": true, "client-fin": true,
	"server-fin": true, "check": true, "tunnel": true,
}

var otherTimeouts = map[string]bool{"http-request": true, "http-keep-alive": true, "tarpit": true, "client-hs": true}

// serverArgs lists the server and default-server keywords with the number of words after
// them (HAProxy's "5.2. Server and default-server options"). A keyword not listed stops the
// reading of its line: the importer cannot tell its value from the next keyword.
var serverArgs = map[string]int{
	"addr": 1, "agent-check": 0, "agent-send": 1, "agent-inter": 1, "agent-addr": 1, "agent-port": 1,
	"allow-0rtt": 0, "alpn": 1, "backup": 0, "ca-file": 1, "cc": 1, "check": 0, "check-reuse-pool": 0,
	"check-send-proxy": 0, "check-alpn": 1, "check-pool-conn-name": 1, "check-proto": 1,
	"check-sni-auto": 0, "check-sni": 1, "check-ssl": 0, "check-via-socks4": 0, "ciphers": 1,
	"ciphersuites": 1, "client-sigalgs": 1, "cookie": 1, "crl-file": 1, "crt": 1, "curves": 1,
	"disabled": 0, "enabled": 0, "error-limit": 1, "fall": 1, "force-sslv3": 0, "force-tlsv10": 0,
	"force-tlsv11": 0, "force-tlsv12": 0, "force-tlsv13": 0, "guid": 1, "hash-key": 1,
	"healthcheck": 1, "id": 1, "idle-ping": 1, "init-addr": 1, "inter": 1, "fastinter": 1,
	"downinter": 1, "init-state": 1, "ktls": 1, "log-bufsize": 1, "log-proto": 1, "maxconn": 1,
	"maxqueue": 1, "max-reuse": 1, "minconn": 1, "namespace": 1, "no-agent-check": 0,
	"no-backup": 0, "no-check": 0, "no-check-reuse-pool": 0, "no-check-sni-auto": 0,
	"no-check-ssl": 0, "no-renegotiate": 0, "no-send-proxy": 0, "no-send-proxy-v2": 0,
	"no-send-proxy-v2-ssl": 0, "no-send-proxy-v2-ssl-cn": 0, "no-sni-auto": 0, "no-ssl": 0,
	"no-ssl-reuse": 0, "no-sslv3": 0, "no-tls-tickets": 0, "no-tlsv10": 0, "no-tlsv11": 0,
	"no-tlsv12": 0, "no-tlsv13": 0, "no-verifyhost": 0, "no-tfo": 0, "non-stick": 0, "npn": 1,
	"observe": 1, "on-error": 1, "on-marked-down": 1, "on-marked-up": 1, "pool-conn-name": 1,
	"pool-low-conn": 1, "pool-max-conn": 1, "pool-purge-delay": 1, "port": 1, "proto": 1,
	"quic-cc-algo": 1, "redir": 1, "renegotiate": 0, "rise": 1, "resolve-opts": 1,
	"resolve-prefer": 1, "resolve-net": 1, "resolvers": 1, "send-proxy": 0, "send-proxy-v2": 0,
	"proxy-v2-options": 1, "send-proxy-v2-ssl": 0, "send-proxy-v2-ssl-cn": 0, "shard": 1,
	"sigalgs": 1, "slowstart": 1, "sni": 1, "sni-auto": 0, "ssl": 0, "ssl-max-ver": 1,
	"ssl-min-ver": 1, "ssl-reuse": 0, "stick": 0, "strict-maxconn": 0, "socks4": 1,
	"tcp-md5sig": 1, "tcp-ut": 1, "tfo": 0, "tls-tickets": 0, "track": 1, "verify": 1,
	"verifyhost": 1, "weight": 1, "ws": 1,
	"source": 1, // source ADDR [usesrc X] [interface NAME]: the extras are read below
}

// serverMapped are the server keywords the importer maps (or that only turn a mapped one on
// or off); every other one is listed as not mapped.
var serverMapped = map[string]bool{
	"addr": true, "check": true, "port": true, "inter": true, "fastinter": true, "fall": true,
	"rise": true, "maxconn": true, "weight": true, "on-marked-down": true, "check-ssl": true,
	"verify": true, "disabled": true, "enabled": true, "backup": true, "id": true,
}

// globalWhy says why common global keywords are not mapped.
var globalWhy = map[string]string{
	"log":           "pgfront logs to stderr, one line per session (log.format, log.level)",
	"log-tag":       "pgfront logs to stderr, one line per session (log.format, log.level)",
	"daemon":        "process management: run pgfront under systemd (deploy/systemd/pgfront.service) or Kubernetes (deploy/kubernetes)",
	"master-worker": "process management: run pgfront under systemd (deploy/systemd/pgfront.service) or Kubernetes (deploy/kubernetes)",
	"user":          "process management: the systemd unit runs pgfront as its own user",
	"group":         "process management: the systemd unit runs pgfront as its own user",
	"uid":           "process management: the systemd unit runs pgfront as its own user",
	"gid":           "process management: the systemd unit runs pgfront as its own user",
	"chroot":        "process management: the systemd unit confines pgfront (ProtectSystem=strict)",
	"pidfile":       "process management: systemd tracks pgfront's pid",
	"nbthread":      "pgfront uses every CPU it is given (GOMAXPROCS)",
	"nbproc":        "pgfront uses every CPU it is given (GOMAXPROCS)",
	"cpu-map":       "pgfront uses every CPU it is given (GOMAXPROCS)",
	"stats":         "HAProxy's stats socket: pgfront's admin API (admin.listen, pgfront ctl) does this",
	"ulimit-n":      "the open-files limit is the service manager's (LimitNOFILE in deploy/systemd/pgfront.service)",
	"spread-checks": "pgfront spreads checks with health.jitter (default 0.1)",
}

// proxyWhy says why common proxy keywords are not mapped.
var proxyWhy = map[string]string{
	"log":           "pgfront logs to stderr, one line per session (log.format, log.level)",
	"stats":         "HAProxy's stats page: pgfront's admin listener (admin.listen) serves a stats page at / and Prometheus metrics at /metrics",
	"acl":           "rules: pgfront has no ACLs; each route is one listener for one role",
	"use_backend":   "content switching: pgfront routes by listener only",
	"tcp-request":   "rules: pgfront has no equivalent",
	"tcp-response":  "rules: pgfront has no equivalent",
	"http-request":  "HTTP rules: pgfront relays PostgreSQL",
	"http-response": "HTTP rules: pgfront relays PostgreSQL",
	"hash-type":     "pgfront has no hashing balance",
	"fullconn":      "pgfront has no dynamic server maxconn (minconn/fullconn)",
	"description":   "a description only",
	"id":            "pgfront names routes, it does not number them",
	"errorfile":     "HTTP only",
	"cookie":        "HTTP only",
	"compression":   "HTTP only",
	"source":        "pgfront dials servers from the host's default address",
}

// proxyKeywords are the proxy keywords split reads at column 0 without calling them an
// unknown section (every keyword is read when indented).
var proxyKeywords = map[string]bool{
	"bind": true, "server": true, "default-server": true, "mode": true, "maxconn": true,
	"timeout": true, "balance": true, "retries": true, "option": true, "no": true,
	"http-check": true, "default_backend": true, "disabled": true, "enabled": true,
}

// knownKeyword reports whether kw is a keyword split may meet at column 0 in a section of
// this kind.
func knownKeyword(kind, kw string) bool {
	switch kind {
	case "global":
		_, ok := globalWhy[kw]
		return ok || kw == "maxconn" || strings.HasPrefix(kw, "tune.") || strings.HasPrefix(kw, "ssl-")
	case "defaults", "listen", "frontend", "backend":
		_, ok := proxyWhy[kw]
		return ok || proxyKeywords[kw]
	}
	return true // other sections are skipped whole
}

// reader turns sections into a config, collecting problems and notes.
type reader struct {
	ps    *problems
	notes *notes
	cfg   *haConfig
}

func read(sections []*section, ps *problems, ns *notes) *haConfig {
	r := &reader{ps: ps, notes: ns, cfg: &haConfig{byName: map[string]*proxy{}}}
	last := newDefaults()
	named := map[string]*proxy{}
	for _, s := range sections {
		head := srcOf(s.head)
		base := last
		if s.from != "" {
			if d, ok := named[s.from]; ok {
				base = d
			} else {
				ps.add(s.head.n, "%s %s: from %q: no defaults section of that name before this line", s.kind, printable(s.name), printable(s.from))
			}
		}
		switch s.kind {
		case "global":
			r.global(s)
		case "defaults":
			d := base.clone("defaults", s.name, head)
			if s.from == "" {
				d = newDefaults() // an unnamed defaults section resets every default
				d.name, d.head = s.name, head
			}
			r.proxy(d, s)
			last = d
			if s.name != "" {
				named[s.name] = d
			}
		case "listen", "frontend", "backend":
			p := base.clone(s.kind, s.name, head)
			if s.addr != "" {
				r.bind(p, s.head, []string{s.addr})
			}
			r.proxy(p, s)
			if other, dup := r.cfg.byName[s.name]; dup && s.name != "" {
				ps.add(s.head.n, "%s %s: the name is already used by the %s at line %d", s.kind, printable(s.name), other.kind, other.head.n)
				continue
			}
			r.cfg.byName[s.name] = p
			r.cfg.proxies = append(r.cfg.proxies, p)
		default:
			ns.skip(head, "a %s section: pgfront has no equivalent", s.kind)
		}
	}
	return r.cfg
}

func (r *reader) global(s *section) {
	for _, l := range s.lines {
		kw := l.words[0]
		switch {
		case kw == "maxconn":
			if n, ok := r.count(l, 1); ok {
				r.cfg.maxconn = intVal{n, srcOf(l), true}
			}
		case globalWhy[kw] != "":
			r.notes.skip(srcOf(l), "%s", globalWhy[kw])
		case strings.HasPrefix(kw, "tune."):
			r.notes.skip(srcOf(l), "HAProxy tuning: no pgfront equivalent")
		case strings.HasPrefix(kw, "ssl-"):
			r.notes.skip(srcOf(l), "HAProxy's TLS defaults: pgfront's TLS is set per route (tls) and per cluster (server_tls)")
		default:
			r.notes.skip(srcOf(l), "no pgfront equivalent")
		}
	}
}

// count reads the word after the keyword (at index i) as a count; exactly one value.
func (r *reader) count(l line, i int) (int, bool) {
	if len(l.words) != i+1 {
		r.ps.add(l.n, "%s: want one number", strings.Join(l.words[:min(i, len(l.words))], " "))
		return 0, false
	}
	n, err := parseCount(l.words[i])
	if err != nil {
		r.ps.add(l.n, "%s: %v", strings.Join(l.words[:i], " "), err)
		return 0, false
	}
	return n, true
}

// onlyIn reports a keyword in a section kind HAProxy does not accept it in: an error.
func (r *reader) onlyIn(p *proxy, l line, kinds ...string) bool {
	for _, k := range kinds {
		if p.kind == k {
			return true
		}
	}
	r.ps.add(l.n, "%s in a %s section: HAProxy accepts it only in %s sections", l.words[0], p.kind, strings.Join(kinds, ", "))
	return false
}

// ignoredIn notes a keyword HAProxy accepts but ignores in this kind of section.
func (r *reader) ignoredIn(p *proxy, l line, kinds ...string) bool {
	for _, k := range kinds {
		if p.kind == k || p.kind == "defaults" {
			return false
		}
	}
	r.notes.skip(srcOf(l), "HAProxy ignores it in a %s section", p.kind)
	return true
}

func (r *reader) proxy(p *proxy, s *section) {
	for _, l := range s.lines {
		kw, args := l.words[0], l.words[1:]
		switch kw {
		case "mode":
			if len(args) != 1 {
				r.ps.add(l.n, "mode: want tcp or http")
				continue
			}
			p.mode = strVal{args[0], srcOf(l), true}
		case "bind":
			if r.onlyIn(p, l, "listen", "frontend") {
				r.bind(p, l, args)
			}
		case "server":
			if r.onlyIn(p, l, "listen", "backend") {
				r.server(p, l)
			}
		case "default-server":
			if r.onlyIn(p, l, "defaults", "listen", "backend") {
				p.defaultServer = r.serverParams(l, l.words[1:], p.defaultServer)
			}
		case "maxconn":
			if r.ignoredIn(p, l, "listen", "frontend") {
				continue
			}
			if n, ok := r.count(l, 1); ok {
				p.maxconn = intVal{n, srcOf(l), true}
			}
		case "timeout":
			r.timeout(p, l)
		case "balance":
			if len(args) == 0 {
				r.ps.add(l.n, "balance: want an algorithm (roundrobin, leastconn, first, source, ...)")
				continue
			}
			if r.ignoredIn(p, l, "listen", "backend") {
				continue
			}
			p.balance = strVal{args[0], srcOf(l), true}
		case "retries":
			if r.ignoredIn(p, l, "listen", "backend") {
				continue
			}
			if n, ok := r.count(l, 1); ok {
				p.retries = intVal{n, srcOf(l), true}
			}
		case "default_backend":
			if len(args) != 1 {
				r.ps.add(l.n, "default_backend: want one backend name")
				continue
			}
			p.defaultBackend = strVal{args[0], srcOf(l), true}
		case "option":
			r.option(p, l, args, false)
		case "no":
			if len(args) >= 2 && args[0] == "option" {
				r.option(p, l, args[1:], true)
			} else {
				r.notes.skip(srcOf(l), "no pgfront equivalent")
			}
		case "http-check":
			r.httpCheck(p, l, args)
		case "disabled":
			s := srcOf(l)
			p.disabled = &s
		case "enabled":
			p.disabled = nil
		case "stats":
			if p.stats == nil {
				s := srcOf(l)
				p.stats = &s
			}
			if p.kind == "defaults" {
				r.notes.skip(srcOf(l), "%s", proxyWhy["stats"])
			}
		default:
			if why, ok := proxyWhy[kw]; ok {
				r.notes.skip(srcOf(l), "%s", why)
			} else {
				r.notes.skip(srcOf(l), "not a keyword this importer maps: no pgfront equivalent")
			}
		}
	}
}

// bind reads the addresses of a bind line (comma-separated); the words after the addresses
// are bind options, none of which is mapped.
func (r *reader) bind(p *proxy, l line, args []string) {
	if len(args) == 0 {
		r.ps.add(l.n, "bind needs an address")
		return
	}
	for _, a := range strings.Split(args[0], ",") {
		addr, err := parseBindAddr(a)
		if nt, ok := err.(errNotTCP); ok {
			r.notes.skip(srcOf(l), "%v", nt)
			continue
		}
		if err != nil {
			r.ps.add(l.n, "bind: %v", err)
			continue
		}
		p.binds = append(p.binds, bindSpec{addr, srcOf(l)})
	}
	if len(args) > 1 {
		why := "bind options are not mapped"
		for _, o := range args[1:] {
			switch o {
			case "ssl":
				why = "bind options are not mapped: for TLS set the route's tls (mode terminate, cert_file, key_file); pgfront serves SSLRequest and direct TLS on the same port"
			case "accept-proxy":
				why = "bind options are not mapped: pgfront does not read the PROXY protocol"
			}
		}
		r.notes.skip(srcOf(l), "%s", why)
	}
}

func (r *reader) timeout(p *proxy, l line) {
	if len(l.words) < 2 {
		r.ps.add(l.n, "timeout: want a kind (client, server, connect, ...) and a time")
		return
	}
	kind := l.words[1]
	if otherTimeouts[kind] {
		r.notes.skip(srcOf(l), "an HTTP or TLS handshake timeout: pgfront bounds the login with timeouts.startup (default 10s)")
		return
	}
	if !knownTimeouts[kind] {
		r.ps.add(l.n, "timeout %s: unknown timeout (HAProxy's are client, server, connect, queue, check, tunnel, client-fin, server-fin, http-request, http-keep-alive, tarpit, client-hs)", printable(kind))
		return
	}
	if len(l.words) != 3 {
		r.ps.add(l.n, "timeout %s: want one time, e.g. 30s", kind)
		return
	}
	d, bare, err := parseTime(l.words[2])
	if err != nil {
		r.ps.add(l.n, "timeout %s: %v", kind, err)
		return
	}
	if bare && d > 0 && d < 100*time.Millisecond {
		r.notes.warn(srcOf(l), "that is %s: HAProxy reads a time without a unit as milliseconds", config.Duration(d))
	}
	p.timeouts[kind] = timeVal{d, srcOf(l), true}
}

// checkKinds are the health check options; only httpchk can name a Patroni endpoint.
var checkKinds = map[string]bool{
	"httpchk": true, "pgsql-check": true, "tcp-check": true, "ssl-hello-chk": true,
	"mysql-check": true, "ldap-check": true, "smtpchk": true, "redis-check": true,
	"external-check": true, "spop-check": true,
}

func (r *reader) option(p *proxy, l line, args []string, no bool) {
	if len(args) == 0 {
		r.ps.add(l.n, "option: want an option name")
		return
	}
	name := args[0]
	switch {
	case checkKinds[name]:
		if no {
			if p.check.kind == name {
				p.check = checkSpec{}
			}
			return
		}
		c := checkSpec{kind: name, method: "OPTIONS", uri: "/", src: srcOf(l)}
		if name == "httpchk" {
			switch a := args[1:]; len(a) {
			case 0:
			case 1:
				c.uri = a[0]
			default:
				c.method, c.uri = a[0], a[1]
			}
		}
		p.check = c
	case name == "redispatch":
		v := "yes"
		if no {
			v = "no"
		}
		p.redispatch = strVal{v, srcOf(l), true}
	case name == "abortonclose":
		r.notes.skip(srcOf(l), "pgfront does this by default: on_client_fin abort ends a session whose client half-closed, and cancels its query")
	case name == "tcpka" || name == "clitcpka" || name == "srvtcpka":
		r.notes.skip(srcOf(l), "pgfront sets TCP keepalive on both sides by default (tcp.keepalive_idle 30s, keepalive_interval 10s, keepalive_count 3)")
	case name == "tcplog" || name == "httplog" || name == "dontlognull" || name == "log-health-checks" || name == "logasap" || name == "dontlog-normal" || name == "log-separate-errors":
		r.notes.skip(srcOf(l), "pgfront logs one line per session and one per server state change")
	case strings.HasPrefix(name, "http") || name == "forwardfor" || name == "originalto":
		r.notes.skip(srcOf(l), "an HTTP option: pgfront relays PostgreSQL")
	default:
		r.notes.skip(srcOf(l), "no pgfront equivalent")
	}
}

// httpCheck reads http-check send (its uri overrides option httpchk's) and http-check
// expect (pgfront reads roles from Patroni's /patroni, whatever the expected status).
func (r *reader) httpCheck(p *proxy, l line, args []string) {
	if len(args) == 0 {
		r.ps.add(l.n, "http-check: want send, expect, connect, ...")
		return
	}
	switch args[0] {
	case "send":
		if p.check.kind != "httpchk" {
			p.check = checkSpec{kind: "httpchk", method: "OPTIONS", uri: "/"}
		}
		a := args[1:]
		for i := 0; i < len(a); i++ {
			if i+1 >= len(a) {
				r.ps.add(l.n, "http-check send: %s needs a value", printable(a[i]))
				return
			}
			switch a[i] {
			case "meth":
				p.check.method = a[i+1]
			case "uri":
				p.check.uri = a[i+1]
			case "uri-lf":
				p.check.uri = "uri-lf " + a[i+1] // a log-format string: no Patroni endpoint
			case "hdr":
				i++ // hdr NAME VALUE
			}
			i++
		}
		p.check.src = srcOf(l)
	case "expect":
		if !(len(args) == 3 && args[1] == "status" && args[2] == "200") {
			r.notes.skip(srcOf(l), "pgfront reads each member's role from Patroni's /patroni, whatever the expected answer")
		}
	default:
		r.notes.skip(srcOf(l), "pgfront's Patroni check needs no HTTP check script")
	}
}

// server reads "server NAME ADDRESS [params]".
func (r *reader) server(p *proxy, l line) {
	if len(l.words) < 2 {
		r.ps.add(l.n, "server needs a name and an address")
		return
	}
	if len(l.words) < 3 {
		r.ps.add(l.n, "server %s has no address (want server NAME HOST:PORT [params])", printable(l.words[1]))
		return
	}
	addr, err := parseServerAddr(l.words[2])
	if nt, ok := err.(errNotTCP); ok {
		r.notes.skip(srcOf(l), "server %s: %v", printable(l.words[1]), nt)
		return
	}
	if err != nil {
		r.ps.add(l.n, "server %s: %v", printable(l.words[1]), err)
		return
	}
	s := &serverSpec{name: l.words[1], addr: addr, src: srcOf(l)}
	s.params = r.serverParams(l, l.words[3:], p.defaultServer)
	p.servers = append(p.servers, s)
}

// serverParams reads server keywords over a copy of base (the default-server ones), checking
// the values the importer maps.
func (r *reader) serverParams(l line, words []string, base map[string]param) map[string]param {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]param{}
	}
	s := srcOf(l)
	for i := 0; i < len(words); i++ {
		kw := words[i]
		n, ok := serverArgs[kw]
		if !ok {
			r.notes.skip(s, "%q is not a server keyword this importer knows: it and the words after it were not read", printable(kw))
			return out
		}
		if i+n >= len(words) {
			r.ps.add(l.n, "%s needs a value", kw)
			return out
		}
		v := ""
		if n == 1 {
			v = words[i+1]
		}
		i += n
		if kw == "source" { // source ADDR [usesrc X] [interface NAME]
			for i+2 < len(words) && (words[i+1] == "usesrc" || words[i+1] == "interface") {
				i += 2
			}
		}
		switch kw {
		case "inter", "fastinter", "downinter", "slowstart":
			if _, _, err := parseTime(v); err != nil {
				r.ps.add(l.n, "%s: %v", kw, err)
				continue
			}
		case "fall", "rise", "maxconn", "weight", "port":
			n, err := parseCount(v)
			if err != nil {
				r.ps.add(l.n, "%s: %v", kw, err)
				continue
			}
			v = strconv.Itoa(n) // "08" is 8
			if kw == "port" {
				if _, err := parsePort(v, v); err != nil {
					r.ps.add(l.n, "port: %v", err)
					continue
				}
			}
		case "addr":
			h, err := checkHost(v, v)
			if err != nil {
				r.ps.add(l.n, "addr: %v", err)
				continue
			}
			v = h
		case "on-marked-down":
			if v != "shutdown-sessions" {
				r.ps.add(l.n, "on-marked-down %q: HAProxy's only action is shutdown-sessions", printable(v))
				continue
			}
		}
		if strings.HasPrefix(kw, "no-") {
			delete(out, strings.TrimPrefix(kw, "no-"))
			continue
		}
		switch kw {
		case "enabled":
			delete(out, "disabled")
			continue
		}
		out[kw] = param{v, s}
	}
	return out
}

// String names a proxy for messages: "listen batman".
func (p *proxy) String() string { return fmt.Sprintf("%s %s", p.kind, printable(p.name)) }
