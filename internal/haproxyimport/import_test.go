package haproxyimport

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// load imports a testdata file and loads the result with pgfront's own config loader, which
// must accept it without a problem.
func load(t *testing.T, name string) (*Result, *config.Config) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Import(data, name)
	if err != nil {
		t.Fatalf("Import(%s): %v", name, err)
	}
	cfg, warnings, err := config.Parse(res.YAML, name+".yaml")
	if err != nil {
		t.Fatalf("the config imported from %s does not load: %v\n%s", name, err, res.YAML)
	}
	var fromCheck []string
	for _, n := range res.Warnings {
		if n.Text == "pgfront check" {
			fromCheck = append(fromCheck, n.Message)
		}
	}
	var want []string
	for _, w := range warnings {
		want = append(want, w.Path+": "+w.Message)
	}
	if !slices.Equal(fromCheck, want) {
		t.Errorf("%s: Result.Warnings from pgfront check %q, config.Parse warns %q", name, fromCheck, want)
	}
	return res, cfg
}

// TestGolden imports every testdata/*.cfg and compares the YAML with testdata/*.golden.yaml
// (go test -update rewrites them).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.cfg")
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata: %v, %d files", err, len(files))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			res, _ := load(t, name)
			golden := strings.TrimSuffix(f, ".cfg") + ".golden.yaml"
			if *update {
				if err := os.WriteFile(golden, res.YAML, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if !bytes.Equal(res.YAML, want) {
				t.Errorf("the import of %s differs from %s (go test -update rewrites it after a review):\n%s", name, golden, res.YAML)
			}
		})
	}
}

func dur(s string) config.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return config.Duration(d)
}

// TestPatroniTemplate checks the mapping of the config in Patroni's documentation on the
// loaded config itself, key by key.
func TestPatroniTemplate(t *testing.T) {
	res, cfg := load(t, "patroni.cfg")
	if res.Routes != 2 || res.Clusters != 1 || res.Servers != 3 {
		t.Errorf("counts: %d routes, %d clusters, %d servers; want 2, 1, 3", res.Routes, res.Clusters, res.Servers)
	}
	if cfg.MaxConn != 100 {
		t.Errorf("maxconn %d, want global maxconn 100", cfg.MaxConn)
	}
	for name, want := range map[string]struct{ listen, role string }{
		"primary":  {"0.0.0.0:5000", "primary"},
		"replicas": {"0.0.0.0:5001", "replica"},
	} {
		r := cfg.Routes[name]
		if r == nil || r.Listen != want.listen || r.Role != want.role || r.Cluster != "main" || r.ConnectRetries != 2 {
			t.Errorf("route %s = %+v, want listen %s, role %s, cluster main, connect_retries 2", name, r, want.listen, want.role)
		}
	}
	tm := cfg.Timeouts
	for _, c := range []struct {
		key       string
		got, want config.Duration
	}{
		{"connect", tm.Connect, dur("4s")},
		{"queue (timeout connect)", tm.Queue, dur("4s")},
		{"client_idle", tm.ClientIdle, dur("30m")},
		{"idle_in_transaction", tm.IdleInTransaction, dur("30m")},
		{"server_idle", tm.ServerIdle, dur("30m")},
		{"client_fin (pgfront's default)", tm.ClientFin, dur("5s")},
		{"server_fin (pgfront's default)", tm.ServerFin, dur("5s")},
	} {
		if c.got != c.want {
			t.Errorf("timeouts.%s = %s, want %s", c.key, c.got, c.want)
		}
	}
	cl := cfg.Clusters["main"]
	if cl == nil {
		t.Fatal("no cluster main")
	}
	h := cl.Health
	if h.Check != "patroni" || h.Interval != dur("3s") || h.Fall != 3 || h.Rise != 2 || h.Timeout != dur("1s") || cl.OnMarkedDown != "shutdown_sessions" {
		t.Errorf("cluster main: health %+v, on_marked_down %s", h, cl.OnMarkedDown)
	}
	for i, s := range cl.Servers {
		ip := []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"}[i]
		if s.Address != ip+":5432" || s.Patroni != ip+":8008" || s.MaxConn != 100 {
			t.Errorf("server %d = %+v", i, s)
		}
	}
	// Comments say where each key came from.
	for _, want := range []string{
		"client_idle: 30m  # patroni.cfg:10: timeout client 30m; patroni.cfg:12: timeout server 30m",
		"listen: 0.0.0.0:5000  # patroni.cfg:22: bind *:5000",
		"role: replica  # patroni.cfg:32: option httpchk OPTIONS /replica",
		"interval: 3s  # patroni.cfg:25, 34: default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
		"maxconn: 100  # patroni.cfg:4: maxconn 100",
	} {
		if !bytes.Contains(res.YAML, []byte(want)) {
			t.Errorf("the output lacks %q", want)
		}
	}
	// Not mapped, with the reason.
	for _, want := range []string{"log global: pgfront logs", "listen stats: HAProxy's stats page", "timeout check 5s: not shorter than inter"} {
		if !slices.ContainsFunc(res.Skipped, func(n Note) bool { return strings.Contains(n.String(), want) }) {
			t.Errorf("Skipped lacks %q: %v", want, res.Skipped)
		}
	}
}

// TestTrapWarning: long client and server timeouts without client-fin and server-fin are
// warned about, at their lines; with the FIN timeouts set there is no such warning.
func TestTrapWarning(t *testing.T) {
	res, _ := load(t, "patroni.cfg")
	for _, want := range []string{
		"patroni.cfg:10: timeout client 30m: no timeout client-fin: HAProxy keeps a client connection whose server has closed for the whole 30m, the CLOSE_WAIT/FIN_WAIT2 trap",
		"patroni.cfg:12: timeout server 30m: no timeout server-fin",
	} {
		if !slices.ContainsFunc(res.Warnings, func(n Note) bool { return strings.HasPrefix(n.String(), want) }) {
			t.Errorf("Warnings lack %q: %v", want, res.Warnings)
		}
	}
	if !bytes.Contains(res.YAML, []byte("# Warnings:\n#   patroni.cfg:10: timeout client 30m: no timeout client-fin")) {
		t.Errorf("the YAML header does not list the trap:\n%s", res.YAML)
	}
	res, cfg := load(t, "frontend-backend.cfg")
	if slices.ContainsFunc(res.Warnings, func(n Note) bool { return strings.Contains(n.Message, "CLOSE_WAIT") }) {
		t.Errorf("client-fin and server-fin are set, yet: %v", res.Warnings)
	}
	if cfg.Timeouts.ClientFin != dur("30s") || cfg.Timeouts.ServerFin != dur("30s") {
		t.Errorf("client_fin %s, server_fin %s; want the file's 30s", cfg.Timeouts.ClientFin, cfg.Timeouts.ServerFin)
	}
	res, _ = load(t, "no-timeouts.cfg")
	if !slices.ContainsFunc(res.Warnings, func(n Note) bool {
		return n.Line == 3 && strings.HasPrefix(n.Message, "no timeout client and no timeout client-fin: HAProxy keeps a client connection whose server has closed for ever")
	}) {
		t.Errorf("no warning for a listener with no timeouts at all: %v", res.Warnings)
	}
}

// TestFrontendBackend checks frontend/backend pairs, times in milliseconds, route-level
// timeouts, max_lag from Patroni's lag parameter, check addresses and TLS to Patroni.
func TestFrontendBackend(t *testing.T) {
	res, cfg := load(t, "frontend-backend.cfg")
	w, r := cfg.Routes["pg_write"], cfg.Routes["pg_read"]
	if w == nil || r == nil {
		t.Fatalf("routes %v", cfg.RouteNames())
	}
	if w.Listen != "192.0.2.10:5432" || w.Role != "primary" || w.Balance != "first" || w.MaxConn != 500 || w.ConnectRetries != 3 {
		t.Errorf("pg_write = %+v", w)
	}
	if r.Listen != "0.0.0.0:5433" || r.Role != "replica" || r.Balance != "leastconn" || r.MaxLag.Bytes != 16<<20 {
		t.Errorf("pg_read = %+v", r)
	}
	if w.Timeouts.ClientIdle != dur("1h") || r.Timeouts.ClientIdle != dur("15m") || r.Timeouts.ServerIdle != dur("15m") {
		t.Errorf("client_idle: pg_write %s (want 1h), pg_read %s (want 15m, the shorter of client 15m and server 1h)", w.Timeouts.ClientIdle, r.Timeouts.ClientIdle)
	}
	if cfg.Timeouts.Connect != dur("5s") {
		t.Errorf("connect %s, want 5s (timeout connect 5000: milliseconds)", cfg.Timeouts.Connect)
	}
	h := cfg.Clusters["main"].Health
	if h.PatroniScheme != "https" || h.Interval != dur("4s") || h.FastInterval != dur("1s") || h.Timeout != dur("2s") || h.Fall != 3 {
		t.Errorf("health %+v", h)
	}
	servers := cfg.Clusters["main"].Servers
	if len(servers) != 3 || servers[2].Patroni != "192.0.2.123:8008" || servers[0].Weight != 2 || servers[0].Address != "pg-a.db.example.com:5432" {
		t.Errorf("servers: %+v %+v %+v", servers[0], servers[1], servers[len(servers)-1])
	}
	for _, want := range []string{
		"bind :5433,:5434: frontend pg_read: pgfront listens on one address per route",
		"backup: pgfront has no backup servers",
		"slowstart: pgfront has no slow start",
		"downinter: pgfront checks a down server",
		"verify none: pgfront verifies",
		"backend unused: no frontend's default_backend",
	} {
		if !slices.ContainsFunc(res.Skipped, func(n Note) bool { return strings.Contains(n.String(), want) }) {
			t.Errorf("Skipped lacks %q", want)
		}
	}
}

// TestClustersAndRoles: sections that share no server become separate clusters; Patroni
// endpoints map to roles; a section without a Patroni check is not mapped, and says why.
func TestClustersAndRoles(t *testing.T) {
	res, cfg := load(t, "two-clusters.cfg")
	if got := cfg.ClusterNames(); !slices.Equal(got, []string{"billing_rw", "orders_rw"}) {
		t.Errorf("clusters %v", got)
	}
	for name, want := range map[string]struct{ cluster, role string }{
		"orders_rw": {"orders_rw", "primary"}, "orders_ro": {"orders_rw", "any"},
		"billing_rw": {"billing_rw", "primary"}, "billing_ro": {"billing_rw", "replica"},
	} {
		if r := cfg.Routes[name]; r == nil || r.Cluster != want.cluster || r.Role != want.role {
			t.Errorf("route %s = %+v, want cluster %s role %s", name, r, want.cluster, want.role)
		}
	}
	if _, ok := cfg.Routes["legacy"]; ok {
		t.Error("listen legacy (pgsql-check) was mapped")
	}
	for _, want := range []string{"option pgsql-check user haproxy: listen legacy checks with pgsql-check", "balance source: pgfront balances", "replication_state=streaming: no pgfront equivalent"} {
		if !slices.ContainsFunc(res.Skipped, func(n Note) bool { return strings.Contains(n.String(), want) }) {
			t.Errorf("Skipped lacks %q", want)
		}
	}
	_, cfg = load(t, "patroni-template.cfg")
	if r := cfg.Routes["batman"]; r == nil || r.Role != "primary" {
		t.Errorf("option httpchk with no URI (OPTIONS /) must map to role primary: %+v", r)
	}
	if s := cfg.Clusters["main"].Servers; len(s) != 2 || s[1].Patroni != "127.0.0.1:8009" {
		t.Errorf("servers %+v", s)
	}
	_, cfg = load(t, "trap.cfg")
	if r := cfg.Routes["pg_any"]; r == nil || r.Role != "any" || r.Listen != "[::]:6433" || r.Timeouts.ClientIdle != dur("12h") {
		t.Errorf("pg_any (/health, timeout tunnel 12h) = %+v", r)
	}
	_, cfg = load(t, "no-timeouts.cfg")
	if cfg.Admin.Listen != "127.0.0.1:9188" {
		t.Errorf("admin.listen %s: a route listens on 9187", cfg.Admin.Listen)
	}
	if h := cfg.Clusters["main"].Health; h.Interval != dur("400ms") || h.FastInterval > h.Interval || h.Timeout >= h.Interval {
		t.Errorf("health %+v: fast_interval and timeout must fit the 400ms interval", h)
	}
}

// TestMalformed: malformed input is an *Error naming each problem's line; never a panic.
func TestMalformed(t *testing.T) {
	const okListen = "listen pg\n    bind :5000\n    option httpchk /primary\n    server a 10.0.0.1:5432 check port 8008\n"
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"unknown section", "lisen pg\n    bind :5000\n", []string{`x.cfg:1: "lisen" outside any section: unknown section`}},
		{"unknown section inside", okListen + "frontnd fe\n    bind :6000\n", []string{`x.cfg:5: unknown section "frontnd"`}},
		{"keyword outside any section", "    maxconn 100\n" + okListen, []string{`x.cfg:1: "maxconn" outside any section`}},
		{"server without address", "listen pg\n    bind :5000\n    server pg1\n", []string{"x.cfg:3: server pg1 has no address"}},
		{"server without name", "listen pg\n    bind :5000\n    server\n", []string{"x.cfg:3: server needs a name and an address"}},
		{"bad duration", "defaults\n    timeout client 5x\n" + okListen, []string{`x.cfg:2: timeout client: invalid time "5x": unknown unit "x"`}},
		{"two units", "defaults\n    timeout client 1m30s\n" + okListen, []string{`x.cfg:2: timeout client: invalid time "1m30s"`}},
		{"no number", "defaults\n    timeout server s\n" + okListen, []string{`x.cfg:2: timeout server: invalid time "s"`}},
		{"timer overflow", "defaults\n    timeout server 30d\n" + okListen, []string{"x.cfg:2: timeout server: time \"30d\" is over HAProxy's limit"}},
		{"unknown timeout", "defaults\n    timeout clinet 5s\n" + okListen, []string{"x.cfg:2: timeout clinet: unknown timeout"}},
		{"timeout without value", "defaults\n    timeout client\n" + okListen, []string{"x.cfg:2: timeout client: want one time"}},
		{"bad inter", okListen + "    server b 10.0.0.2:5432 check port 8008 inter 3x\n", []string{`x.cfg:5: inter: invalid time "3x"`}},
		{"bad fall", okListen + "    default-server fall three\n", []string{`x.cfg:5: fall: invalid number "three"`}},
		{"bad maxconn", "global\n    maxconn lots\n" + okListen, []string{`x.cfg:2: maxconn: invalid number "lots"`}},
		{"bad port", okListen + "    server b 10.0.0.2:5432 check port 80800\n", []string{`x.cfg:5: port: address "80800": port "80800" must be a number from 1 to 65535`}},
		{"value missing", okListen + "    server b 10.0.0.2:5432 check port\n", []string{"x.cfg:5: port needs a value"}},
		{"server without port", "listen pg\n    bind :5000\n    server a 10.0.0.1 check port 8008\n", []string{`x.cfg:3: server a: server address "10.0.0.1" has no port`}},
		{"environment variable", "listen pg\n    bind :5000\n    server a \"${PG1}:5432\" check port 8008\n", []string{"x.cfg:3: server a: address", "environment variables are not expanded"}},
		{"bind without port", "listen pg\n    bind 10.0.0.1\n", []string{`x.cfg:2: bind: bind address "10.0.0.1" has no port`}},
		{"bind without address", "listen pg\n    bind\n", []string{"x.cfg:2: bind needs an address"}},
		{"unterminated quote", "listen pg\n    bind \":5000\n", []string{"x.cfg:2: unterminated double quote"}},
		{"bad escape", "listen pg\n    bind :5000 \\x4\n", []string{`x.cfg:2: \x needs two hex digits`}},
		{"continuation", "listen pg\n    bind :5000 \\\n", []string{"x.cfg:2: a backslash ends the line"}},
		{"conditional", ".if defined(X)\n" + okListen + ".endif\n", []string{"x.cfg:1: .if: conditional blocks", "x.cfg:6: .endif"}},
		{"listen without name", "listen\n    bind :5000\n", []string{"x.cfg:1: listen needs a name"}},
		{"duplicate name", okListen + "listen pg\n    bind :6000\n", []string{"x.cfg:5: listen pg: the name is already used by the listen at line 1"}},
		{"unknown default_backend", "frontend fe\n    bind :5000\n    default_backend nope\n", []string{"x.cfg:3: default_backend nope: no backend or listen section"}},
		{"bind in a backend", "backend be\n    bind :5000\n", []string{"x.cfg:2: bind in a backend section"}},
		{"server in a frontend", "frontend fe\n    server a 10.0.0.1:5432\n", []string{"x.cfg:2: server in a frontend section"}},
		{"unknown from", "listen pg from base\n    bind :5000\n", []string{`x.cfg:1: listen pg: from "base": no defaults section of that name`}},
		{"one port twice", okListen + "listen pg2\n    bind 0.0.0.0:5000\n    option httpchk /replica\n    server a 10.0.0.1:5432 check port 8008\n", []string{"x.cfg:6: listen pg2: port 5000 is also bound by listen pg (line 2)"}},
		{"NUL byte", "listen pg\n    bind :5000\x00\n", []string{"x.cfg:2: NUL byte"}},
		{"every problem at once", "global\n    maxconn x\ndefaults\n    timeout client 5x\n" + okListen, []string{"x.cfg:2: maxconn", "x.cfg:4: timeout client"}},
		{"nothing to import", "listen stats\n    mode http\n    bind :7000\n    stats enable\n", []string{"nothing to import", "x.cfg:1: listen stats: HAProxy's stats page"}},
		{"empty file", "", []string{"nothing to import"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Import([]byte(tc.in), "x.cfg")
			if err == nil {
				t.Fatalf("imported:\n%s", res.YAML)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
		})
	}
}

// TestNotMappedButValid: valid HAProxy the importer cannot express is listed, not an error.
func TestNotMappedButValid(t *testing.T) {
	in := `global
    nbthread 4
    ulimit-n 100000
    tune.bufsize 32768
defaults
    mode tcp
    option clitcpka
    option abortonclose
    timeout http-request 10s
    timeout client 30s
    timeout server 30s
listen pg
    bind :5000 accept-proxy
    bind unix@/run/pg.sock
    option httpchk /primary
    acl local src 10.0.0.0/8
    server a 10.0.0.1:5432 check port 8008 send-proxy maxqueue 10 frobnicate 3 weight 5
    server u /run/postgresql/.s.PGSQL.5432 check port 8008
    server d 10.0.0.4:5432 check port 8008 disabled
    server n 10.0.0.5:5432 check
    server p 10.0.0.6:5432 port 8008
`
	res, err := Import([]byte(in), "v.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Parse(res.YAML, "")
	if err != nil {
		t.Fatalf("%v\n%s", err, res.YAML)
	}
	var names []string
	for _, s := range cfg.Clusters["main"].Servers {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"a", "p"}) {
		t.Errorf("servers %v, want a and p (u: a unix socket, d: disabled, n: no check port)", names)
	}
	for _, want := range []string{
		"v.cfg:2: nbthread 4: pgfront uses every CPU",
		"v.cfg:3: ulimit-n 100000: the open-files limit",
		"v.cfg:4: tune.bufsize 32768: HAProxy tuning",
		"v.cfg:7: option clitcpka: pgfront sets TCP keepalive",
		"v.cfg:8: option abortonclose: pgfront does this by default",
		"v.cfg:9: timeout http-request 10s: an HTTP or TLS handshake timeout",
		"v.cfg:13: bind :5000 accept-proxy: bind options are not mapped: pgfront does not read the PROXY protocol",
		`v.cfg:14: bind unix@/run/pg.sock: "unix@/run/pg.sock" is not a TCP address`,
		"v.cfg:16: acl local src 10.0.0.0/8: rules",
		"send-proxy: pgfront does not send the PROXY protocol",
		"maxqueue: pgfront queues per route",
		`"frobnicate" is not a server keyword this importer knows`,
		"server u: \"/run/postgresql/.s.PGSQL.5432\" is not a TCP address",
		"server d is disabled",
		"server n has no check port",
		"server p has no check: HAProxy never checked it",
	} {
		if !slices.ContainsFunc(res.Skipped, func(n Note) bool { return strings.Contains(n.String(), want) }) {
			t.Errorf("Skipped lacks %q:\n%s", want, indentNotes(res.Skipped))
		}
	}
	// weight 5 came after the unknown keyword: not read.
	if s := cfg.Clusters["main"].Servers[0]; s.Weight != 1 || s.MaxConn != 0 {
		t.Errorf("server a = %+v: the words after an unknown keyword must not be read", s)
	}
}

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bare bool
		err  string
	}{
		{"5000", 5 * time.Second, true, ""},
		{"0", 0, true, ""},
		{"500us", 0, false, "under HAProxy's 1ms"},
		{"1500us", 2 * time.Millisecond, false, ""},
		{"250ms", 250 * time.Millisecond, false, ""},
		{"30s", 30 * time.Second, false, ""},
		{"30m", 30 * time.Minute, false, ""},
		{"2h", 2 * time.Hour, false, ""},
		{"24d", 24 * 24 * time.Hour, false, ""},
		{"25d", 0, false, "over HAProxy's limit"},
		{"2147483647", 2147483647 * time.Millisecond, true, ""},
		{"2147483648", 0, false, "over HAProxy's limit"},
		{"99999999999999999999999", 0, false, "over HAProxy's limit"},
		{"5x", 0, false, `unknown unit "x"`},
		{"5 s", 0, false, "unknown unit"},
		{"-5s", 0, false, "invalid time"},
		{"", 0, false, "invalid time"},
		{"1.5s", 0, false, "unknown unit"},
	} {
		got, bare, err := parseTime(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseTime(%q) error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want || bare != tc.bare):
			t.Errorf("parseTime(%q) = %v, %v, %v; want %v, %v", tc.in, got, bare, err, tc.want, tc.bare)
		}
	}
}

func TestTokenize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"  server a 10.0.0.1:5432   check # comment", []string{"server", "a", "10.0.0.1:5432", "check"}},
		{"daemon#daemonize", []string{"daemon"}},
		{`log-format "%t %s"`, []string{"log-format", "%t %s"}},
		{`x 'a b\' c`, []string{"x", `a b\`, "c"}},
		{`x a\ b \#c \x41 "\$HOME"`, []string{"x", "a b", "#c", "A", "$HOME"}},
		{`x "" y`, []string{"x", "", "y"}},
		{"\t\t", nil},
	} {
		got, msg := tokenize(tc.in)
		if msg != "" || !slices.Equal(got, tc.want) {
			t.Errorf("tokenize(%q) = %q, %q; want %q", tc.in, got, msg, tc.want)
		}
	}
}

func TestYAMLString(t *testing.T) {
	for _, s := range []string{"pg1", "10.0.0.1:5432", "[::]:5000", "yes", "No", "123", "1e3", "0x1F", "a b", "-x", "#x", "é", `"q"`, "x:", "postgresql_10.0.0.1_5432", "pg-0.pg.svc:5432"} {
		var got string
		doc := "k: " + yamlString(s) + "\n"
		cfg, _, err := config.Parse([]byte("routes:\n  r:\n    listen: "+yamlString("127.0.0.1:0")+"\n    cluster: c\n    role: primary\nclusters:\n  c:\n    servers:\n      - {name: n, address: \"127.0.0.1:1\", role: primary}\n    health: {check: tcp, user: "+yamlString(s)+"}\n"), "")
		if err != nil {
			t.Errorf("yamlString(%q) = %s: %v", s, doc, err)
			continue
		}
		got = cfg.Clusters["c"].Health.User
		if got != s {
			t.Errorf("yamlString(%q) = %s reads back as %q", s, yamlString(s), got)
		}
	}
}

// TestEdgeMappings: named defaults with from, zero and unit-less times, clamped values,
// conflicting server lines, a frontend that joins two groups of servers into one cluster,
// and the sections that are not mapped.
func TestEdgeMappings(t *testing.T) {
	res, cfg := load(t, "edge.cfg")
	if cfg.MaxConn != 0 {
		t.Errorf("maxconn %d, want 0 from global maxconn 0", cfg.MaxConn)
	}
	if got := cfg.RouteNames(); !slices.Equal(got, []string{"join", "other", "ro", "rw"}) {
		t.Errorf("routes %v", got)
	}
	rw, ro := cfg.Routes["rw"], cfg.Routes["ro"]
	if rw.Timeouts.Connect != dur("30ms") || rw.Timeouts.Queue != dur("2s") || rw.ConnectRetries != 10 {
		t.Errorf("rw (defaults tight from base) = %+v", rw)
	}
	if rw.Timeouts.ClientIdle != 0 || rw.Timeouts.IdleInTransaction != 0 || rw.Timeouts.ServerIdle != 0 || rw.Timeouts.ClientFin != dur("5s") {
		t.Errorf("rw timeouts %+v: client 0 and server 0 are no timeout, FIN bounds keep pgfront's default", rw.Timeouts)
	}
	if ro.Timeouts.Queue != dur("5s") || ro.Balance != "roundrobin" || ro.MaxLag.Bytes != 0 {
		t.Errorf("ro (defaults base: timeout queue 0; static-rr; lag=lots) = %+v", ro)
	}
	if len(cfg.Clusters) != 1 {
		t.Fatalf("clusters %v: frontend join shares a server with both groups", cfg.ClusterNames())
	}
	cl := cfg.Clusters["main"]
	var names []string
	for _, s := range cl.Servers {
		names = append(names, s.Name+"="+s.Address+"/"+s.Patroni)
	}
	if want := []string{"pg1=10.5.0.1:5432/10.5.0.1:8008", "pg2=10.5.0.2:5432/10.5.0.2:8008", "pg1b=10.5.0.3:5432/10.5.0.3:8008",
		"y1=10.6.0.1:5432/10.6.0.1:8008", "pg1_=10.6.0.2:5432/10.6.0.2:8008"}; !slices.Equal(names, want) {
		t.Errorf("servers %v, want %v", names, want)
	}
	if cl.Servers[0].Weight != 10 || cl.Health.Interval != dur("2s") || cl.Health.Fall != 2 || cl.OnMarkedDown != "shutdown_sessions" {
		t.Errorf("cluster: weight %d, health %+v", cl.Servers[0].Weight, cl.Health)
	}
	if !slices.ContainsFunc(res.Warnings, func(n Note) bool {
		return n.String() == "edge.cfg:13: timeout connect 30: that is 30ms: HAProxy reads a time without a unit as milliseconds"
	}) {
		t.Errorf("no warning for a time without a unit: %v", res.Warnings)
	}
	if !slices.ContainsFunc(res.Warnings, func(n Note) bool {
		return strings.HasPrefix(n.String(), "edge.cfg:14: timeout client 0: 0 is no timeout, and there is no timeout client-fin")
	}) {
		t.Errorf("no trap warning for timeout client 0: %v", res.Warnings)
	}
	for _, want := range []string{
		"edge.cfg:8: userlist admins: a userlist section",
		"edge.cfg:16: timeout queue 0: timeout queue 0 is no timeout in HAProxy but refuses at once in pgfront",
		"edge.cfg:17: timeout check 0: timeout check 0 is no timeout",
		"inter 0: pgfront's health.interval must be greater than 0",
		"fastinter 0: pgfront's health.fast_interval",
		"fall 101: pgfront's fall is from 1 to 100",
		"inter differs between the servers of cluster main (0, 1s, (not set))",
		"lag=lots: pgfront bounds a replica route's lag",
		"weight 20: server pg1 has weight 10 before",
		"server pg1 is checked at 10.5.0.1:8009 here and at 10.5.0.1:8008 before",
		"edge.cfg:48: mode http: listen web is not a TCP proxy",
		"/sync is not a Patroni health endpoint",
		"edge.cfg:58: disabled: listen off is disabled",
		"edge.cfg:63: frontend lonely: a frontend without default_backend",
		"edge.cfg:66: frontend join: HAProxy sent this listener's clients to its own servers only",
	} {
		if !slices.ContainsFunc(res.Skipped, func(n Note) bool { return strings.Contains(n.String(), want) }) {
			t.Errorf("Skipped lacks %q", want)
		}
	}
	for _, want := range []string{
		"# maxconn 0: HAProxy then derives a limit from the open-files limit; 0 is unlimited in pgfront\nmaxconn: 0",
		"# static-rr: pgfront's roundrobin also follows the servers' weights\n    balance: roundrobin",
		"server instead, at most 10 times\n    connect_retries: 10  # edge.cfg:18: retries 20; edge.cfg:23: no option redispatch",
		"      - name: pg1_  # edge.cfg:45: server pg1 10.6.0.2:5432 check port 8008",
	} {
		if !bytes.Contains(res.YAML, []byte(want)) {
			t.Errorf("the output lacks %q", want)
		}
	}
}
