package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// base is a minimal valid config; cases edit it.
const base = `clusters:
  main:
    servers:
      - name: pg1
        address: 127.0.0.1:5432
        role: primary
      - name: pg2
        address: 127.0.0.1:5433
        role: replica
routes:
  rw:
    listen: 127.0.0.1:6432
    cluster: main
    role: primary
`

// edit returns base with old replaced by new; old must occur.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(base, old) {
		t.Fatalf("base has no %q", old)
	}
	return strings.Replace(base, old, new, 1)
}

// lineOf returns the 1-based line of the first line of src containing at.
func lineOf(t *testing.T, src, at string) int {
	t.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, at) {
			return i + 1
		}
	}
	t.Fatalf("no line contains %q in:\n%s", at, src)
	return 0
}

// withHealth returns base with a health section for cluster main; lines are
// its keys, indented six spaces, each ending in a newline.
func withHealth(lines string) string {
	return strings.Replace(base, "    servers:", "    health:\n"+lines+"    servers:", 1)
}

// roRoute is a replica route to append to base.
const roRoute = "  ro:\n    listen: 127.0.0.1:6433\n    cluster: main\n    role: replica\n"

func d(s string) Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration(v)
}

func mustParse(t *testing.T, src string) (*Config, []Warning) {
	t.Helper()
	c, w, err := Parse([]byte(src), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return c, w
}

func TestExample(t *testing.T) {
	c, warnings, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("example has warnings: %v", warnings)
	}
	if c.Path != "testdata/example.yaml" {
		t.Errorf("Path = %q", c.Path)
	}
	if got := c.RouteNames(); !reflect.DeepEqual(got, []string{"ro", "rw"}) {
		t.Errorf("RouteNames = %v", got)
	}
	if got := c.ClusterNames(); !reflect.DeepEqual(got, []string{"main"}) {
		t.Errorf("ClusterNames = %v", got)
	}

	global := Timeouts{
		Startup: d("10s"), Connect: d("3s"), Queue: d("5s"), FailoverWait: d("35s"), ClientIdle: d("1h"),
		IdleInTransaction: d("10m"), ServerIdle: 0, ClientFin: d("5s"), ServerFin: d("5s"),
	}
	roTimeouts := global
	roTimeouts.ClientIdle = d("30m")
	side := TCPSide{KeepaliveIdle: d("5s"), KeepaliveInterval: d("2s"), KeepaliveCount: 4, UserTimeout: d("13s")}
	tcp := TCP{Client: side, Server: side}
	roTCP := tcp
	roTCP.Client.UserTimeout = d("45s")
	want := &Config{
		Log:      Log{Format: "text", Level: "info"},
		MaxConn:  10000,
		MaxQueue: 1000,
		Shutdown: Shutdown{Grace: d("30s")},
		TCP:      tcp,
		Timeouts: global,
		Clusters: map[string]*Cluster{"main": {Name: "main",
			Servers: []*Server{
				{Name: "pg1", Address: "127.0.0.1:5432", Role: "primary", MaxConn: 0, Weight: 1},
				{Name: "pg2", Address: "127.0.0.1:5433", Role: "replica", MaxConn: 0, Weight: 1},
			},
			OnMarkedDown: "shutdown_sessions",
			Health: Health{Check: "postgres", Interval: d("2s"), FastInterval: d("500ms"), Timeout: d("1s"),
				Rise: 2, Fall: 2, Jitter: 0.1, User: "postgres", Database: "postgres", PatroniScheme: "http"},
			ServerTLS: ServerTLS{Mode: "disable"},
		}},
		Routes: map[string]*Route{
			"rw": {Name: "rw", Listen: "127.0.0.1:6432", Cluster: "main", Role: "primary", Balance: "first",
				OnClientFin: "abort", MaxConn: 0, ConnectRetries: 2, Timeouts: global, TCP: tcp, TLS: RouteTLS{Mode: "disable"}},
			"ro": {Name: "ro", Listen: "127.0.0.1:6433", Cluster: "main", Role: "replica", Balance: "roundrobin",
				OnClientFin: "abort", MaxConn: 0, ConnectRetries: 2, Timeouts: roTimeouts, TCP: roTCP,
				MaxLag: MaxLag{Bytes: 16 << 20, Time: d("30s")}, Fallback: "primary", TLS: RouteTLS{Mode: "disable"}},
		},
		Admin: Admin{Listen: "127.0.0.1:9187"},
		Alerts: Alerts{SampleInterval: d("5s"), CloseWait: 50, FinWait2: 50, HalfClosedAge: d("30s"),
			Queue: 100, FDUsage: 0.8},
		Fleet: Fleet{CancelFallbackRate: 10, CancelFallbackBurst: 20},
		Path:  "testdata/example.yaml",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example decoded as\n%s\nwant\n%s", dump(c), dump(want))
	}
}

// dump renders c with its clusters and routes dereferenced, for messages.
func dump(c *Config) string {
	if c == nil {
		return "<nil>"
	}
	cc := *c
	cc.Clusters, cc.Routes = nil, nil
	s := fmt.Sprintf("%+v", cc)
	for _, n := range c.ClusterNames() {
		cl := c.Clusters[n]
		s += fmt.Sprintf("\ncluster %s on_marked_down=%s health=%+v", n, cl.OnMarkedDown, cl.Health)
		for _, sv := range cl.Servers {
			s += fmt.Sprintf("\nserver %s %+v", n, *sv)
		}
	}
	for _, n := range c.RouteNames() {
		s += fmt.Sprintf("\nroute %+v", *c.Routes[n])
	}
	return s
}

// The README links pgfront.example.yaml; it must stay the file tested here.
func TestExampleFilesMatch(t *testing.T) {
	a, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../pgfront.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("pgfront.example.yaml and internal/config/testdata/example.yaml differ")
	}
}

// Every default is what the example's comments say, for a file that sets
// nothing but the required fields.
func TestDefaults(t *testing.T) {
	c, warnings := mustParse(t, base)
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	ex, _, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example spells out the defaults, so everything global must match.
	if c.Log != ex.Log || c.MaxConn != ex.MaxConn || c.MaxQueue != ex.MaxQueue ||
		c.Shutdown != ex.Shutdown || c.TCP != ex.TCP || c.Timeouts != ex.Timeouts {
		t.Errorf("defaults differ from the example:\n%s\nexample:\n%s", dump(c), dump(ex))
	}
	if c.Timeouts.ServerIdle != 0 || c.Timeouts.ClientFin != d("5s") || c.MaxConn != 10000 {
		t.Errorf("unexpected defaults: %+v maxconn=%d", c.Timeouts, c.MaxConn)
	}
	for _, s := range c.Clusters["main"].Servers {
		if s.Weight != 1 || s.MaxConn != 0 {
			t.Errorf("server %s: weight=%d maxconn=%d, want 1, 0", s.Name, s.Weight, s.MaxConn)
		}
	}
	r := c.Routes["rw"]
	if r.Balance != "first" || r.OnClientFin != "abort" || r.ConnectRetries != 2 || r.MaxConn != 0 || r.Timeouts != c.Timeouts || r.TCP != c.TCP ||
		r.MaxLag != (MaxLag{}) || r.Fallback != "" {
		t.Errorf("route defaults: %+v", *r)
	}
	// The example spells out the health defaults too.
	cl, exCl := c.Clusters["main"], ex.Clusters["main"]
	if cl.Health != exCl.Health || cl.Health != defaultHealth || cl.OnMarkedDown != "shutdown_sessions" || cl.OnMarkedDown != exCl.OnMarkedDown {
		t.Errorf("cluster defaults: on_marked_down=%s health=%+v\nexample: on_marked_down=%s health=%+v",
			cl.OnMarkedDown, cl.Health, exCl.OnMarkedDown, exCl.Health)
	}
	h := cl.Health
	if h.Check != "postgres" || h.Interval != d("2s") || h.FastInterval != d("500ms") || h.Timeout != d("1s") ||
		h.Rise != 2 || h.Fall != 2 || h.Jitter != 0.1 || h.User != "postgres" || h.Database != "postgres" ||
		h.PatroniScheme != "http" || h.PasswordFile != "" || h.PasswordEnv != "" || h.Password != "" {
		t.Errorf("health defaults: %+v", h)
	}
	for _, s := range cl.Servers {
		if s.Patroni != "" {
			t.Errorf("server %s: patroni %q, want empty", s.Name, s.Patroni)
		}
	}
	// A replica route falls back to the primary unless told otherwise.
	c, _ = mustParse(t, base+"  ro:\n    listen: :0\n    cluster: main\n    role: replica\n")
	if ro := c.Routes["ro"]; ro.Fallback != "primary" || ro.MaxLag != (MaxLag{}) {
		t.Errorf("replica route defaults: %+v", *ro)
	}
	if c.Path != "" {
		t.Errorf("Path = %q for Parse, want empty", c.Path)
	}
}

func TestBalanceDefaultFollowsRole(t *testing.T) {
	for role, want := range map[string]string{"primary": "first", "replica": "roundrobin", "any": "roundrobin"} {
		c, _ := mustParse(t, edit(t, "cluster: main\n    role: primary", "cluster: main\n    role: "+role))
		if got := c.Routes["rw"].Balance; got != want {
			t.Errorf("role %s: balance %q, want %q", role, got, want)
		}
	}
}

// Zero written in the file is a value ("unlimited", "off"), not "use the default".
func TestExplicitZeroIsKept(t *testing.T) {
	src := `maxconn: 0
max_queue: 0
shutdown: {grace: 0}
tcp: {keepalive_idle: 0, keepalive_count: 0, user_timeout: 0s}
timeouts: {queue: 0, client_idle: 0s}
` + edit(t, "        role: replica\n", "        role: replica\n        weight: 0\n    health: {jitter: 0}\n") + "    connect_retries: 0\n" +
		"  ro:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: 0, time: 0}\n"
	c, _ := mustParse(t, src)
	if c.MaxConn != 0 || c.MaxQueue != 0 || c.Shutdown.Grace != 0 || c.TCP.Client.KeepaliveIdle != 0 ||
		c.TCP.Server.KeepaliveCount != 0 || c.TCP.Client.UserTimeout != 0 || c.Timeouts.Queue != 0 || c.Timeouts.ClientIdle != 0 {
		t.Errorf("zeros not kept: %s", dump(c))
	}
	if w := c.Clusters["main"].Servers[1].Weight; w != 0 {
		t.Errorf("weight = %d, want 0", w)
	}
	if j := c.Clusters["main"].Health.Jitter; j != 0 {
		t.Errorf("jitter = %g, want 0", j)
	}
	if l := c.Routes["ro"].MaxLag; l != (MaxLag{}) {
		t.Errorf("max_lag = %+v, want zero", l)
	}
	if r := c.Routes["rw"]; r.ConnectRetries != 0 || r.Timeouts.ClientIdle != 0 {
		t.Errorf("route: %+v", *r)
	}
	// The neighbours still get their defaults.
	if c.TCP.Server.KeepaliveInterval != d("2s") || c.Timeouts.IdleInTransaction != d("10m") {
		t.Errorf("defaults lost: %s", dump(c))
	}
}

func TestRouteTimeoutsInherit(t *testing.T) {
	src := `timeouts:
  client_idle: 2h
  server_fin: 7s
` + base + `    timeouts:
      client_idle: 0
      connect: 1s
  ro:
    listen: 127.0.0.1:6433
    cluster: main
    role: replica
`
	c, _ := mustParse(t, src)
	rw, ro := c.Routes["rw"].Timeouts, c.Routes["ro"].Timeouts
	tests := []struct {
		name      string
		got, want Duration
	}{
		{"rw client_idle overridden to 0", rw.ClientIdle, 0},
		{"rw connect overridden", rw.Connect, d("1s")},
		{"rw server_fin from global", rw.ServerFin, d("7s")},
		{"rw startup from global default", rw.Startup, d("10s")},
		{"ro client_idle from global", ro.ClientIdle, d("2h")},
		{"ro connect from global default", ro.Connect, d("3s")},
		{"global client_idle", c.Timeouts.ClientIdle, d("2h")},
		{"global connect untouched by route", c.Timeouts.Connect, d("3s")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, tt.got, tt.want)
		}
	}
}

// YAML anchors, aliases, merge keys and flow style decode like the spelled-out form.
func TestYAMLFeatures(t *testing.T) {
	src := `timeouts: &t
  client_idle: 20m
clusters:
  main:
    servers:
      - &pg1 {name: pg1, address: "db1:5432", role: primary, weight: 3}
      - <<: *pg1
        name: pg2
        role: replica
routes:
  rw:
    listen: "[::1]:6432"
    cluster: main
    role: primary
    timeouts:
      <<: *t
      connect: 1s
  ro: {listen: ":0", cluster: main, role: replica, maxconn: 1_000}
`
	c, _ := mustParse(t, src)
	pg2 := c.Clusters["main"].Servers[1]
	if *pg2 != (Server{Name: "pg2", Address: "db1:5432", Role: "replica", Weight: 3}) {
		t.Errorf("merged server: %+v", *pg2)
	}
	if rw := c.Routes["rw"]; rw.Timeouts.ClientIdle != d("20m") || rw.Timeouts.Connect != d("1s") || rw.Listen != "[::1]:6432" {
		t.Errorf("rw: %+v", *rw)
	}
	if ro := c.Routes["ro"]; ro.MaxConn != 1000 || ro.Listen != ":0" {
		t.Errorf("ro: %+v", *ro)
	}
}

// Listen addresses that can all be bound together are not a clash.
func TestListenNoClash(t *testing.T) {
	for _, pair := range [][2]string{
		{"127.0.0.1:0", "127.0.0.1:0"}, // port 0: a free port each
		{"127.0.0.1:6432", "127.0.0.2:6432"},
		{"0.0.0.0:6432", "[::1]:6432"},
		{"127.0.0.1:6432", "127.0.0.1:6433"},
	} {
		src := edit(t, "listen: 127.0.0.1:6432", "listen: \""+pair[0]+"\"") +
			"  ro:\n    listen: \"" + pair[1] + "\"\n    cluster: main\n    role: replica\n"
		if _, _, err := Parse([]byte(src), "t.yaml"); err != nil {
			t.Errorf("%v: %v", pair, err)
		}
	}
}

// want describes one expected problem or warning: the line containing at,
// the field path, and a substring of the message.
type want struct {
	at, path, msg string
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"unknown top-level key", "maxconns: 5\n" + base,
			[]want{{"maxconns", "maxconns", `unknown field "maxconns" (did you mean "maxconn"?)`}}},
		{"unknown key in timeouts", "timeouts:\n  queue: 1s\n  client_idel: 5m\n" + base,
			[]want{{"client_idel", "timeouts.client_idel", `unknown field "client_idel" (did you mean "client_idle"?)`}}},
		{"unknown key in server", edit(t, "address: 127.0.0.1:5433\n", "address: 127.0.0.1:5433\n        port: 5433\n"),
			[]want{{"port: 5433", "clusters.main.servers[1].port", `unknown field "port"`}}},
		{"proxy_protocol bad network", base + "    proxy_protocol:\n      trusted: [10.0.0.0/8, 10.1.2.3/8, nonsense]\n",
			[]want{{"trusted:", "routes.rw.proxy_protocol.trusted[1]", `"10.1.2.3/8" has host bits set (did you mean 10.0.0.0/8?)`},
				{"trusted:", "routes.rw.proxy_protocol.trusted[2]", `"nonsense" is not a network`}}},
		{"proxy_protocol trusts nobody", base + "    proxy_protocol: {}\n",
			[]want{{"proxy_protocol", "routes.rw.proxy_protocol.trusted", "lists no network"}}},
		{"proxy_protocol unknown key", base + "    proxy_protocol:\n      trust: [10.0.0.0/8]\n",
			[]want{{"proxy_protocol", "routes.rw.proxy_protocol.trusted", "lists no network"},
				{"trust:", "routes.rw.proxy_protocol.trust", `unknown field "trust" (known: trusted)`}}},
		{"unknown key in route", base + "    lisen: x\n",
			[]want{{"lisen", "routes.rw.lisen", `unknown field "lisen" (did you mean "listen"?)`}}},
		{"unknown key in route timeouts", base + "    timeouts:\n      client_fin: 1s\n      clientfin: 1s\n",
			[]want{{"clientfin", "routes.rw.timeouts.clientfin", `unknown field "clientfin" (did you mean "client_fin"?)`}}},
		{"unknown key lists known ones", "tcp:\n  nodelay: true\n" + base,
			[]want{{"nodelay", "tcp.nodelay", "known: keepalive_idle, keepalive_interval, keepalive_count, user_timeout"}}},
		{"garbage duration", "timeouts:\n  connect: 5x\n" + base,
			[]want{{"connect: 5x", "timeouts.connect", `invalid duration "5x"`}}},
		{"negative duration", "shutdown:\n  grace: -1s\n" + base,
			[]want{{"grace", "shutdown.grace", "must not be negative"}}},
		{"duration without unit", "timeouts:\n  client_idle: 30\n" + base,
			[]want{{"client_idle", "timeouts.client_idle", "duration 30 needs a unit"}}},
		{"bad route duration", base + "    timeouts:\n      queue: soon\n",
			[]want{{"queue: soon", "routes.rw.timeouts.queue", `invalid duration "soon"`}}},
		{"negative maxconn", "maxconn: -1\n" + base,
			[]want{{"maxconn", "maxconn", "must not be negative"}}},
		{"negative server numbers", edit(t, "role: replica\n", "role: replica\n        weight: -1\n        maxconn: -2\n"),
			[]want{{"weight", "clusters.main.servers[1].weight", "must not be negative"},
				{"maxconn: -2", "clusters.main.servers[1].maxconn", "must not be negative"}}},
		{"quoted integer", "max_queue: \"10\"\n" + base,
			[]want{{"max_queue", "max_queue", `must be an integer, not a string ("10")`}}},
		{"list for integer", "maxconn: [1]\n" + base,
			[]want{{"maxconn", "maxconn", "must be an integer, not a list"}}},
		{"scalar for mapping", "timeouts: 5s\n" + base,
			[]want{{"timeouts", "timeouts", "must be a mapping, not a string"}}},
		{"scalar for list", edit(t, "    servers:\n      - name: pg1", "    servers: pg1\n    x:\n      - name: pg1"),
			[]want{{"servers: pg1", "clusters.main.servers", "must be a list, not a string"},
				{"x:", "clusters.main.x", `unknown field "x"`}}},
		{"unknown cluster", edit(t, "cluster: main", "cluster: mian"),
			[]want{{"cluster: mian", "routes.rw.cluster", `unknown cluster "mian" (defined: main)`}}},
		{"duplicate listen", base + "  ro:\n    listen: 127.0.0.1:6432 # dup\n    cluster: main\n    role: replica\n",
			[]want{{"# dup", "routes.ro.listen", `listen address 127.0.0.1:6432 is already used by route "rw"`}}},
		{"wildcard listen clash", base + "  ro:\n    listen: :6432\n    cluster: main\n    role: replica\n",
			[]want{{"listen: :6432", "routes.ro.listen", `already used by route "rw"`}}},
		{"bad route role", edit(t, "cluster: main\n    role: primary", "cluster: main\n    role: master"),
			[]want{{"role: master", "routes.rw.role", `must be primary, replica or any, not "master"`}}},
		{"bad server role", edit(t, "role: replica", "role: standby"),
			[]want{{"role: standby", "clusters.main.servers[1].role", `must be primary or replica, not "standby"`}}},
		{"missing server address points at its mapping", edit(t, "        address: 127.0.0.1:5433\n", ""),
			[]want{{"name: pg2", "clusters.main.servers[1].address", "is required"}}},
		{"missing route fields point at the route", edit(t, "    cluster: main\n    role: primary\n", ""),
			[]want{{"rw:", "routes.rw.cluster", "is required"}, {"rw:", "routes.rw.role", "is required (primary, replica or any)"}}},
		{"duplicate server name", edit(t, "name: pg2", "name: pg1 # dup"),
			[]want{{"# dup", "clusters.main.servers[1].name", `duplicate server name "pg1" in cluster "main" (first at clusters.main.servers[0])`}}},
		{"address without port", edit(t, "address: 127.0.0.1:5433", "address: 127.0.0.1 # here"),
			[]want{{"# here", "clusters.main.servers[1].address", "must be host:port"}}},
		{"address port out of range", edit(t, "address: 127.0.0.1:5433", "address: db:70000"),
			[]want{{"db:70000", "clusters.main.servers[1].address", "from 1 to 65535"}}},
		{"server port 0", edit(t, "address: 127.0.0.1:5433", "address: db:0"),
			[]want{{"db:0", "clusters.main.servers[1].address", "from 1 to 65535"}}},
		{"server without host", edit(t, "address: 127.0.0.1:5433", "address: :5433"),
			[]want{{":5433", "clusters.main.servers[1].address", "needs a host"}}},
		{"listen without port", edit(t, "listen: 127.0.0.1:6432", "listen: localhost"),
			[]want{{"localhost", "routes.rw.listen", "must be host:port"}}},
		{"connect_retries too high", base + "    connect_retries: 11\n",
			[]want{{"connect_retries", "routes.rw.connect_retries", "must be from 0 to 10"}}},
		{"zero startup and connect", "timeouts:\n  startup: 0\n" + base + "    timeouts:\n      connect: 0s\n",
			[]want{{"startup: 0", "timeouts.startup", "must be greater than 0"},
				{"connect: 0s", "routes.rw.timeouts.connect", "must be greater than 0"}}},
		{"keepalive count 0 while on", "tcp:\n  keepalive_count: 0\n" + base,
			[]want{{"keepalive_count", "tcp.keepalive_count", "must be from 1 to 127 while keepalive is on"}}},
		{"keepalive count too high while off", "tcp:\n  keepalive_idle: 0\n  keepalive_count: 128\n" + base,
			[]want{{"keepalive_count", "tcp.keepalive_count", "must be from 0 to 127"}}},
		{"keepalive in fractions of seconds", "tcp:\n  keepalive_interval: 1500ms\n  keepalive_idle: 40000s\n" + base,
			[]want{{"keepalive_interval", "tcp.keepalive_interval", "whole seconds"},
				{"keepalive_idle", "tcp.keepalive_idle", "at most 32767s"}}},
		{"keepalive interval 0 while on", "tcp:\n  keepalive_interval: 0\n" + base,
			[]want{{"keepalive_interval", "tcp.keepalive_interval", "must be greater than 0 while keepalive is on"}}},
		{"bad log values", "log:\n  format: xml\n  level: trace\n" + base,
			[]want{{"format", "log.format", `must be text or json, not "xml"`},
				{"level", "log.level", `must be debug, info, warn or error, not "trace"`}}},
		{"bad balance and on_client_fin", base + "    balance: random\n    on_client_fin: close\n",
			[]want{{"balance", "routes.rw.balance", "must be first, roundrobin or leastconn"},
				{"on_client_fin", "routes.rw.on_client_fin", "must be abort or forward"}}},
		{"bad names", strings.ReplaceAll(base, "main", "main/1") + "  \"r w\":\n    listen: :7000\n    cluster: main/1\n    role: any\n",
			[]want{{"main/1:", "clusters.main/1", `cluster name "main/1" must match`},
				{"r w", "routes.r w", `route name "r w" must match`}}},
		{"bad server name", edit(t, "name: pg2", "name: pg 2"),
			[]want{{"pg 2", "clusters.main.servers[1].name", `"pg 2" must match`}}},
		{"cluster without servers", edit(t, "clusters:\n", "clusters:\n  empty:\n    servers: []\n  none:\n"),
			[]want{{"servers: []", "clusters.empty.servers", `cluster "empty" needs at least one server`},
				{"none:", "clusters.none.servers", `cluster "none" needs at least one server`}}},
		{"no routes", base[:strings.Index(base, "routes:")],
			[]want{{"clusters:", "routes", "at least one route is required"}}},
		{"no clusters", "routes:" + strings.SplitN(base, "routes:", 2)[1],
			[]want{{"routes:", "clusters", "at least one cluster is required"},
				{"cluster: main", "routes.rw.cluster", `unknown cluster "main" (no clusters are defined)`}}},
		{"alias without anchor", "timeouts: *t\n" + base,
			[]want{{"timeouts", "timeouts", "alias *t refers to no anchor before it"}}},
		{"unknown key merged from an anchor", "timeouts: &t\n  queue: 1s\n  bogus: 1s\n" + base + "    timeouts:\n      <<: *t\n",
			[]want{{"bogus", "timeouts.bogus", `unknown field "bogus"`}, {"bogus", "routes.rw.timeouts.bogus", `unknown field "bogus"`}}},
		{"unknown key in health", withHealth("      intervall: 1s\n"),
			[]want{{"intervall", "clusters.main.health.intervall", `unknown field "intervall" (did you mean "interval"?)`}}},
		{"unknown key in cluster", strings.Replace(base, "    servers:", "    on_marked_dwon: keep\n    servers:", 1),
			[]want{{"on_marked_dwon", "clusters.main.on_marked_dwon", `unknown field "on_marked_dwon" (did you mean "on_marked_down"?)`}}},
		{"unknown key in cluster lists known ones", strings.Replace(base, "    servers:", "    checks: {}\n    servers:", 1),
			[]want{{"checks", "clusters.main.checks", `unknown field "checks" (known: on_marked_down, health, server_tls, servers, dcs)`}}},
		{"unknown key in max_lag", base + roRoute + "    max_lag:\n      bytes: 1MB\n      seconds: 5\n",
			[]want{{"seconds", "routes.ro.max_lag.seconds", `unknown field "seconds" (known: bytes, time)`}}},
		{"bad check and on_marked_down", strings.Replace(withHealth("      check: http\n"), "    health:", "    on_marked_down: kill\n    health:", 1),
			[]want{{"on_marked_down", "clusters.main.on_marked_down", `must be shutdown_sessions or keep, not "kill"`},
				{"check: http", "clusters.main.health.check", `must be postgres, patroni, tcp or none, not "http"`}}},
		{"zero health durations", withHealth("      interval: 0s\n      fast_interval: 0\n      timeout: 0s\n"),
			[]want{{"interval: 0s", "clusters.main.health.interval", "must be greater than 0"},
				{"fast_interval", "clusters.main.health.fast_interval", "must be greater than 0"},
				{"timeout", "clusters.main.health.timeout", "must be greater than 0"}}},
		{"fast_interval and timeout against interval", withHealth("      interval: 3s\n      fast_interval: 4s\n      timeout: 3s\n"),
			[]want{{"fast_interval", "clusters.main.health.fast_interval", "must not be longer than interval (3s), not 4s"},
				{"timeout", "clusters.main.health.timeout", "must be shorter than interval (3s), not 3s"}}},
		{"short interval against defaults points at the interval", withHealth("      interval: 400ms\n"),
			[]want{{"interval", "clusters.main.health.fast_interval", "is 500ms (the default), which is longer than interval (400ms): set fast_interval too"},
				{"interval", "clusters.main.health.timeout", "is 1s (the default), which is not shorter than interval (400ms): set timeout too"}}},
		{"long timeout against default interval", withHealth("      timeout: 2s\n"),
			[]want{{"timeout", "clusters.main.health.timeout", "must be shorter than interval (2s), not 2s"}}},
		{"rise, fall and jitter out of range", withHealth("      rise: 0\n      fall: 101\n      jitter: 0.6\n"),
			[]want{{"rise", "clusters.main.health.rise", "must be from 1 to 100, not 0"},
				{"fall", "clusters.main.health.fall", "must be from 1 to 100, not 101"},
				{"jitter", "clusters.main.health.jitter", "must be from 0 to 0.5 (a fraction of interval), not 0.6"}}},
		{"negative jitter", withHealth("      jitter: -0.1\n"),
			[]want{{"jitter", "clusters.main.health.jitter", "must be from 0 to 0.5"}}},
		{"jitter not a number", withHealth("      jitter: \"0.1\"\n"),
			[]want{{"jitter", "clusters.main.health.jitter", `must be a number, not a string ("0.1")`}}},
		{"jitter NaN and infinity", strings.Replace(withHealth("      jitter: .nan\n"), "routes:", "  two:\n    health: {jitter: .inf}\n    servers: [{name: a, address: 'h:1'}]\nroutes:", 1),
			[]want{{"jitter: .nan", "clusters.main.health.jitter", "number .nan is out of range"},
				{"jitter: .inf", "clusters.two.health.jitter", "number .inf is out of range"}}},
		{"bad patroni_scheme and empty user", withHealth("      patroni_scheme: ftp\n      user: \"\"\n"),
			[]want{{"patroni_scheme", "clusters.main.health.patroni_scheme", `must be http or https, not "ftp"`},
				{"user", "clusters.main.health.user", "must not be empty"}}},
		{"admin off loopback without a token", "admin:\n  listen: 0.0.0.0:9187\n" + base,
			[]want{{"listen: 0.0.0.0", "admin.listen", "0.0.0.0:9187 is not a loopback address: set admin.admin_token_file"}}},
		{"admin on all interfaces without a token", "admin:\n  listen: :9187\n" + base,
			[]want{{"listen: :9187", "admin.listen", "is not a loopback address"}}},
		{"admin token sources", "admin:\n  listen: 10.0.0.1:9187\n  admin_token_file: /t\n  admin_token_env: T\n  read_token_env: 1X\n  read_token_file: \"\"\n" + base,
			[]want{{"admin_token_env", "admin.admin_token_env", "admin_token_file and admin_token_env are both set: give one source of the admin token"},
				{"read_token_env", "admin.read_token_env", `"1X" is not an environment variable name`},
				{"read_token_file", "admin.read_token_file", "must not be empty"}}},
		{"admin listen clashes with a route", "admin:\n  listen: 127.0.0.1:6432\n" + base,
			[]want{{"listen: 127.0.0.1:6432", "admin.listen", `listen address 127.0.0.1:6432 is already used by route "rw"`}}},
		{"admin listen malformed", "admin:\n  listen: nowhere\n" + base,
			[]want{{"listen: nowhere", "admin.listen", "must be host:port"}}},
		{"bad alerts", "alerts:\n  sample_interval: 0s\n  close_wait: -1\n  fd_usage: 1.5\n  half_closed_age: soon\n  unknown: 1\n" + base,
			[]want{{"sample_interval", "alerts.sample_interval", "must be greater than 0"},
				{"close_wait", "alerts.close_wait", "must not be negative"},
				{"fd_usage", "alerts.fd_usage", "must be a fraction from 0 to 1 (0 = off), not 1.5"},
				{"half_closed_age", "alerts.half_closed_age", `invalid duration "soon"`},
				{"unknown: 1", "alerts.unknown", `unknown field "unknown"`}}},
		{"terminate without a certificate", base + "    tls:\n      mode: terminate\n      require: yes\n",
			[]want{{"mode: terminate", "routes.rw.tls.mode", "terminate needs cert_file and key_file"},
				{"require: yes", "routes.rw.tls.require", "must be true or false, not a string"}}},
		{"terminate-only keys on passthrough", base + "    tls:\n      mode: passthrough\n      cert_file: /c\n      sni:\n        a.example.com: main\n",
			[]want{{"cert_file", "routes.rw.tls.cert_file", "applies only to tls.mode terminate (this route's tls.mode is passthrough)"},
				{"sni:", "routes.rw.tls.sni", "applies only to tls.mode terminate"}}},
		{"bad tls mode and sni", base + "    tls:\n      mode: terminate\n      cert_file: /c\n      key_file: /k\n      sni:\n        Bad_Name:5432: main\n        b.example.com: nope\n",
			[]want{{"Bad_Name", "routes.rw.tls.sni.Bad_Name:5432", "is not a TLS server name"},
				{"b.example.com", "routes.rw.tls.sni.b.example.com", `unknown cluster "nope"`}}},
		{"server_tls", strings.Replace(base, "    servers:", "    server_tls:\n      mode: verify-full\n      cert_file: /c\n    servers:", 1),
			[]want{{"mode: verify-full", "clusters.main.server_tls.mode", "verify-full needs ca_file"},
				{"cert_file", "clusters.main.server_tls.cert_file", "give both or neither"}}},
		{"server_tls require with a CA", strings.Replace(base, "    servers:", "    server_tls:\n      mode: require\n      ca_file: /ca\n    servers:", 1),
			[]want{{"ca_file", "clusters.main.server_tls.ca_file", "is only used by verify-ca and verify-full"}}},
		{"server_tls disable with files", strings.Replace(base, "    servers:", "    server_tls:\n      mode: sometimes\n    servers:", 1),
			[]want{{"mode: sometimes", "clusters.main.server_tls.mode", "must be disable, prefer, require, verify-ca or verify-full"}}},
		{"two password sources", withHealth("      password: x\n      password_env: PW\n"),
			[]want{{"password_env", "clusters.main.health.password_env", "password and password_env are both set: give one password source"}}},
		{"three password sources", withHealth("      password_file: /pw\n      password_env: PW\n      password: x\n"),
			[]want{{"password_env", "clusters.main.health.password_env", "password_file and password_env are both set"},
				{"password: x", "clusters.main.health.password", "password_file and password are both set"}}},
		{"bad password sources", withHealth("      password_env: 1PW\n      password_file: \"\"\n"),
			[]want{{"password_env", "clusters.main.health.password_env", `"1PW" is not an environment variable name`},
				{"password_file", "clusters.main.health.password_file", "must not be empty"}}},
		{"static roles need a role", strings.Replace(withHealth("      check: tcp\n"), "        role: replica\n", "", 1),
			[]want{{"name: pg2", "clusters.main.servers[1].role", "is required (primary or replica) when health.check is tcp: roles are static"}}},
		{"no checks need a role", strings.Replace(withHealth("      check: none\n"), "        role: primary\n", "", 1),
			[]want{{"name: pg1", "clusters.main.servers[0].role", "is required (primary or replica) when health.check is none"}}},
		{"a learned role given as empty", edit(t, "role: replica", "role: \"\""),
			[]want{{`role: ""`, "clusters.main.servers[1].role", `must be primary or replica, not ""`}}},
		{"patroni check needs each node's REST API", strings.Replace(withHealth("      check: patroni\n"), "        role: primary\n", "        patroni: 127.0.0.1:8008\n", 1),
			[]want{{"name: pg2", "clusters.main.servers[1].patroni", "is required when health.check is patroni"}}},
		{"bad patroni address", edit(t, "role: replica", "role: replica\n        patroni: localhost"),
			[]want{{"patroni", "clusters.main.servers[1].patroni", "must be host:port"}}},
		{"max_lag and fallback on non-replica routes", base + "    max_lag: {time: 1s}\n  all:\n    listen: :0\n    cluster: main\n    role: any\n    fallback: none\n",
			[]want{{"max_lag", "routes.rw.max_lag", "applies only to replica routes (this route's role is primary)"},
				{"fallback", "routes.all.fallback", "applies only to replica routes (this route's role is any)"}}},
		{"sync_standby_only needs patroni, and a replica route", base + roRoute + "    sync_standby_only: true\n  rw2:\n    listen: :0\n    cluster: main\n    role: primary\n    sync_standby_only: true # rw2\n",
			[]want{{"sync_standby_only", "routes.ro.sync_standby_only", "needs health.check patroni in cluster \"main\""},
				{"true # rw2", "routes.rw2.sync_standby_only", "applies only to replica routes (this route's role is primary)"}}},
		{"bad fallback", base + roRoute + "    fallback: any\n",
			[]want{{"fallback", "routes.ro.fallback", `must be primary or none, not "any"`}}},
		{"bad lag sizes and time", base + roRoute + "    max_lag:\n      bytes: 16mb\n      time: -1s\n" +
			"  r1:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: 1.5GB}\n" +
			"  r2:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: -1}\n" +
			"  r3:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: 16 XB}\n" +
			"  r4:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: 1.5}\n" +
			"  r5:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: 9000000000GB}\n" +
			"  r6:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: [1]}\n",
			[]want{{"bytes: 16mb", "routes.ro.max_lag.bytes", `invalid size "16mb": units are case-sensitive, as in PostgreSQL (did you mean 16MB?)`},
				{"time: -1s", "routes.ro.max_lag.time", "must not be negative"},
				{"1.5GB", "routes.r1.max_lag.bytes", `invalid size "1.5GB": want whole bytes`},
				{"bytes: -1", "routes.r2.max_lag.bytes", "size -1 must not be negative"},
				{"16 XB", "routes.r3.max_lag.bytes", `unknown unit "XB"`},
				{"bytes: 1.5}", "routes.r4.max_lag.bytes", `must be a size such as 16MB or 1024 (bytes), not a number ("1.5")`},
				{"9000000000GB", "routes.r5.max_lag.bytes", "is too large"},
				{"bytes: [1]", "routes.r6.max_lag.bytes", "must be a size, not a list"}}},
		{"empty file", "", []want{{"", "", "the config file is empty"}}},
		{"comments only", "# nothing\n\n# here\n", []want{{"", "", "the config file is empty"}}},
		{"syntax error", base + "  ro: [\n", []want{{"ro: [", "", "invalid YAML"}}},
		{"duplicate key", "maxconn: 1\nmaxconn: 2\n" + base, []want{{"maxconn: 2", "", `mapping key "maxconn" already defined`}}},
		{"two documents", base + "---\nmaxconn: 1\n", []want{{"maxconn: 1", "", "must hold one YAML document, not 2"}}},
		{"top level list", "- a\n- b\n", []want{{"- a", "", "the top level must be a mapping"}}},
		{
			// Problems of every kind are reported together, in file order.
			"many problems at once",
			"maxconn: -5\ntimeouts:\n  connect: 3x\nfoo: 1\n" +
				edit(t, "cluster: main\n    role: primary", "cluster: nope\n    role: writer") +
				"  ro:\n    listen: 127.0.0.1:6432 # dup\n    cluster: main\n    role: replica\n",
			[]want{
				{"maxconn: -5", "maxconn", "must not be negative"},
				{"connect: 3x", "timeouts.connect", `invalid duration "3x"`},
				{"foo: 1", "foo", `unknown field "foo"`},
				{"cluster: nope", "routes.rw.cluster", `unknown cluster "nope"`},
				{"role: writer", "routes.rw.role", `not "writer"`},
				{"# dup", "routes.ro.listen", `already used by route "rw"`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w, err := Parse([]byte(tt.src), "bad.yaml")
			if err == nil {
				t.Fatalf("no error; config %s, warnings %v\n%s", dump(c), w, tt.src)
			}
			if c != nil || w != nil {
				t.Errorf("config or warnings returned with an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			checkFindings(t, tt.src, asFindings(e.Problems), tt.want)
			if t.Failed() {
				t.Logf("source:\n%s\nerror:\n%v", tt.src, err)
			}
			for i := 1; i < len(e.Problems); i++ {
				if e.Problems[i].Line < e.Problems[i-1].Line {
					t.Errorf("problems not in file order: %v", e.Problems)
				}
			}
		})
	}
}

type finding struct {
	File, Path, Message string
	Line                int
}

func asFindings[T Problem | Warning](xs []T) []finding {
	out := make([]finding, len(xs))
	for i, x := range xs {
		switch v := any(x).(type) {
		case Problem:
			out[i] = finding{v.File, v.Path, v.Message, v.Line}
		case Warning:
			out[i] = finding{v.File, v.Path, v.Message, v.Line}
		}
	}
	return out
}

// checkFindings matches got against wants one to one, in order.
func checkFindings(t *testing.T, src string, got []finding, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Errorf("got %d findings, want %d:", len(got), len(wants))
		for _, g := range got {
			t.Errorf("  %d: %s: %s", g.Line, g.Path, g.Message)
		}
		return
	}
	for i, w := range wants {
		g := got[i]
		line := 0
		if w.at != "" {
			line = lineOf(t, src, w.at)
		}
		if g.Line != line || g.Path != w.path || !strings.Contains(g.Message, w.msg) || g.File == "" {
			t.Errorf("finding %d = %s:%d: %s: %s\nwant line %d (%q), path %q, message containing %q",
				i, g.File, g.Line, g.Path, g.Message, line, w.at, w.path, w.msg)
		}
	}
}

func TestLint(t *testing.T) {
	ro := "  ro:\n    listen: 127.0.0.1:6433\n    cluster: main\n    role: replica\n"
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"example-like base is clean", base, nil},
		{"a patroni cluster's primary route refusing mid-election", strings.ReplaceAll(withHealth("      check: patroni\n"), "        role: ", "        patroni: 127.0.0.1:8008\n        # ") +
			"    timeouts:\n      failover_wait: 10s\n",
			[]want{{"failover_wait: 10s", "routes.rw.timeouts.failover_wait", "failover_wait is 10s on route rw, shorter than a default Patroni election (ttl 30s)"}}},
		{"the default failover_wait waits out a patroni election", strings.ReplaceAll(withHealth("      check: patroni\n"), "        role: ", "        patroni: 127.0.0.1:8008\n        # "), nil},
		{"global client_fin off with long idle is loud", "timeouts:\n  client_fin: 0s\n" + base,
			[]want{{"client_fin", "timeouts.client_fin", "DANGER: client_fin is 0 (off)"}}},
		{"client_fin off names the trap and the bound", "timeouts:\n  client_idle: 10m\n  idle_in_transaction: 5m\n  client_fin: 0s\n" + base,
			[]want{{"client_fin", "timeouts.client_fin", "half-closed sessions can hold maxconn slots until client_idle/idle_in_transaction (10m) ends them. This is the HAProxy CLOSE_WAIT/FIN_WAIT2 trap"}}},
		{"client_fin off with idle off holds slots forever", "timeouts:\n  client_fin: 0\n  idle_in_transaction: 0\n  client_idle: 5m\n" + base,
			[]want{{"client_fin", "timeouts.client_fin", "DANGER: client_fin is 0 (off): after the server closes, the client may never close its side; half-closed sessions can hold maxconn slots forever"}}},
		{"server_fin off with server_idle off is loud", "timeouts:\n  server_fin: 0\n" + base,
			[]want{{"server_fin", "timeouts.server_fin", "DANGER: server_fin is 0 (off)"}}},
		{"server_fin off bounded by server_idle", "timeouts:\n  server_fin: 0\n  server_idle: 10m\n" + base,
			[]want{{"server_fin", "timeouts.server_fin", "server_fin is 0 (off): after the client closes, the server may never close its side; half-closed sessions can hold maxconn slots until server_idle (10m) ends them"}}},
		{"route turning client_fin off", base + "    timeouts:\n      client_fin: 0s\n",
			[]want{{"client_fin", "routes.rw.timeouts.client_fin", "DANGER: client_fin is 0"}}},
		{"global client_fin off is reported once, not per inheriting route", "timeouts:\n  client_fin: 0s\n  client_idle: 10m\n" + base + ro,
			[]want{{"client_fin", "timeouts.client_fin", "client_fin is 0"}}},
		{"route making an inherited client_fin 0 worse", "timeouts:\n  client_fin: 0s\n  client_idle: 10m\n" + base + ro + "    timeouts:\n      client_idle: 0s\n",
			[]want{{"client_fin: 0s", "timeouts.client_fin", "client_fin is 0"},
				// The route sets no client_fin: the warning points at its timeouts.
				{"    timeouts:", "routes.ro.timeouts.client_fin", "DANGER: client_fin is 0"}}},
		{"forward with server_fin off", "timeouts:\n  server_fin: 0\n  server_idle: 1m\n" + base + "    on_client_fin: forward\n",
			[]want{{"server_fin", "timeouts.server_fin", "server_fin is 0"},
				{"on_client_fin", "routes.rw.on_client_fin", "on_client_fin is forward and server_fin is 0"}}},
		{"forward with server_fin on is fine", base + "    on_client_fin: forward\n", nil},
		{"passthrough says what it loses", base + "    tls:\n      mode: passthrough\n",
			[]want{{"mode: passthrough", "routes.rw.tls.mode", "passthrough relays TLS sessions blind, encrypted end to end: for those sessions pgfront cannot route cancel requests"}}},
		{"terminate is quiet", base + "    tls:\n      mode: terminate\n      cert_file: /c\n      key_file: /k\n", nil},
		{"idle unbounded without keepalive", "tcp:\n  keepalive_idle: 0\ntimeouts:\n  client_idle: 0\n  idle_in_transaction: 0\n" + base,
			[]want{{"keepalive_idle", "tcp.keepalive_idle", "a client or server that vanishes without FIN or RST"},
				{"client_idle", "timeouts.client_idle", "idle sessions are unbounded"}}},
		{"idle off but keepalive on is fine", "timeouts:\n  client_idle: 0\n  idle_in_transaction: 0\n" + base, nil},
		{"route idle unbounded without keepalive", "tcp:\n  keepalive_idle: 0\n" + base + "    timeouts:\n      idle_in_transaction: 0s\n      client_idle: 0s\n",
			[]want{{"keepalive_idle", "tcp.keepalive_idle", "keepalive is off"},
				{"client_idle: 0s", "routes.rw.timeouts.client_idle", "idle sessions are unbounded"}}},
		{"long FIN bounds", "timeouts:\n  client_fin: 2m\n" + base + "    timeouts:\n      server_fin: 90s\n",
			[]want{{"client_fin", "timeouts.client_fin", "client_fin is 2m: FIN bounds should be seconds"},
				{"server_fin", "routes.rw.timeouts.server_fin", "server_fin is 1m30s: FIN bounds should be seconds"}}},
		{"one minute FIN is still fine", "timeouts:\n  client_fin: 1m\n" + base, nil},
		{"route role with no such static server", strings.Replace(edit(t, "role: replica", "role: primary"), "    servers:", "    health: {check: tcp}\n    servers:", 1) + ro,
			[]want{{"check: tcp", "clusters.main.health.check", "health.check is tcp: roles are static: pgfront will not follow a failover"},
				{"role: replica", "routes.ro.role", `cluster "main" has no server with role replica`}}},
		// Learned roles change: a replica may appear at any time.
		{"route role with no such learned server", edit(t, "role: replica", "role: primary") + ro, nil},
		{"route role any needs no match", strings.Replace(edit(t, "role: replica", "role: primary"), "    servers:", "    health: {check: none}\n    servers:", 1) +
			"  ro:\n    listen: :7000\n    cluster: main\n    role: any\n",
			[]want{{"check: none", "clusters.main.health.check", "health.check is none: roles are static: pgfront will not follow a failover"}}},
		{"plain-text password", strings.Replace(base, "    servers:", "    health:\n      user: mon\n      password: hunter2\n    servers:", 1),
			[]want{{"hunter2", "clusters.main.health.password", "plain-text password in the config file: prefer password_file or password_env"}}},
		{"password from a file or the environment is fine",
			strings.Replace(strings.Replace(base, "    servers:", "    health: {password_env: PGFRONT_PW}\n    servers:", 1),
				"routes:", "  other:\n    health: {password_file: /etc/pgfront/pw}\n    servers: [{name: a, address: 'h:1'}]\nroutes:", 1), nil},
		{"max_lag without lag checks", strings.Replace(base, "    servers:", "    health: {check: tcp}\n    servers:", 1) + ro + "    max_lag: {time: 10s}\n",
			[]want{{"check: tcp", "clusters.main.health.check", "roles are static"},
				{"max_lag", "routes.ro.max_lag", `max_lag has no effect: health.check tcp of cluster "main" does not measure replication lag`}}},
		{"max_lag with lag checks is fine", base + ro + "    max_lag: {time: 10s, bytes: 1MB}\n    fallback: none\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, w := mustParse(t, tt.src)
			checkFindings(t, tt.src, asFindings(w), tt.want)
			if t.Failed() {
				t.Logf("source:\n%s", tt.src)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{Problem{File: "a.yaml", Line: 3, Path: "routes.rw", Message: "bad"}.String(), "a.yaml:3: routes.rw: bad"},
		{Warning{File: "a.yaml", Line: 3, Path: "routes.rw", Message: "hm"}.String(), "a.yaml:3: routes.rw: hm"},
		{Problem{File: "a.yaml", Message: "empty"}.String(), "a.yaml: empty"},
		{Problem{Line: 2, Path: "x", Message: "m"}.String(), "line 2: x: m"},
		{Problem{File: "a.yaml", Line: 1, Message: "syntax"}.String(), "a.yaml:1: syntax"},
		{(&Error{Problems: []Problem{{File: "f", Line: 1, Path: "a", Message: "x"}, {File: "f", Line: 2, Path: "b", Message: "y"}}}).Error(), "f:1: a: x\nf:2: b: y"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("timeouts:\n  client_fin: 0\n"+base), 0o600); err != nil {
		t.Fatal(err)
	}
	c, w, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != good || len(w) != 1 || w[0].File != good || w[0].Line != 2 {
		t.Errorf("Path %q, warnings %v", c.Path, w)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("maxconn: x\n"+base), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(bad)
	if want := bad + `:1: maxconn: must be an integer, not a string ("x")`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}

	_, _, err = Load(filepath.Join(dir, "missing.yaml"))
	var e *Error
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &e) {
		t.Errorf("missing file: %v", err)
	}
}

// With learned roles (postgres, patroni) a server's role is optional and
// stays "" when absent; with patroni every server names its REST API.
func TestLearnedRoles(t *testing.T) {
	noRoles := strings.ReplaceAll(strings.ReplaceAll(base, "        role: primary\n", ""), "        role: replica\n", "")
	c, w := mustParse(t, noRoles)
	if len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
	for _, s := range c.Clusters["main"].Servers {
		if s.Role != "" {
			t.Errorf("server %s: role %q, want empty", s.Name, s.Role)
		}
	}

	src := strings.Replace(noRoles, "    servers:", "    health: {check: patroni, patroni_scheme: https}\n    servers:", 1)
	src = strings.Replace(src, "address: 127.0.0.1:5432\n", "address: 127.0.0.1:5432\n        patroni: 127.0.0.1:8008\n", 1)
	src = strings.Replace(src, "address: 127.0.0.1:5433\n", "address: 127.0.0.1:5433\n        role: replica\n        patroni: \"[::1]:8009\"\n", 1)
	c, w = mustParse(t, src)
	if len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
	cl := c.Clusters["main"]
	if cl.Health.Check != "patroni" || cl.Health.PatroniScheme != "https" || cl.Health.StaticRoles() {
		t.Errorf("health: %+v", cl.Health)
	}
	pg1, pg2 := cl.Servers[0], cl.Servers[1]
	if pg1.Patroni != "127.0.0.1:8008" || pg1.Role != "" || pg2.Patroni != "[::1]:8009" || pg2.Role != "replica" {
		t.Errorf("servers: %+v, %+v", *pg1, *pg2)
	}
}

func TestStaticRoles(t *testing.T) {
	for check, want := range map[string]bool{"postgres": false, "patroni": false, "tcp": true, "none": true} {
		if got := (Health{Check: check}).StaticRoles(); got != want {
			t.Errorf("%s: StaticRoles = %v, want %v", check, got, want)
		}
	}
}

func TestSize(t *testing.T) {
	good := map[string]Size{"0": 0, "1024": 1024, "0B": 0, "100B": 100, "512kB": 512 << 10, "16MB": 16 << 20,
		"16 MB": 16 << 20, "1GB": 1 << 30, "8589934591GB": 8589934591 << 30}
	for in, want := range good {
		var v Size
		if err := v.UnmarshalText([]byte(in)); err != nil || v != want {
			t.Errorf("%q: %d, %v; want %d", in, v, err, want)
		}
	}
	bad := map[string]string{
		"": "invalid size", "MB": "invalid size", "-1MB": "must not be negative", "1.5GB": "want whole bytes",
		"16mb": "did you mean 16MB?", "1kb": "did you mean 1kB?", "1TB": `unknown unit "TB"`, "1 2": `unknown unit "2"`,
		"8589934592GB": "too large", "99999999999999999999": "too large", " 1": "invalid size",
	}
	for in, msg := range bad {
		var v Size
		if err := v.UnmarshalText([]byte(in)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %d, %v; want an error containing %q", in, v, err, msg)
		}
	}
	strs := map[Size]string{0: "0", 1: "1B", 1000: "1000B", 1024: "1kB", 1536 << 10: "1536kB", 16 << 20: "16MB", 3 << 30: "3GB", 1<<30 + 1: "1073741825B"}
	for in, want := range strs {
		if got := in.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", int64(in), got, want)
		}
		b, _ := in.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != in {
			t.Errorf("round trip of %d: %d, %v", int64(in), back, err)
		}
	}
	// YAML integers are bytes; strings take units.
	c, _ := mustParse(t, base+roRoute+"    max_lag: {bytes: 4096}\n  r2:\n    listen: :0\n    cluster: main\n    role: replica\n    max_lag: {bytes: \"2048\"}\n")
	if b := c.Routes["ro"].MaxLag.Bytes; b != 4096 {
		t.Errorf("bytes: 4096 decoded as %d", b)
	}
	if b := c.Routes["r2"].MaxLag.Bytes; b != 2048 {
		t.Errorf(`bytes: "2048" decoded as %d`, b)
	}
}

func TestRedacted(t *testing.T) {
	src := strings.Replace(withHealth("      password: hunter2\n"), "routes:", "  other:\n    health: {password_env: PW}\n    servers: [{name: a, address: 'h:1', role: primary}]\nroutes:", 1) + roRoute + "    max_lag: {bytes: 1MB}\n"
	c, _ := mustParse(t, src)
	r := c.Redacted()
	if got := r.Clusters["main"].Health.Password; got != "<redacted>" {
		t.Errorf("redacted password = %q", got)
	}
	if got := r.Clusters["other"].Health.Password; got != "" {
		t.Errorf("unset password redacted to %q, want empty", got)
	}
	if got := c.Clusters["main"].Health.Password; got != "hunter2" {
		t.Errorf("original password changed to %q", got)
	}
	// Apart from the secret, the copy is equal...
	r.Clusters["main"].Health.Password = "hunter2"
	if !reflect.DeepEqual(r, c) {
		t.Errorf("copy differs:\n%s\nwant\n%s", dump(r), dump(c))
	}
	// ...and shares no memory with the original, so neither can change the other.
	checkNoSharing(t, "Config", reflect.ValueOf(c), reflect.ValueOf(r))
	if strings.Contains(dump(c.Redacted()), "hunter2") {
		t.Error("secret printed from a redacted config")
	}
}

// checkNoSharing fails when a and b (same type) hold the same pointer, map
// or slice backing array anywhere.
func checkNoSharing(t *testing.T, path string, a, b reflect.Value) {
	t.Helper()
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return
		}
		if a.Pointer() == b.Pointer() {
			t.Errorf("%s is shared", path)
			return
		}
		checkNoSharing(t, path, a.Elem(), b.Elem())
	case reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			t.Errorf("%s is shared", path)
			return
		}
		for _, k := range a.MapKeys() {
			checkNoSharing(t, fmt.Sprintf("%s[%v]", path, k), a.MapIndex(k), b.MapIndex(k))
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			t.Errorf("%s is shared", path)
			return
		}
		for i := 0; i < min(a.Len(), b.Len()); i++ {
			checkNoSharing(t, fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
		}
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			checkNoSharing(t, path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
		}
	}
}

func TestDuration(t *testing.T) {
	good := map[string]time.Duration{"0": 0, "0s": 0, "5s": 5 * time.Second, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond}
	for in, want := range good {
		var v Duration
		if err := v.UnmarshalText([]byte(in)); err != nil || v.D() != want {
			t.Errorf("%q: %v, %v; want %v", in, v, err, want)
		}
	}
	for _, in := range []string{"", "5", "-1s", "abc", "1x", "0x10"} {
		var v Duration
		if err := v.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %v", in, v)
		}
	}
	strs := map[time.Duration]string{0: "0s", time.Hour: "1h", 90 * time.Minute: "1h30m", 10 * time.Minute: "10m",
		10 * time.Second: "10s", 2*time.Hour + 5*time.Second: "2h0m5s", 1500 * time.Millisecond: "1.5s"}
	for in, want := range strs {
		if got := Duration(in).String(); got != want {
			t.Errorf("String(%v) = %q, want %q", time.Duration(in), got, want)
		}
		b, _ := Duration(in).MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.D() != in {
			t.Errorf("round trip of %v: %v, %v", time.Duration(in), back, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{base, "", "a: *x\n", "log: &a {<<: *a}\n", "timeouts: &t {connect: 1s}\nroutes: {r: {timeouts: {<<: [*t, *t]}}}\n",
		"clusters: {a: {servers: [*s, -]}}\n", "? [a]\n: b\n", "maxconn: 18446744073709551615\n", "---\n...\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, w, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 || c != nil || w != nil {
				t.Fatalf("bad error result: %T %v (config %v)", err, err, c)
			}
			_ = err.Error()
			return
		}
		// A config that loads satisfies what validation promises.
		if c == nil || len(c.Routes) == 0 || len(c.Clusters) == 0 {
			t.Fatalf("loaded config without routes or clusters")
		}
		for _, r := range c.Routes {
			if c.Clusters[r.Cluster] == nil || r.Timeouts.Startup <= 0 || r.Timeouts.Connect <= 0 {
				t.Fatalf("invalid route loaded: %+v", *r)
			}
			if (r.Role == "replica") != (r.Fallback != "") || r.MaxLag.Bytes < 0 {
				t.Fatalf("invalid route loaded: %+v", *r)
			}
		}
		for _, cl := range c.Clusters {
			h := cl.Health
			if h.Interval <= 0 || h.FastInterval <= 0 || h.FastInterval > h.Interval || h.Timeout <= 0 || h.Timeout >= h.Interval ||
				h.Rise < 1 || h.Fall < 1 || !(h.Jitter >= 0 && h.Jitter <= 0.5) {
				t.Fatalf("invalid health loaded: %+v", h)
			}
			for _, s := range cl.Servers {
				if (h.StaticRoles() && s.Role == "") || (h.Check == "patroni" && s.Patroni == "") {
					t.Fatalf("invalid server loaded with check %s: %+v", h.Check, *s)
				}
			}
			if got := c.Redacted().Clusters[cl.Name].Health.Password; h.Password != "" && got != "<redacted>" {
				t.Fatalf("password not redacted")
			}
		}
		for _, x := range w {
			_ = x.String()
		}
	})
}

// Merge keys over aliases can expand a small file exponentially; decoding
// must stop with a problem instead of running away.
func TestMergeBombIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("timeouts:\n  connect: &a0 {queue: 1s}\n")
	for i := 1; i < 8; i++ {
		fmt.Fprintf(&b, "  k%d: &a%d {<<: [%s]}\n", i, i, strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 9)+fmt.Sprintf("*a%d", i-1))
	}
	b.WriteString("routes: {r: {timeouts: {<<: [*a7, *a7]}}}\n")
	_, _, err := Parse([]byte(b.String()), "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), "routes.r.timeouts: too many merged mappings") {
		t.Errorf("err = %v", err)
	}
}

func TestProxyProtocol(t *testing.T) {
	c, _ := mustParse(t, base+"    proxy_protocol:\n      trusted: [10.0.0.0/8, 127.0.0.1, \"::1\", fd00::/8]\n")
	pp := c.Routes["rw"].ProxyProtocol
	if pp == nil {
		t.Fatal("proxy_protocol not decoded")
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(pp.Trusted, want) {
		t.Errorf("trusted = %v, want %v", pp.Trusted, want)
	}
	c, _ = mustParse(t, base)
	if c.Routes["rw"].ProxyProtocol != nil {
		t.Error("proxy_protocol absent should be off (nil)")
	}
}
