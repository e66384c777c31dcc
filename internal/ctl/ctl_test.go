package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	readToken  = "ctl-read-token"
	adminToken = "ctl-admin-token"
)

// backend is an admin.Backend over fixed data, so the tests run ctl against the real API.
type backend struct {
	mu        sync.Mutex
	actions   []string
	reloadErr error  // what Reload returns
	notReady  string // what NotReady returns
}

var _ admin.Backend = (*backend)(nil)

var (
	routes = []admin.Route{
		{Name: "rw", Listen: "127.0.0.1:6432", Cluster: "main", Role: "primary", Balance: "first", Sessions: 3, MaxConn: 100, Queued: 1, Total: 42},
		{Name: "ro", Listen: "127.0.0.1:6433", Cluster: "main", Role: "replica", Balance: "leastconn", Sessions: 0, Total: 7},
	}
	sessions = []admin.Session{
		{ID: 7, Route: "rw", Client: "10.1.2.3:50000", Server: "main/pg1", User: "app", Database: "appdb", State: "idle",
			TxStatus: "I", Parked: true, AgeSeconds: 3725, IdleSeconds: 65, BytesFromClient: 1234, BytesFromServer: 5 << 20},
		{ID: 9, Route: "rw", Client: "10.1.2.4:50001", Server: "", User: "batch", Database: "appdb", State: "queued",
			AgeSeconds: 0.25, BytesFromClient: 80},
	}
	alerts = []admin.Alert{
		{Name: "close_wait", Active: true, Value: 12, Threshold: 10, Message: "sockets stuck\tin CLOSE_WAIT"},
		{Name: "queue", Value: 0, Threshold: 5.5, Message: "clients waiting"},
	}
)

func (b *backend) Overview() admin.Overview {
	return admin.Overview{Fleet: admin.Fleet{Name: "east", Tag: 3, Secret: true, DroppedOut: 1, Refused: 2,
		Peers: []admin.Peer{{Addr: "10.0.0.7:9187", Name: "pgfront-b", Source: "dcs/main", Tag: 5}, {Addr: "10.0.0.8:9187", Source: "dns", Tag: -1}}}}
}
func (b *backend) Routes() []admin.Route { return routes }
func (b *backend) Servers() []admin.Server {
	return []admin.Server{
		{Cluster: "main", Name: "pg1", Address: "10.0.0.1:5432", Role: "primary", Up: true, Admin: "ready",
			LagBytes: 0, LagSeconds: 0, Sessions: 3, MaxConn: 50, LastCheck: time.Now().Add(-2 * time.Second), CheckMillis: 1.25},
		{Cluster: "main", Name: "pg2", Address: "10.0.0.2:5432", Role: "replica", Up: false, Admin: "drain", Fenced: true,
			LagBytes: -1, LagSeconds: -1, LastError: "dial tcp 10.0.0.2:5432:\nconnection refused"},
	}
}
func (b *backend) Sessions() []admin.Session { return sessions }
func (b *backend) Sockets() admin.Sockets {
	return admin.Sockets{
		SampledAt: time.Now().Add(-time.Second), Source: "sock_diag", SampleMillis: 0.42,
		Counts: []admin.SocketCount{
			{Route: "rw", Side: "server", Cluster: "main", Server: "pg1", State: "ESTABLISHED", Count: 3},
			{Route: "rw", Side: "client", State: "ESTABLISHED", Count: 3},
			{Route: "rw", Side: "client", State: "CLOSE_WAIT", Count: 2},
			{Route: "rw", Side: "server", Cluster: "main", Server: "pg1", State: "FIN_WAIT2", Count: 2},
			{Route: "rw", Side: "server", Cluster: "main", Server: "pg1", State: "SYN_SENT", Count: 1},
		},
		HalfClosed: 2, OldestHalfClosedSeconds: 95,
	}
}
func (b *backend) Alerts() []admin.Alert { return alerts }
func (b *backend) Config() any {
	return map[string]any{"admin": map[string]any{"token": "<redacted>"}, "routes": []string{"rw", "ro"}}
}

func (b *backend) KillSession(id uint64, who string) error {
	b.note(fmt.Sprintf("kill %d %s", id, who))
	if id != 7 {
		return admin.ErrNotFound
	}
	return nil
}

func (b *backend) SetServerState(cluster, server, state, who string) error {
	b.note(fmt.Sprintf("state %s/%s %s %s", cluster, server, state, who))
	if cluster != "main" || server != "pg1" {
		return admin.ErrNotFound
	}
	return nil
}

func (b *backend) Reload(who string) (admin.ReloadResult, error) {
	b.note("reload " + who)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reloadErr != nil {
		return admin.ReloadResult{}, b.reloadErr
	}
	return admin.ReloadResult{Generation: 3, Hash: "0123abcd", Changes: []string{"route ro: added on 127.0.0.1:6433"}}, nil
}

func (b *backend) NotReady() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notReady
}

func (b *backend) note(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.actions = append(b.actions, s)
}

func (b *backend) noted() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.actions...)
}

// api serves the real admin handler over a fake backend on loopback.
func api(t *testing.T, read, adminTok string) (*httptest.Server, *backend) {
	t.Helper()
	b := &backend{}
	l, err := admin.New(admin.Options{Listen: "127.0.0.1:0", ReadToken: []byte(read), AdminToken: []byte(adminTok), Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(l.Handler())
	t.Cleanup(srv.Close)
	return srv, b
}

// result is one run of ctl.
type result struct {
	code           int
	stdout, stderr string
}

func run(env map[string]string, args ...string) result {
	var out, errOut bytes.Buffer
	code := Run(args, Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

// lines splits output into lines with runs of spaces collapsed, so tests do not depend on
// the exact column widths.
func lines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	g := lines(got)
	if len(g) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(g), len(want), got)
	}
	for i := range want {
		if ok, _ := regexp.MatchString("^"+want[i]+"$", g[i]); !ok {
			t.Errorf("line %d:\n got %q\nwant %q", i, g[i], want[i])
		}
	}
}

func TestListCommands(t *testing.T) {
	srv, _ := api(t, "", "")
	env := map[string]string{"PGFRONT_ADMIN_ADDR": srv.URL}

	r := run(env, "routes")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"NAME LISTEN CLUSTER ROLE BALANCE SESSIONS QUEUED TOTAL",
		`rw 127\.0\.0\.1:6432 main primary first 3/100 1 42`,
		`ro 127\.0\.0\.1:6433 main replica leastconn 0/- 0 7`)
	// Columns are aligned: every row's second column starts at the same offset.
	out := strings.Split(r.stdout, "\n")
	if strings.Index(out[0], "LISTEN") != strings.Index(out[1], "127.") || strings.Index(out[1], "127.") != strings.Index(out[2], "127.") {
		t.Errorf("columns not aligned:\n%s", r.stdout)
	}

	r = run(env, "servers")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"SERVER ADDRESS ROLE HEALTH ADMIN FENCED LAG LAG_S SESSIONS CHECKED CHECK_MS ERROR",
		`main/pg1 10\.0\.0\.1:5432 primary up ready - 0 B 0\.0 3/50 [23]s ago 1\.2 -`,
		`main/pg2 10\.0\.0\.2:5432 replica down drain fenced \? \? 0/- never - dial tcp 10\.0\.0\.2:5432: connection refused`)

	r = run(env, "sessions")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"ID ROUTE CLIENT SERVER USER DATABASE STATE TX TLS AGE IDLE IN OUT",
		`7 rw 10\.1\.2\.3:50000 main/pg1 app appdb idle \(parked\) I - 1h02m 1m05s 1\.2 KiB 5\.0 MiB`,
		`9 rw 10\.1\.2\.4:50001 - batch appdb queued - - 250ms - 80 B 0 B`)

	r = run(env, "sockets")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"ROUTE SIDE SERVER ESTABLISHED CLOSE_WAIT FIN_WAIT1 FIN_WAIT2 TIME_WAIT LAST_ACK CLOSING OTHER",
		`rw client - 3 2 0 0 0 0 0 0`,
		`rw server main/pg1 3 0 0 2 0 0 0 1`,
		`half-closed sessions: 2, oldest 1m35s; sampled [12]s ago via sock_diag in 0\.4 ms`)

	r = run(env, "alerts")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"NAME STATE VALUE THRESHOLD SINCE MESSAGE",
		`close_wait ACTIVE 12 10 - sockets stuck in CLOSE_WAIT`,
		`queue ok 0 5\.5 - clients waiting`)

	r = run(env, "fleet")
	r.want(t, 0)
	wantLines(t, r.stdout,
		`fleet east, key tag 3, secret set; peer requests dropped 1 out / 0 in, refused 2`,
		"PEER NAME FROM TAG",
		`10\.0\.0\.7:9187 pgfront-b dcs/main 5`,
		`10\.0\.0\.8:9187 - dns \?`)

	r = run(env, "config")
	r.want(t, 0)
	want := "{\n  \"admin\": {\n    \"token\": \"<redacted>\"\n  },\n  \"routes\": [\n    \"rw\",\n    \"ro\"\n  ]\n}\n"
	if r.stdout != want {
		t.Errorf("config:\n%s\nwant:\n%s", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("stderr: %s", r.stderr)
	}
}

func TestJSONFlag(t *testing.T) {
	srv, _ := api(t, "", "")
	for _, cmd := range []string{"routes", "servers", "sessions", "sockets", "alerts", "config"} {
		r := run(nil, "-addr", srv.URL, "-json", cmd)
		r.want(t, 0)
		res, err := http.Get(srv.URL + "/api/v1/" + cmd)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if cmd == "servers" || cmd == "sockets" {
			// Their times move between the two requests; compare the shape.
			var a, b any
			if json.Unmarshal([]byte(r.stdout), &a) != nil || json.Unmarshal(body, &b) != nil {
				t.Fatalf("%s -json is not JSON: %s", cmd, r.stdout)
			}
			continue
		}
		if r.stdout != string(body) {
			t.Errorf("%s -json = %s, want the API's body %s", cmd, r.stdout, body)
		}
	}
	var got []admin.Route
	if err := json.Unmarshal([]byte(run(nil, "-addr", srv.URL, "-json", "routes").stdout), &got); err != nil || len(got) != 2 || got[0].Name != "rw" {
		t.Fatalf("routes -json decoded to %+v, %v", got, err)
	}
	r := run(nil, "-addr", srv.URL, "-json", "kill", "7")
	r.want(t, 0)
	if strings.TrimSpace(r.stdout) != `{"killed":7}` {
		t.Errorf("kill -json = %q", r.stdout)
	}
}

func TestActions(t *testing.T) {
	srv, b := api(t, readToken, adminToken)
	env := map[string]string{"PGFRONT_TOKEN": adminToken}

	r := run(env, "-addr", srv.URL, "kill", "7")
	r.want(t, 0)
	if r.stdout != "killed session 7\n" {
		t.Errorf("kill output %q", r.stdout)
	}
	r = run(env, "-addr", srv.URL, "server", "main/pg1", "drain")
	r.want(t, 0)
	if r.stdout != "server main/pg1 is now drain\n" {
		t.Errorf("server output %q", r.stdout)
	}
	got := b.noted()
	if len(got) != 2 || !strings.HasPrefix(got[0], "kill 7 remote=127.0.0.1:") || !strings.HasPrefix(got[1], "state main/pg1 drain remote=127.0.0.1:") {
		t.Fatalf("backend saw %q", got)
	}

	r = run(env, "-addr", srv.URL, "kill", "99")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 404 Not Found: not found\n" || r.stdout != "" {
		t.Errorf("kill 99: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = run(env, "-addr", srv.URL, "server", "main/pg9", "maint")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 404 Not Found: not found\n" {
		t.Errorf("server main/pg9: stderr %q", r.stderr)
	}
}

func TestTokenSources(t *testing.T) {
	srv, _ := api(t, readToken, adminToken)
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.token")
	readFile := filepath.Join(dir, "read.token")
	emptyFile := filepath.Join(dir, "empty.token")
	for f, s := range map[string]string{adminFile: adminToken + "\n", readFile: "  " + readToken + "\r\n", emptyFile: "\n"} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := map[string]string{"PGFRONT_ADMIN_ADDR": srv.URL}
	withEnv := func(token string) map[string]string {
		return map[string]string{"PGFRONT_ADMIN_ADDR": srv.URL, "PGFRONT_TOKEN": token}
	}

	// No token at all.
	r := run(addr, "routes")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 401 Unauthorized: token required: missing bearer token\n" {
		t.Errorf("no token: stderr %q", r.stderr)
	}
	// Wrong token from the environment.
	r = run(withEnv("nope"), "routes")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 401 Unauthorized: token required: unknown token\n" {
		t.Errorf("wrong token: stderr %q", r.stderr)
	}
	// Read token from the environment reads, and is refused an action.
	run(withEnv(readToken), "routes").want(t, 0)
	r = run(withEnv(readToken), "kill", "7")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 403 Forbidden: this endpoint needs the admin token\n" {
		t.Errorf("read token kill: stderr %q", r.stderr)
	}
	// Token files, trimmed; the file wins over the environment.
	run(addr, "-token-file", readFile, "sessions").want(t, 0)
	run(withEnv(readToken), "-token-file", adminFile, "kill", "7").want(t, 0)
	r = run(withEnv(adminToken), "-token-file", readFile, "kill", "7")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "403 Forbidden") {
		t.Errorf("file did not win over env: %q", r.stderr)
	}
	// Unreadable and empty files.
	r = run(addr, "-token-file", filepath.Join(dir, "missing"), "routes")
	r.want(t, 1)
	if !strings.HasPrefix(r.stderr, "pgfront ctl: reading token file: ") || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: %q", r.stderr)
	}
	r = run(addr, "-token-file", emptyFile, "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "is empty") {
		t.Errorf("empty file: %q", r.stderr)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"routes", "extra"}, "usage: pgfront ctl routes"},
		{[]string{"kill"}, "usage: pgfront ctl kill ID"},
		{[]string{"kill", "abc"}, `session id "abc" is not a number`},
		{[]string{"kill", "-1"}, `session id "-1" is not a number`},
		{[]string{"kill", "1", "2"}, "usage: pgfront ctl kill ID"},
		{[]string{"server", "main/pg1"}, "usage: pgfront ctl server CLUSTER/SERVER ready|drain|maint"},
		{[]string{"server", "pg1", "drain"}, `"pg1" is not CLUSTER/SERVER`},
		{[]string{"server", "main/a/b", "drain"}, `"main/a/b" is not CLUSTER/SERVER`},
		{[]string{"server", "main/pg1", "sleep"}, `state "sleep" is not ready, drain or maint`},
		{[]string{"-bogus", "routes"}, "flag provided but not defined: -bogus"},
		{[]string{"-addr", "ftp://x", "routes"}, `bad -addr "ftp://x"`},
		{[]string{"-timeout", "0s", "routes"}, "-timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := run(nil, tt.args...)
			r.want(t, 2)
			if !strings.Contains(r.stderr, tt.want) || r.stdout != "" {
				t.Errorf("stderr %q, want it to contain %q (stdout %q)", r.stderr, tt.want, r.stdout)
			}
		})
	}
	r := run(nil, "help")
	r.want(t, 0)
	for _, cmd := range []string{"routes", "servers", "sessions", "sockets", "alerts", "config", "kill ID", "server CLUSTER/SERVER ready|drain|maint", "-addr", "-token-file", "-json", "-timeout", "PGFRONT_ADMIN_ADDR", "PGFRONT_TOKEN"} {
		if !strings.Contains(r.stdout, cmd) {
			t.Errorf("usage lacks %q:\n%s", cmd, r.stdout)
		}
	}
	run(nil, "-h").want(t, 0)
}

func TestAddrForms(t *testing.T) {
	srv, _ := api(t, "", "")
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	run(nil, "-addr", hostPort, "routes").want(t, 0)
	run(nil, "-addr", srv.URL+"/", "routes").want(t, 0)
	run(map[string]string{"PGFRONT_ADMIN_ADDR": hostPort}, "routes").want(t, 0)
	// The flag wins over the environment.
	run(map[string]string{"PGFRONT_ADMIN_ADDR": "http://127.0.0.1:1/unused"}, "-addr", srv.URL, "routes").want(t, 0)
}

func TestConnectionFailure(t *testing.T) {
	// A listener that hangs up on every connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	r := run(nil, "-addr", ln.Addr().String(), "routes")
	r.want(t, 1)
	if !strings.HasPrefix(r.stderr, "pgfront ctl: calling the admin API at http://"+ln.Addr().String()+" (-addr): ") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	r := run(nil, "-addr", srv.URL, "-timeout", "300ms", "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "deadline exceeded") && !strings.Contains(r.stderr, "Timeout") {
		t.Errorf("stderr %q, want a timeout", r.stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v with -timeout 300ms", d)
	}
}

func TestNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	}))
	defer srv.Close()
	r := run(nil, "-addr", srv.URL, "sessions")
	r.want(t, 1)
	if r.stderr != "pgfront ctl: 502 Bad Gateway: upstream down\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestBadAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>not the api</html>")
	}))
	defer srv.Close()
	r := run(nil, "-addr", srv.URL, "routes")
	r.want(t, 1)
	if !strings.HasPrefix(r.stderr, "pgfront ctl: decoding the answer: ") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestFormatting(t *testing.T) {
	durations := map[float64]string{-1: "?", 0: "0ms", 0.8504: "850ms", 12.9: "12s", 303: "5m03s", 7500: "2h05m", 273600: "3d04h"}
	for in, want := range durations {
		if got := duration(in); got != want {
			t.Errorf("duration(%v) = %q, want %q", in, got, want)
		}
	}
	sizes := map[int64]string{-1: "?", 0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 20 << 20: "20 MiB", 3 << 40: "3.0 TiB"}
	for in, want := range sizes {
		if got := size(in); got != want {
			t.Errorf("size(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestReload: ctl reload prints what changed; an invalid config's problems come back with exit 1.
func TestReload(t *testing.T) {
	srv, b := api(t, readToken, adminToken)
	env := map[string]string{"PGFRONT_TOKEN": adminToken}
	r := run(env, "-addr", srv.URL, "reload")
	r.want(t, 0)
	if r.stdout != "config reloaded: generation 3 (config 0123abcd), 1 changes\n  route ro: added on 127.0.0.1:6433\n" {
		t.Errorf("reload output %q", r.stdout)
	}
	b.mu.Lock()
	b.reloadErr = errors.New("pgfront.yaml:7: routes.ro.listen: invalid address")
	b.mu.Unlock()
	r = run(env, "-addr", srv.URL, "reload")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "pgfront.yaml:7: routes.ro.listen") {
		t.Errorf("invalid reload: stderr %q", r.stderr)
	}
}
