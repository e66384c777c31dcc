package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/logtest"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	readToken  = "read-secret-token-r3ad"
	adminToken = "admin-secret-token-4dm1n"
)

// syncBuffer is a log sink safe for the handlers' goroutines.
type syncBuffer = logtest.Buffer

// logLines decodes the JSON log lines in b whose msg is msg.
func logLines(t *testing.T, b *syncBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// testServer is a Listener serving on loopback, with its backend and log.
type testServer struct {
	*Listener
	backend *fakeBackend
	logs    *syncBuffer
	base    string
	client  *http.Client
}

// startServer starts a Listener on 127.0.0.1:0 with a fake backend; tokens may be empty.
func startServer(t *testing.T, read, admin string, gatherer prometheus.Gatherer) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	fb := newFakeBackend()
	l, err := New(Options{
		Listen:     "127.0.0.1:0",
		ReadToken:  []byte(read),
		AdminToken: []byte(admin),
		Backend:    fb,
		Gatherer:   gatherer,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := l.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	l.Serve()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		l.Close()
	})
	return &testServer{Listener: l, backend: fb, logs: logs, base: "http://" + l.Addr().String(), client: client}
}

// response is what a test request got.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (ts *testServer) do(t *testing.T, method, path, token, body string, header ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{code: res.StatusCode, header: res.Header, body: b}
}

// wantJSON checks the status and JSON content type and decodes the body into v.
func (r response) wantJSON(t *testing.T, code int, v any) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("decoding %s: %v", r.body, err)
		}
	}
}

// wantError checks an error response: status, JSON, and the error text containing want.
func (r response) wantError(t *testing.T, code int, want string) {
	t.Helper()
	var e errorBody
	r.wantJSON(t, code, &e)
	if e.Error == "" || !strings.Contains(e.Error, want) {
		t.Fatalf("error %q, want it to contain %q", e.Error, want)
	}
}

// roundTrip encodes v as the server would and decodes it back into a fresh value of the
// same type, so expectations compare equal to decoded responses (times lose their monotonic
// part, nil slices become empty).
func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReadEndpoints(t *testing.T) {
	ts := startServer(t, "", "", nil)
	fb := ts.backend

	var ov Overview
	ts.do(t, "GET", "/api/v1/overview", "", "").wantJSON(t, 200, &ov)
	if want := roundTrip(t, fb.snapshot()); !reflect.DeepEqual(ov, want) {
		t.Errorf("overview:\n got %+v\nwant %+v", ov, want)
	}
	if ov.LiveSessions[0].ID != 7 || ov.Sockets.Source != "sock_diag" || ov.EndedByCause["client_terminate"] != 1 {
		t.Errorf("overview lost data: %+v", ov)
	}

	var routes []Route
	ts.do(t, "GET", "/api/v1/routes", "", "").wantJSON(t, 200, &routes)
	if !reflect.DeepEqual(routes, roundTrip(t, fb.Routes())) || routes[0].Name != "rw" {
		t.Errorf("routes = %+v", routes)
	}
	var servers []Server
	ts.do(t, "GET", "/api/v1/servers", "", "").wantJSON(t, 200, &servers)
	if !reflect.DeepEqual(servers, roundTrip(t, fb.Servers())) || len(servers) != 2 || servers[1].LagBytes != -1 {
		t.Errorf("servers = %+v", servers)
	}
	var sessions []Session
	ts.do(t, "GET", "/api/v1/sessions", "", "").wantJSON(t, 200, &sessions)
	if !reflect.DeepEqual(sessions, roundTrip(t, fb.Sessions())) || sessions[0].User != "app" {
		t.Errorf("sessions = %+v", sessions)
	}
	var sockets Sockets
	ts.do(t, "GET", "/api/v1/sockets", "", "").wantJSON(t, 200, &sockets)
	if !reflect.DeepEqual(sockets, roundTrip(t, fb.Sockets())) || len(sockets.Counts) != 2 {
		t.Errorf("sockets = %+v", sockets)
	}
	var alerts []Alert
	ts.do(t, "GET", "/api/v1/alerts", "", "").wantJSON(t, 200, &alerts)
	if !reflect.DeepEqual(alerts, roundTrip(t, fb.Alerts())) || alerts[0].Name != "close_wait" {
		t.Errorf("alerts = %+v", alerts)
	}
	var config map[string]any
	ts.do(t, "GET", "/api/v1/config", "", "").wantJSON(t, 200, &config)
	if config["password"] != "<redacted>" {
		t.Errorf("config = %v", config)
	}
}

// An empty backend gives [] and {}, never null, so clients need no special case.
func TestEmptyListsAreNotNull(t *testing.T) {
	ts := startServer(t, "", "", nil)
	ts.backend.update(func(o *Overview) { *o = Overview{} })
	for _, path := range []string{"/api/v1/routes", "/api/v1/servers", "/api/v1/sessions", "/api/v1/alerts"} {
		r := ts.do(t, "GET", path, "", "")
		r.wantJSON(t, 200, nil)
		if got := strings.TrimSpace(string(r.body)); got != "[]" {
			t.Errorf("%s = %s, want []", path, got)
		}
	}
	var raw map[string]json.RawMessage
	ts.do(t, "GET", "/api/v1/overview", "", "").wantJSON(t, 200, &raw)
	for _, k := range []string{"routes", "servers", "alerts", "live_sessions", "recent"} {
		if string(raw[k]) != "[]" {
			t.Errorf("overview %s = %s, want []", k, raw[k])
		}
	}
	if string(raw["ended_by_cause"]) != "{}" {
		t.Errorf("ended_by_cause = %s, want {}", raw["ended_by_cause"])
	}
	var sockets map[string]json.RawMessage
	ts.do(t, "GET", "/api/v1/sockets", "", "").wantJSON(t, 200, &sockets)
	if string(sockets["counts"]) != "[]" {
		t.Errorf("sockets counts = %s, want []", sockets["counts"])
	}
}

func TestHealthz(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	r := ts.do(t, "GET", "/healthz", "", "")
	if r.code != 200 || string(r.body) != "ok" {
		t.Fatalf("healthz = %d %q, want 200 ok", r.code, r.body)
	}
}

func TestAuthMatrix(t *testing.T) {
	open := startServer(t, "", "", nil)
	tokens := startServer(t, readToken, adminToken, nil)
	adminOnly := startServer(t, "", adminToken, nil)

	tests := []struct {
		name   string
		ts     *testServer
		method string
		path   string
		token  string
		body   string
		want   int
	}{
		{"open get", open, "GET", "/api/v1/sessions", "", "", 200},
		{"open get ignores a token", open, "GET", "/api/v1/sessions", "whatever", "", 200},
		{"open kill", open, "POST", "/api/v1/sessions/7/kill", "", "", 200},
		{"open state", open, "POST", "/api/v1/servers/main/pg1/state", "", `{"state":"drain"}`, 200},
		{"open metrics", open, "GET", "/metrics", "", "", 200},

		{"missing token get", tokens, "GET", "/api/v1/sessions", "", "", 401},
		{"missing token overview", tokens, "GET", "/api/v1/overview", "", "", 401},
		{"missing token config", tokens, "GET", "/api/v1/config", "", "", 401},
		{"missing token metrics", tokens, "GET", "/metrics", "", "", 401},
		{"missing token kill", tokens, "POST", "/api/v1/sessions/7/kill", "", "", 401},
		{"wrong token get", tokens, "GET", "/api/v1/sessions", "nope", "", 401},
		{"token prefix get", tokens, "GET", "/api/v1/sessions", readToken[:5], "", 401},
		{"wrong token kill", tokens, "POST", "/api/v1/sessions/7/kill", adminToken + "x", "", 401},
		{"read token get", tokens, "GET", "/api/v1/sessions", readToken, "", 200},
		{"read token metrics", tokens, "GET", "/metrics", readToken, "", 200},
		{"read token kill", tokens, "POST", "/api/v1/sessions/7/kill", readToken, "", 403},
		{"read token state", tokens, "POST", "/api/v1/servers/main/pg1/state", readToken, `{"state":"drain"}`, 403},
		{"admin token get", tokens, "GET", "/api/v1/overview", adminToken, "", 200},
		{"admin token kill", tokens, "POST", "/api/v1/sessions/7/kill", adminToken, "", 200},
		{"admin token state", tokens, "POST", "/api/v1/servers/main/pg1/state", adminToken, `{"state":"maint"}`, 200},
		{"page without token", tokens, "GET", "/", "", "", 200},
		{"script without token", tokens, "GET", "/static/app.js", "", "", 200},
		{"healthz without token", tokens, "GET", "/healthz", "", "", 200},

		{"admin only: read with admin", adminOnly, "GET", "/api/v1/routes", adminToken, "", 200},
		{"admin only: missing", adminOnly, "GET", "/api/v1/routes", "", "", 401},
		// An empty configured read token must not make an empty bearer token valid.
		{"admin only: empty bearer", adminOnly, "GET", "/api/v1/routes", " ", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.ts.do(t, tt.method, tt.path, tt.token, tt.body)
			if r.code != tt.want {
				t.Fatalf("status %d, want %d; body %s", r.code, tt.want, r.body)
			}
			switch tt.want {
			case 401:
				if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="pgfront"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				r.wantError(t, 401, "token required")
			case 403:
				r.wantError(t, 403, "admin token")
			}
		})
	}
	// The rejected requests reached no backend action.
	kills, states := tokens.backend.actions()
	if len(kills) != 1 || len(states) != 1 {
		t.Errorf("token server actions: kills %q states %q; want exactly the admin-token ones", kills, states)
	}
}

func TestBearerSchemeCaseInsensitive(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	r := ts.do(t, "GET", "/api/v1/routes", "", "", "Authorization", "bearer "+readToken)
	r.wantJSON(t, 200, nil)
	r = ts.do(t, "GET", "/api/v1/routes", "", "", "Authorization", "Basic "+readToken)
	r.wantError(t, 401, "missing bearer token")
}

func TestKillSession(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	var got map[string]uint64
	ts.do(t, "POST", "/api/v1/sessions/7/kill", adminToken, "").wantJSON(t, 200, &got)
	if got["killed"] != 7 || len(got) != 1 {
		t.Fatalf("kill answer %v, want {killed: 7}", got)
	}
	kills, _ := ts.backend.actions()
	if len(kills) != 1 || !strings.HasPrefix(kills[0], "7 remote=127.0.0.1:") || !strings.HasSuffix(kills[0], " scope=admin") {
		t.Fatalf("backend saw %q, want id 7 with remote=127.0.0.1:PORT scope=admin", kills)
	}

	ts.do(t, "POST", "/api/v1/sessions/7/kill", adminToken, "").wantError(t, 404, "not found")
	for _, id := range []string{"abc", "-1", "1.5", "99999999999999999999", "0x10"} {
		ts.do(t, "POST", "/api/v1/sessions/"+id+"/kill", adminToken, "").wantError(t, 400, "bad session id")
	}
	if kills, _ := ts.backend.actions(); len(kills) != 2 {
		t.Errorf("bad ids reached the backend: %q", kills)
	}
}

func TestSetServerState(t *testing.T) {
	ts := startServer(t, "", "", nil)
	var got stateResponse
	ts.do(t, "POST", "/api/v1/servers/main/pg1/state", "", `{"state":"drain"}`).wantJSON(t, 200, &got)
	if got != (stateResponse{Cluster: "main", Server: "pg1", State: "drain"}) {
		t.Fatalf("answer %+v", got)
	}
	_, states := ts.backend.actions()
	if len(states) != 1 || !strings.HasPrefix(states[0], "main/pg1 drain remote=127.0.0.1:") || !strings.HasSuffix(states[0], " scope=open") {
		t.Fatalf("backend saw %q", states)
	}

	ts.do(t, "POST", "/api/v1/servers/main/nope/state", "", `{"state":"drain"}`).wantError(t, 404, "not found")
	ts.do(t, "POST", "/api/v1/servers/main/pg1/state", "", `{"state":"sleep"}`).wantError(t, 400, "ready, drain or maint")

	bad := []struct{ body, want string }{
		{"", "reading body"},
		{"drain", "reading body"},
		{`{"state":`, "reading body"},
		{`{}`, `"state" is missing`},
		{`{"state":""}`, `"state" is missing`},
		{`{"state":"drain","force":true}`, "unknown field"},
		{`{"state":"drain"}{"state":"maint"}`, "data after"},
		{`["drain"]`, "reading body"},
		{`{"state":"` + strings.Repeat("x", maxBodyBytes) + `"}`, "larger than"},
	}
	for _, b := range bad {
		ts.do(t, "POST", "/api/v1/servers/main/pg1/state", "", b.body).wantError(t, 400, b.want)
	}
	if _, states := ts.backend.actions(); len(states) != 3 {
		t.Errorf("bad bodies reached the backend: %q", states)
	}
}

func TestBackendErrorIs500(t *testing.T) {
	l, err := New(Options{Listen: "127.0.0.1:0", Backend: failingBackend{newFakeBackend()}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(l.Handler(), "POST", "/api/v1/sessions/1/kill", "")
	if rec.code != 500 || !strings.Contains(string(rec.body), "backend broke") {
		t.Fatalf("got %d %s, want 500 with the error", rec.code, rec.body)
	}
}

type failingBackend struct{ *fakeBackend }

func (failingBackend) KillSession(uint64, string) error { return errors.New("backend broke") }

func TestAuditLog(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	ts.do(t, "POST", "/api/v1/sessions/7/kill", adminToken, "").wantJSON(t, 200, nil)
	ts.do(t, "POST", "/api/v1/sessions/99/kill", adminToken, "").wantJSON(t, 404, nil)
	ts.do(t, "POST", "/api/v1/servers/main/pg2/state", adminToken, `{"state":"ready"}`).wantJSON(t, 200, nil)
	ts.do(t, "GET", "/api/v1/sessions", "", "").wantJSON(t, 401, nil)
	ts.do(t, "GET", "/api/v1/sessions", "wrong-token-value", "").wantJSON(t, 401, nil)

	lines := logLines(t, ts.logs, "admin action")
	if len(lines) != 3 {
		t.Fatalf("%d admin action lines, want 3:\n%s", len(lines), ts.logs)
	}
	want := []struct{ action, target, result string }{
		{"kill_session", "session 7", "ok"},
		{"kill_session", "session 99", "not found"},
		{"set_server_state", "server main/pg2 state=ready", "ok"},
	}
	for i, w := range want {
		l := lines[i]
		if l["level"] != "INFO" || l["action"] != w.action || l["target"] != w.target || l["result"] != w.result ||
			l["scope"] != "admin" || !strings.HasPrefix(l["remote"].(string), "127.0.0.1:") {
			t.Errorf("line %d = %v, want action %s target %q result %q scope admin", i, l, w.action, w.target, w.result)
		}
	}
	rejected := logLines(t, ts.logs, "admin auth rejected")
	if len(rejected) != 1 || rejected[0]["level"] != "WARN" || rejected[0]["reason"] != "missing bearer token" {
		t.Errorf("rejected lines = %v, want one Warn (the second is rate-limited)", rejected)
	}
	all := ts.logs.String()
	for _, secret := range []string{adminToken, readToken, "wrong-token-value"} {
		if strings.Contains(all, secret) {
			t.Errorf("log contains token %q:\n%s", secret, all)
		}
	}
}

func TestOpenScopeInAudit(t *testing.T) {
	ts := startServer(t, "", "", nil)
	ts.do(t, "POST", "/api/v1/sessions/7/kill", "", "").wantJSON(t, 200, nil)
	lines := logLines(t, ts.logs, "admin action")
	if len(lines) != 1 || lines[0]["scope"] != "open" {
		t.Fatalf("lines = %v, want one with scope open", lines)
	}
	kills, _ := ts.backend.actions()
	if len(kills) != 1 || !strings.HasSuffix(kills[0], "scope=open") {
		t.Fatalf("who = %q", kills)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	ts := startServer(t, "", "", nil)
	ts.do(t, "GET", "/nope", "", "").wantError(t, 404, "not found")
	ts.do(t, "GET", "/api/v1/nope", "", "").wantError(t, 404, "not found")
	ts.do(t, "GET", "/static/", "", "").wantError(t, 404, "not found")
	ts.do(t, "GET", "/static/other.js", "", "").wantError(t, 404, "not found")

	r := ts.do(t, "POST", "/api/v1/routes", "", "")
	r.wantError(t, 405, "method not allowed")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("Allow %q, want GET", allow)
	}
	r = ts.do(t, "GET", "/api/v1/sessions/7/kill", "", "")
	r.wantError(t, 405, "method not allowed")
	if allow := r.header.Get("Allow"); allow != "POST" {
		t.Errorf("Allow %q, want POST", allow)
	}
	if kills, _ := ts.backend.actions(); len(kills) != 0 {
		t.Errorf("GET on kill reached the backend: %q", kills)
	}
}

func TestCrossSitePostRefused(t *testing.T) {
	ts := startServer(t, "", "", nil)
	r := ts.do(t, "POST", "/api/v1/sessions/7/kill", "", "", "Sec-Fetch-Site", "cross-site")
	r.wantError(t, 403, "cross-origin")
	r = ts.do(t, "POST", "/api/v1/sessions/7/kill", "", "", "Origin", "http://evil.example")
	r.wantError(t, 403, "cross-origin")
	if kills, _ := ts.backend.actions(); len(kills) != 0 {
		t.Fatalf("cross-site POST reached the backend: %q", kills)
	}
	// The page's own (same-origin) requests pass.
	ts.do(t, "POST", "/api/v1/sessions/7/kill", "", "", "Sec-Fetch-Site", "same-origin").wantJSON(t, 200, nil)
}

func TestPageAndAssets(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	assets := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<tbody id="live">`},
		{"/static/app.js", "text/javascript; charset=utf-8", "api/v1/overview"},
		{"/static/style.css", "text/css; charset=utf-8", "td.hot"},
	}
	total := 0
	for _, a := range assets {
		r := ts.do(t, "GET", a.path, "", "")
		if r.code != 200 || r.header.Get("Content-Type") != a.contentType || !strings.Contains(string(r.body), a.contains) {
			t.Fatalf("%s: %d %q, want 200 %q containing %q", a.path, r.code, r.header.Get("Content-Type"), a.contentType, a.contains)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", a.path, csp)
		}
		etag := r.header.Get("ETag")
		if etag == "" {
			t.Fatalf("%s: no ETag", a.path)
		}
		if r := ts.do(t, "GET", a.path, "", "", "If-None-Match", etag); r.code != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", a.path, r.code)
		}
		total += len(r.body)
	}
	// Keep the page light: the three assets together stay well under 32 KiB.
	if total > 32<<10 {
		t.Errorf("page weight %d bytes, want under 32 KiB", total)
	}
	t.Logf("page weight: %d bytes (index.html + app.js + style.css)", total)

	// Nothing on the page is fetched from another host.
	for _, a := range assets {
		r := ts.do(t, "GET", a.path, "", "")
		for _, ext := range []string{"http://", "https://", "//cdn", "@import", "fonts."} {
			if strings.Contains(string(r.body), ext) {
				t.Errorf("%s references %q", a.path, ext)
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "pgfront_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	ts := startServer(t, readToken, adminToken, reg)
	r := ts.do(t, "GET", "/metrics", readToken, "")
	if r.code != 200 || !strings.Contains(string(r.body), "pgfront_test_total 3") {
		t.Fatalf("metrics %d:\n%s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("metrics Content-Type %q, want the text format", ct)
	}
	// Not OpenMetrics even when asked.
	r = ts.do(t, "GET", "/metrics", readToken, "", "Accept", "application/openmetrics-text; version=1.0.0")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("metrics with OpenMetrics Accept: Content-Type %q", ct)
	}
}

func TestListenErrorNamesAddress(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	l, err := New(Options{Listen: addr, Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = l.Listen()
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Listen on a taken address: %v, want an error naming %s", err, addr)
	}
	if l.Addr() != nil {
		t.Errorf("Addr after a failed Listen = %v, want nil", l.Addr())
	}
}

func TestNewChecksOptions(t *testing.T) {
	if _, err := New(Options{Listen: "127.0.0.1:0"}); err == nil {
		t.Error("New without a backend: no error")
	}
	if _, err := New(Options{Backend: newFakeBackend()}); err == nil {
		t.Error("New without an address: no error")
	}
}

func TestServerLimits(t *testing.T) {
	l, err := New(Options{Listen: "127.0.0.1:0", Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	h := l.http
	if h.ReadHeaderTimeout != 5*time.Second || h.ReadTimeout != 10*time.Second || h.WriteTimeout != 30*time.Second ||
		h.IdleTimeout != 60*time.Second || h.MaxHeaderBytes != 64<<10 {
		t.Fatalf("limits: %+v", h)
	}
}

// Close lets a request in flight finish, refuses new connections, and returns only after
// the serving goroutine has.
func TestCloseWaitsForInFlightRequest(t *testing.T) {
	ts := startServer(t, "", "", nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	ts.backend.mu.Lock()
	ts.backend.block, ts.backend.entered = release, entered
	ts.backend.mu.Unlock()

	got := make(chan response, 1)
	go func() {
		res, err := ts.client.Get(ts.base + "/api/v1/overview")
		if err != nil {
			got <- response{code: -1, body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		got <- response{code: res.StatusCode, body: b}
	}()
	<-entered

	closed := make(chan struct{})
	go func() {
		ts.Close()
		close(closed)
	}()
	// Wait until the listener is closed (Shutdown has begun), then let the handler finish.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ts.Addr().String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after Close began")
		}
		select {
		case <-closed:
			t.Fatal("Close returned while a request was in flight")
		default:
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a request was in flight")
	default:
	}
	close(release)
	r := <-got
	if r.code != 200 || !bytes.Contains(r.body, []byte(`"sessions_open":1`)) {
		t.Fatalf("in-flight request got %d %s, want the full 200", r.code, r.body)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return after the request finished")
	}
	ts.Close() // idempotent
}

func TestCloseWithoutServe(t *testing.T) {
	l, err := New(Options{Listen: "127.0.0.1:0", Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // before Listen
	if err := l.Listen(); err == nil {
		t.Fatal("Listen after Close succeeded")
	}

	l, err = New(Options{Listen: "127.0.0.1:0", Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("listener still open after Close without Serve")
	}
}

// recorded is the result of serving one request through a handler in-process.
type recorded struct {
	code int
	body []byte
}

func serve(h http.Handler, method, path, body string) recorded {
	req, _ := http.NewRequest(method, "http://127.0.0.1:9187"+path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:1"
	rec := &memWriter{header: http.Header{}}
	h.ServeHTTP(rec, req)
	return recorded{code: rec.code, body: rec.body.Bytes()}
}

type memWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *memWriter) Header() http.Header { return w.header }
func (w *memWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return w.body.Write(b)
}
func (w *memWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

// TestOpenModeRefusesForeignHostNames: without tokens, a request whose Host is not a loopback
// name (a DNS-rebinding page's own name) is refused; with tokens the token decides.
func TestOpenModeRefusesForeignHostNames(t *testing.T) {
	open := startServer(t, "", "", nil)
	tokens := startServer(t, readToken, adminToken, nil)
	for _, tc := range []struct {
		ts    *testServer
		host  string
		token string
		want  int
	}{
		{open, "evil.example:9187", "", 403},
		{open, "127.0.0.2.nip.io", "", 403},
		{open, "localhost:9187", "", 200},
		{open, "127.0.0.1:9187", "", 200},
		{open, "[::1]:9187", "", 200},
		{tokens, "pgfront.internal:9187", readToken, 200},
	} {
		req, err := http.NewRequest("GET", tc.ts.base+"/api/v1/routes", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		res, err := tc.ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("Host %q: %d, want %d", tc.host, res.StatusCode, tc.want)
		}
	}
}
