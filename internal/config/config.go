// Package config owns pgfront's configuration file: the YAML schema, its
// defaults, strict decoding, validation and lint.
//
// Decoding is strict: an unknown key, a value of the wrong type or a bad
// duration is an error, and every problem in the file is reported at once,
// each with its file, line and dotted field path
// (routes.rw.timeouts.client_idle, clusters.main.servers[1].address).
// Lint warnings (the HAProxy half-close trap and friends) never fail a load;
// `pgfront check` prints them.
//
//	cfg, warnings, err := config.Load("pgfront.yaml")
//	if err != nil {
//		return err // *config.Error: one "FILE:LINE: path: message" line per problem
//	}
//	for _, w := range warnings {
//		log.Print(w) // FILE:LINE: path: message
//	}
//	for _, name := range cfg.RouteNames() {
//		r := cfg.Routes[name] // r.Timeouts is fully resolved
//		_ = r
//	}
//
// A loaded Config is treated as immutable: components get copies of what they
// need (internal/app converts it into each package's own options); runtime
// packages never import config. It may hold secrets (health.password): print
// or log it only through Redacted.
package config

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in YAML as a Go duration string
// ("5s", "1m30s", "0s") or a plain 0. Negative values and numbers without a
// unit are rejected.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration, without trailing zero units
// ("1h" rather than "1h0m0s").
func (d Duration) String() string { return fmtDuration(time.Duration(d)) }

// MarshalText writes d in the form ParseDuration accepts.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string or "0"; negative values are rejected.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func parseDuration(s string) (Duration, error) {
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a Go duration such as 5s, 1m30s or 0", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	return Duration(v), nil
}

// fmtDuration drops the zero tails time.Duration.String keeps ("1h", not
// "1h0m0s"; "10m", not "10m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Size is a number of bytes, written in YAML as a plain integer (1024) or
// with a unit, 1024-based and case-sensitive as in PostgreSQL: B, kB, MB,
// GB ("512kB", "16MB", "1GB"). Negative values and fractions are rejected.
type Size int64

// sizeUnits are the units Size accepts, largest first.
var sizeUnits = []struct {
	name string
	n    int64
}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}

// String writes s with the largest unit that divides it exactly ("16MB",
// "1536kB", "1000B"); 0 is "0".
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B" // negative, never loaded
}

// MarshalText writes s in the form UnmarshalText accepts.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a byte count with an optional unit.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := parseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func parseSize(s string) (Size, error) {
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	num, unit := s[:digits], strings.TrimLeft(s[digits:], " \t")
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("size %q must not be negative", s)
	}
	if num == "" || strings.HasPrefix(unit, ".") {
		return 0, fmt.Errorf("invalid size %q: want whole bytes (1024) or a whole number with a unit B, kB, MB or GB (1024-based), e.g. 16MB", s)
	}
	mult := int64(1)
	if unit != "" {
		mult = 0
		for _, u := range sizeUnits {
			if unit == u.name {
				mult = u.n
			}
		}
		if mult == 0 {
			for _, u := range sizeUnits {
				if strings.EqualFold(unit, u.name) {
					return 0, fmt.Errorf("invalid size %q: units are case-sensitive, as in PostgreSQL (did you mean %s%s?)", s, num, u.name)
				}
			}
			return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, kB, MB or GB, 1024-based)", s, unit)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// Config is a loaded, defaulted and validated configuration file.
type Config struct {
	Log Log `json:"log"`
	// MaxConn (yaml maxconn) limits client sessions across all routes.
	// Default 10000; 0 = unlimited.
	MaxConn int `json:"maxconn"`
	// MaxQueue (yaml max_queue) limits clients waiting for a slot in all
	// queues together. Default 1000; 0 = never queue (refuse at once).
	MaxQueue int      `json:"max_queue"`
	Shutdown Shutdown `json:"shutdown"`
	TCP      TCP      `json:"tcp"`
	// Timeouts are the global defaults; every Route carries its own
	// resolved copy.
	Timeouts Timeouts `json:"timeouts"`
	// Clusters by name; each Cluster.Name equals its key.
	Clusters map[string]*Cluster `json:"clusters"`
	// Routes by name; each Route.Name equals its key.
	Routes map[string]*Route `json:"routes"`
	// Admin configures the admin listener (metrics, stats page, API).
	Admin Admin `json:"admin"`
	// Alerts configures the built-in alerts and the socket-state sample.
	Alerts Alerts `json:"alerts"`
	// Fleet makes several instances one for cancel requests (see Fleet).
	Fleet Fleet `json:"fleet"`
	// Path is the file the config was loaded from ("" when parsed from bytes).
	Path string `json:"path,omitempty"`
}

// Log configures pgfront's own logging.
type Log struct {
	// Format is "text" (default) or "json".
	Format string `json:"format"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `json:"level"`
}

// Admin configures the admin HTTP listener: /metrics, the stats page and the
// /api/v1 admin API that `pgfront ctl` calls.
type Admin struct {
	// Listen is the host:port of the admin listener. Default
	// 127.0.0.1:9187; "" turns it off. A listen address that is not
	// loopback requires a token (read or admin).
	Listen string `json:"listen"`
	// ReadTokenFile / ReadTokenEnv give the bearer token of the read-only
	// scope (metrics, stats page data, GET /api/v1/...): a file holding it
	// or an environment variable. At most one; none = no read token.
	ReadTokenFile string `json:"read_token_file"`
	ReadTokenEnv  string `json:"read_token_env"`
	// AdminTokenFile / AdminTokenEnv give the bearer token of the admin
	// scope (everything, including kill and server states). At most one.
	// With no token at all, the (loopback) listener is open to every local
	// user with admin scope.
	AdminTokenFile string `json:"admin_token_file"`
	AdminTokenEnv  string `json:"admin_token_env"`
}

// Alerts are the built-in alerts' thresholds; 0 turns an alert off. A
// crossing logs a warning once per episode (and once when it clears) and
// sets pgfront_alert_active{alert=...}.
type Alerts struct {
	// SampleInterval is how often the kernel's TCP states of pgfront's
	// sockets are sampled and every alert checked. Default 5s; > 0.
	SampleInterval Duration `json:"sample_interval"`
	// CloseWait: pgfront's sockets in CLOSE_WAIT (both sides). Default 50.
	CloseWait int `json:"close_wait"`
	// FinWait2: pgfront's sockets in FIN_WAIT2 (both sides). Default 50.
	FinWait2 int `json:"fin_wait2"`
	// HalfClosedAge: age of the oldest half-closed session. Default 30s.
	HalfClosedAge Duration `json:"half_closed_age"`
	// Queue: clients waiting for a slot or a server. Default 100.
	Queue int `json:"queue"`
	// FDUsage: open descriptors / the open-files limit, 0..1. Default 0.8.
	FDUsage float64 `json:"fd_usage"`
}

// Shutdown configures SIGTERM handling.
type Shutdown struct {
	// Grace is how long sessions get to reach an idle point before they are
	// cut. Default 30s; 0 = cut at once.
	Grace Duration `json:"grace"`
}

// TCP is how pgfront notices a peer that vanished without FIN or RST (a pod whose network was
// torn down, a machine that lost power): TCP keepalive finds it while the connection is idle,
// TCP_USER_TIMEOUT while data waits for its acknowledgement. Client sockets (accepted) and
// server sockets (dialled) are set separately. In the file, the four keys directly under tcp
// set both sides at once; tcp.client and tcp.server set one side and win over them. A route's
// own tcp section overrides the global one key by key, the same way. With the defaults a
// vanished peer is given up within 13s whatever its session is doing (TCPSide.VanishBound).
type TCP struct {
	Client TCPSide `json:"client"`
	Server TCPSide `json:"server"`
}

// TCPSide is the dead-peer detection of one side's sockets.
type TCPSide struct {
	// KeepaliveIdle is TCP_KEEPIDLE: how long a connection may be silent before the first
	// probe. Default 5s; 0 = keepalive off. Whole seconds, at most 32767s (the kernel's unit
	// and limit).
	KeepaliveIdle Duration `json:"keepalive_idle"`
	// KeepaliveInterval is TCP_KEEPINTVL, between unanswered probes. Default 2s; must be > 0
	// when keepalive is on. Whole seconds, at most 32767s.
	KeepaliveInterval Duration `json:"keepalive_interval"`
	// KeepaliveCount is TCP_KEEPCNT: unanswered probes before the connection is dropped, when
	// UserTimeout is 0 (with a user timeout the kernel drops it once that much time has passed
	// since the peer was last heard, at a probe). Default 4; 1..127 when keepalive is on, 0
	// only when it is off.
	KeepaliveCount int `json:"keepalive_count"`
	// UserTimeout is TCP_USER_TIMEOUT: how long sent data may stay unacknowledged, and how long
	// the peer's receive window may stay closed, before the connection is dropped; with
	// keepalive, also the bound on unanswered probes. Default 13s; 0 = the kernel's (data is
	// retransmitted for about 15 minutes). Note that it ends a live client that stops reading
	// a result for that long too (the kernel cannot tell it from a vanished one).
	UserTimeout Duration `json:"user_timeout"`
}

// tcpField is one TCPSide field and its YAML key: a duration or a count.
type tcpField struct {
	key string
	dur *Duration
	num *int
}

// fields lists s's fields with their YAML keys, in schema order.
func (s *TCPSide) fields() []tcpField {
	return []tcpField{
		{key: "keepalive_idle", dur: &s.KeepaliveIdle},
		{key: "keepalive_interval", dur: &s.KeepaliveInterval},
		{key: "keepalive_count", num: &s.KeepaliveCount},
		{key: "user_timeout", dur: &s.UserTimeout},
	}
}

// copyFrom sets f's value to g's (the same field of another TCPSide).
func (f tcpField) copyFrom(g tcpField) {
	if f.dur != nil {
		*f.dur = *g.dur
	} else {
		*f.num = *g.num
	}
}

// sides lists t's sides with their YAML keys.
func (t *TCP) sides() []struct {
	key  string
	side *TCPSide
} {
	return []struct {
		key  string
		side *TCPSide
	}{{"client", &t.Client}, {"server", &t.Server}}
}

// VanishBound is how long a peer that vanished (no FIN, no RST, no answer of any kind) can hold
// its session with these settings before the kernel gives up on it: the longer of the idle
// case (keepalive: the first probe after KeepaliveIdle of silence, then one every
// KeepaliveInterval until UserTimeout has passed since the peer was last heard, or until
// KeepaliveCount probes went unanswered when UserTimeout is 0) and the busy case (data or a
// closed window waiting: UserTimeout). ok is false when nothing bounds it: keepalive off (an
// idle session waits for ever), or UserTimeout off (the kernel retransmits for about 15
// minutes, per net.ipv4.tcp_retries2).
func (s TCPSide) VanishBound() (bound time.Duration, ok bool) {
	idle, intvl, ut := s.KeepaliveIdle.D(), s.KeepaliveInterval.D(), s.UserTimeout.D()
	if idle <= 0 || ut <= 0 {
		return 0, false
	}
	// The kernel checks at each probe time idle + k*intvl (k >= 1, a probe already out)
	// whether the silence has reached the user timeout.
	k := max(1, (ut-idle+intvl-1)/intvl)
	return max(idle+k*intvl, ut), true
}

// Timeouts bound every state of a session. The global set gives the
// defaults; a route may override any field.
type Timeouts struct {
	// Startup bounds the first packet and the login, until the server's
	// first ReadyForQuery. Default 10s; must be > 0.
	Startup Duration `json:"startup"`
	// Connect bounds each server connection attempt. Default 3s; must be > 0.
	Connect Duration `json:"connect"`
	// Queue is the longest wait for a slot under maxconn. Default 5s;
	// 0 = refuse at once.
	Queue Duration `json:"queue"`
	// FailoverWait is the longest wait, counted from the client's arrival,
	// for the route to have a server at all (a failover, a split brain):
	// then FATAL 57P03. Default 35s, so a client waits out a default
	// Patroni election (ttl 30s, then loop_wait) instead of being refused
	// mid-failover; 0 = refuse at once. Separate from Queue (the wait for a
	// slot once there is a server); neither is part of Startup. A client
	// waits at most the longer of the two, and is watched throughout (one
	// that leaves is gone from the wait at once).
	FailoverWait Duration `json:"failover_wait"`
	// ClientIdle bounds client silence while no transaction is open.
	// Default 1h; 0 = off.
	ClientIdle Duration `json:"client_idle"`
	// IdleInTransaction bounds client silence inside an open transaction.
	// Default 10m; 0 = off.
	IdleInTransaction Duration `json:"idle_in_transaction"`
	// ServerIdle bounds server silence while a query runs. Default 0 = off
	// (long queries are legal).
	ServerIdle Duration `json:"server_idle"`
	// ClientFin is how long the client gets to close after the server has
	// closed. Default 5s; 0 = off (lint warns: the half-close trap).
	ClientFin Duration `json:"client_fin"`
	// ServerFin is how long the server gets to close after the client has
	// closed (on_client_fin forward, or after Terminate). Default 5s;
	// 0 = off (lint warns).
	ServerFin Duration `json:"server_fin"`
}

// timeoutField names one Timeouts field by its YAML key.
type timeoutField struct {
	key string
	ptr *Duration
}

// fields lists t's fields with their YAML keys, in schema order. Decoding,
// defaults, inheritance and lint all go through this one table.
func (t *Timeouts) fields() []timeoutField {
	return []timeoutField{
		{"startup", &t.Startup},
		{"connect", &t.Connect},
		{"queue", &t.Queue},
		{"failover_wait", &t.FailoverWait},
		{"client_idle", &t.ClientIdle},
		{"idle_in_transaction", &t.IdleInTransaction},
		{"server_idle", &t.ServerIdle},
		{"client_fin", &t.ClientFin},
		{"server_fin", &t.ServerFin},
	}
}

// Cluster is a named set of PostgreSQL servers and how their health and
// roles are learned.
type Cluster struct {
	Name string `json:"-"`
	// Servers in file order; at least one.
	Servers []*Server `json:"servers"`
	// OnMarkedDown is what happens to a route's sessions on a server that
	// leaves the route's role (down, demoted, lagging, maintenance):
	// "shutdown_sessions" (default: end them with a clean error) or "keep".
	OnMarkedDown string `json:"on_marked_down"`
	// Health configures the checks of this cluster's servers.
	Health Health `json:"health"`
	// ServerTLS is how pgfront (sessions, cancels and health checks)
	// talks TLS to this cluster's servers.
	ServerTLS ServerTLS `json:"server_tls"`
	// DCS, when set, makes Patroni's DCS the role source (see DCS). Default nil:
	// roles come from the health checks alone.
	DCS *DCS `json:"dcs,omitempty"`
}

// ServerTLS is the TLS pgfront uses towards a cluster's servers, with the
// meaning of libpq's sslmode.
type ServerTLS struct {
	// Mode is "disable" (default), "prefer" (TLS when the server offers
	// it, unverified), "require" (TLS, unverified), "verify-ca" (TLS, the
	// chain verified against CAFile) or "verify-full" (also the host name:
	// the host of each server's address).
	Mode string `json:"mode"`
	// CAFile holds the roots for verify-ca and verify-full (required by
	// both).
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are a client certificate for servers that
	// demand one (both or neither).
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// RouteTLS is the TLS a route offers its clients.
type RouteTLS struct {
	// Mode is "disable" (default: SSLRequest answered 'N'), "terminate"
	// (pgfront completes TLS with CertFile/KeyFile and runs the session
	// on top: every PostgreSQL-aware feature keeps working) or
	// "passthrough" (SSLRequest and the encrypted bytes go to the server
	// untouched: no cancel routing, no transaction awareness for those
	// sessions).
	Mode string `json:"mode"`
	// CertFile and KeyFile are pgfront's certificate (terminate). They are
	// re-read when they change and on SIGHUP.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// Require refuses clients that do not use TLS (terminate) with FATAL
	// 28000. Default false.
	Require bool `json:"require"`
	// ClientCAFile, when set, requires every TLS client to present a
	// certificate signed by one of these CAs (terminate).
	ClientCAFile string `json:"client_ca_file"`
	// SNI maps a TLS server name to another cluster: a client that asks
	// for that name is served by that cluster's servers of the route's
	// role (terminate). Names not listed use the route's cluster.
	SNI map[string]string `json:"sni"`
}

// Health configures one cluster's health checks.
type Health struct {
	// Check is "postgres" (default: log in, read pg_is_in_recovery() and
	// lag), "patroni" (Patroni REST API of each node), "tcp" (connect only;
	// static roles) or "none" (static roles; a server is used while it
	// accepts connections). With tcp and none every server needs a Role.
	Check string `json:"check"`
	// Interval is the time between checks of one server. Default 2s; > 0.
	Interval Duration `json:"interval"`
	// FastInterval replaces Interval while a server is changing state
	// (between its first and its rise-th/fall-th result). Default 500ms;
	// > 0 and <= Interval.
	FastInterval Duration `json:"fast_interval"`
	// Timeout bounds one check. Default 1s; > 0 and < Interval.
	Timeout Duration `json:"timeout"`
	// Rise is the consecutive successes that mark a server up. Default 2; 1..100.
	Rise int `json:"rise"`
	// Fall is the consecutive failures that mark a server down. Default 2; 1..100.
	Fall int `json:"fall"`
	// Jitter spreads checks by up to this fraction of Interval, so servers
	// are not all checked at once. Default 0.1; 0..0.5.
	Jitter float64 `json:"jitter"`
	// User is the login user of the postgres check. Default "postgres".
	User string `json:"user"`
	// Database is the database of the postgres check. Default "postgres".
	Database string `json:"database"`
	// PasswordFile, PasswordEnv and Password are the postgres check's
	// password sources: a file holding it, an environment variable, or the
	// password itself (lint warns; Redacted hides it). At most one is set;
	// none ("") = no password (trust, peer, cert).
	PasswordFile string `json:"password_file"`
	PasswordEnv  string `json:"password_env"`
	Password     string `json:"password"`
	// PatroniScheme is "http" (default) or "https", for the patroni check.
	PatroniScheme string `json:"patroni_scheme"`
}

// StaticRoles reports whether servers keep the roles the file gives them
// (check tcp or none) rather than having them learned by the checks.
func (h Health) StaticRoles() bool { return h.Check == "tcp" || h.Check == "none" }

// Server is one PostgreSQL endpoint of a cluster.
type Server struct {
	// Name is required and unique within its cluster.
	Name string `json:"name"`
	// Address is host:port.
	Address string `json:"address"`
	// Role is "primary" or "replica". Required when the cluster's roles are
	// static (health.check tcp or none); with postgres and patroni checks
	// the role is learned, and a Role given anyway is only the initial
	// guess. "" = not given.
	Role string `json:"role"`
	// MaxConn limits sessions on this server. Default 0 = unlimited.
	MaxConn int `json:"maxconn"`
	// Weight is the roundrobin weight. Default 1; 0 = never chosen.
	Weight int `json:"weight"`
	// Patroni is the host:port of this node's Patroni REST API. Required
	// when health.check is patroni; "" otherwise.
	Patroni string `json:"patroni"`
}

// Route is a listener serving one role of one cluster.
type Route struct {
	Name string `json:"-"`
	// Listen is the host:port to listen on (port 0 picks a free port).
	Listen string `json:"listen"`
	// Cluster names an entry of Config.Clusters.
	Cluster string `json:"cluster"`
	// Role is "primary", "replica" or "any".
	Role string `json:"role"`
	// Balance is "first", "roundrobin" or "leastconn". Default first for
	// role primary, roundrobin otherwise.
	Balance string `json:"balance"`
	// OnClientFin is "abort" (default: a client FIN without Terminate ends
	// the session at once) or "forward" (pure TCP half-close, bounded by
	// server_fin).
	OnClientFin string `json:"on_client_fin"`
	// MaxConn limits sessions on this route. Default 0 = unlimited (the
	// global maxconn still applies).
	MaxConn int `json:"maxconn"`
	// ConnectRetries is how many more servers are tried after a failed
	// connect. Default 2; 0..10.
	ConnectRetries int `json:"connect_retries"`
	// Timeouts are fully resolved: the global timeouts with this route's
	// overrides applied.
	Timeouts Timeouts `json:"timeouts"`
	// TCP is fully resolved too: the global tcp section with this route's
	// overrides applied (its client side applies to the route's clients,
	// its server side to the connections it dials).
	TCP TCP `json:"tcp"`
	// MaxLag bounds how far behind a replica may be to serve this route.
	// Replica routes only; zero = no bound.
	MaxLag MaxLag `json:"max_lag"`
	// Fallback is where a replica route sends clients when no replica
	// qualifies: "primary" (default) or "none" (refuse). "" on routes of
	// other roles.
	Fallback string `json:"fallback"`
	// SyncStandbyOnly keeps a replica route to synchronous standbys (as
	// Patroni reports them), for reads that must see every committed
	// write. Replica routes of clusters with health.check patroni only.
	// Default false. Fallback to the primary still applies.
	SyncStandbyOnly bool `json:"sync_standby_only"`
	// TLS is what the route offers clients that ask for TLS.
	TLS RouteTLS `json:"tls"`
	// ProxyProtocol, when present, makes every connection to the route start
	// with a PROXY protocol header (v1 or v2) from a trusted load balancer,
	// whose carried client address pgfront then shows and logs. Default
	// absent (nil) = off: no header is expected and one is a protocol error.
	ProxyProtocol *ProxyProtocol `json:"proxy_protocol,omitempty"`
}

// ProxyProtocol is a route's PROXY protocol setting.
type ProxyProtocol struct {
	// Trusted lists the source networks (CIDR, or a single address) allowed
	// to connect and send the header. No default: at least one is required.
	// A connection from any other address is refused; a connection from a
	// trusted address without a header is refused too.
	Trusted []netip.Prefix `json:"trusted"`
}

// MaxLag bounds a replica's replication lag. A replica over either bound
// leaves the route until it catches up.
type MaxLag struct {
	// Bytes bounds the WAL the replica has yet to replay. Default 0 = no bound.
	Bytes Size `json:"bytes"`
	// Time bounds how old the last replayed transaction may be. Default
	// 0 = no bound.
	Time Duration `json:"time"`
}

// Redacted returns a deep copy of c with every secret (health.password)
// replaced by "<redacted>", for printing. An unset secret stays "".
func (c *Config) Redacted() *Config {
	out := *c
	out.Clusters = make(map[string]*Cluster, len(c.Clusters))
	for name, cl := range c.Clusters {
		cc := *cl
		cc.Servers = make([]*Server, len(cl.Servers))
		for i, s := range cl.Servers {
			sc := *s
			cc.Servers[i] = &sc
		}
		if cc.Health.Password != "" {
			cc.Health.Password = redacted
		}
		out.Clusters[name] = &cc
	}
	out.Routes = make(map[string]*Route, len(c.Routes))
	for name, r := range c.Routes {
		rc := *r
		out.Routes[name] = &rc
	}
	return &out
}

// redacted stands in for a secret in printed config.
const redacted = "<redacted>"

// RouteNames returns the route names, sorted.
func (c *Config) RouteNames() []string { return sortedKeys(c.Routes) }

// ClusterNames returns the cluster names, sorted.
func (c *Config) ClusterNames() []string { return sortedKeys(c.Clusters) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Warning is a lint finding: the config loads, but probably does not do
// what its author wants.
type Warning struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// String formats w as "FILE:LINE: path: message".
func (w Warning) String() string { return formatLoc(w.File, w.Line, 0, w.Path, w.Message) }

// Problem is one reason a config was rejected.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Column is known for YAML syntax errors only; 0 elsewhere.
	Column  int    `json:"column,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// String formats p as "FILE:LINE: path: message" ("FILE:LINE:COLUMN: message" for a YAML
// syntax error).
func (p Problem) String() string { return formatLoc(p.File, p.Line, p.Column, p.Path, p.Message) }

// Error is returned by Load and Parse when the config is invalid. It
// collects every problem found, in file order.
type Error struct {
	Problems []Problem `json:"problems"`
}

// Error joins the problems, one "FILE:LINE: path: message" per line.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "invalid config"
	}
	b := make([]byte, 0, 64*len(e.Problems))
	for i, p := range e.Problems {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, p.String()...)
	}
	return string(b)
}

// formatLoc renders "FILE:LINE[:COLUMN]: path: message", leaving out the
// parts that are unknown (no file name when parsed from bytes, line or
// column 0, empty path).
func formatLoc(file string, line, col int, path, msg string) string {
	loc := file
	if line > 0 {
		if loc == "" {
			loc = "line " + strconv.Itoa(line)
		} else {
			loc += ":" + strconv.Itoa(line)
		}
		if col > 0 {
			if file == "" {
				loc += " column " + strconv.Itoa(col)
			} else {
				loc += ":" + strconv.Itoa(col)
			}
		}
	}
	s := msg
	if path != "" {
		s = path + ": " + s
	}
	if loc != "" {
		s = loc + ": " + s
	}
	return s
}

// Load reads, decodes, defaults and validates the config file at path.
// The returned error is an *Error when the file was read but is invalid.
// Warnings are lint findings; they never make Load fail.
func Load(path string) (*Config, []Warning, error) {
	c, _, warnings, err := LoadSource(path)
	return c, warnings, err
}

// LoadSource is Load that also returns where each field is in the file.
func LoadSource(path string) (*Config, *Source, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading config: %w", err)
	}
	c, src, warnings, err := ParseSource(data, path)
	if err != nil {
		return nil, nil, nil, err
	}
	c.Path = path
	return c, src, warnings, nil
}

// Parse decodes, defaults and validates a config held in memory. filename is
// used only in messages (it may be ""). The error, if any, is an *Error
// listing every problem at once.
func Parse(data []byte, filename string) (*Config, []Warning, error) {
	c, _, warnings, err := ParseSource(data, filename)
	return c, warnings, err
}

// ParseSource is Parse that also returns where each field is in the file.
func ParseSource(data []byte, filename string) (*Config, *Source, []Warning, error) {
	ps := &problems{file: filename, data: data}
	root, ok := parseRoot(data, ps)
	if !ok {
		return nil, nil, nil, ps.err()
	}
	m := newMeta()
	c := newDecoder(root, m, ps).config(root)
	applyDefaults(c, m.isSet)
	validate(c, m, ps)
	if err := ps.err(); err != nil {
		return nil, nil, nil, err
	}
	return c, &Source{file: filename, meta: m}, lint(c, m, filename), nil
}

// Source tells where the fields of a loaded config are in its file, for tools that report
// on fields after loading (`pgfront check` checks the files and names a config points at).
// It is immutable.
type Source struct {
	file string
	meta *meta
}

// Line returns the line of a field path ("routes.rw.tls.cert_file") or, when the file does
// not set it (a default), of its nearest enclosing node.
func (s *Source) Line(path string) int { return s.meta.line(path) }

// Warning returns a Warning about the field at path.
func (s *Source) Warning(path, format string, args ...any) Warning {
	return Warning{File: s.file, Line: s.Line(path), Path: path, Message: fmt.Sprintf(format, args...)}
}

// Problem returns a Problem with the field at path.
func (s *Source) Problem(path, format string, args ...any) Problem {
	return Problem{File: s.file, Line: s.Line(path), Path: path, Message: fmt.Sprintf(format, args...)}
}
