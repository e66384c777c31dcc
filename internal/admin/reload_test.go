package admin

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestReloadEndpoint: POST /api/v1/reload needs the admin scope, reports what changed, and an
// invalid config comes back as 422 with its problems.
func TestReloadEndpoint(t *testing.T) {
	ts := startServer(t, "r", "a", nil)
	if res := ts.do(t, "POST", "/api/v1/reload", "r", ""); res.code != 403 {
		t.Fatalf("read token: %d, want 403", res.code)
	}
	res := ts.do(t, "POST", "/api/v1/reload", "a", "")
	if res.code != 200 {
		t.Fatalf("reload: %d %s", res.code, res.body)
	}
	var got ReloadResult
	if err := json.Unmarshal(res.body, &got); err != nil || got.Generation != 2 || len(got.Changes) != 1 {
		t.Fatalf("reload result %s (%v)", res.body, err)
	}
	ts.backend.mu.Lock()
	ts.backend.reloadErr = errors.New("pgfront.yaml:3: routes.rw.listen: bad address")
	ts.backend.mu.Unlock()
	res = ts.do(t, "POST", "/api/v1/reload", "a", "")
	if res.code != 422 || !strings.Contains(string(res.body), "pgfront.yaml:3") {
		t.Fatalf("invalid reload: %d %s", res.code, res.body)
	}
	if !strings.Contains(ts.logs.String(), `"action":"reload"`) {
		t.Errorf("reload not audited:\n%s", ts.logs.String())
	}
}

// TestHealthzNotReady: /healthz turns 503 while the backend is not ready (a drain).
func TestHealthzNotReady(t *testing.T) {
	ts := startServer(t, "", "", nil)
	if res := ts.do(t, "GET", "/healthz", "", ""); res.code != 200 {
		t.Fatalf("healthz: %d", res.code)
	}
	ts.backend.mu.Lock()
	ts.backend.notReady = "draining"
	ts.backend.mu.Unlock()
	if res := ts.do(t, "GET", "/healthz", "", ""); res.code != 503 || string(res.body) != "draining" {
		t.Fatalf("healthz while draining: %d %q", res.code, res.body)
	}
}

// TestSetTokens: new tokens apply to the next request; the old ones stop working.
func TestSetTokens(t *testing.T) {
	ts := startServer(t, "r1", "a1", nil)
	ts.SetTokens([]byte("r2"), []byte("a2"))
	if res := ts.do(t, "GET", "/api/v1/routes", "r1", ""); res.code != 401 {
		t.Fatalf("old token: %d, want 401", res.code)
	}
	if res := ts.do(t, "GET", "/api/v1/routes", "r2", ""); res.code != 200 {
		t.Fatalf("new token: %d", res.code)
	}
}

// TestAdopt: a listener bound elsewhere (handed over) is served.
func TestAdopt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(Options{Listen: "127.0.0.1:0", Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Adopt(ln); err != nil {
		t.Fatal(err)
	}
	l.Serve()
	if l.Addr().String() != ln.Addr().String() {
		t.Fatalf("addr %v, want %v", l.Addr(), ln.Addr())
	}
	ts := &testServer{Listener: l, base: "http://" + ln.Addr().String(), client: startServer(t, "", "", nil).client}
	if res := ts.do(t, "GET", "/healthz", "", ""); res.code != 200 {
		t.Fatalf("healthz on adopted listener: %d", res.code)
	}
}
