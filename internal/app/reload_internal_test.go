package app

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/logtest"
)

// TestReloadLogAndTokens: a reload reaches the loggers built before it (level and format) and
// the admin listener's tokens, without a restart.
func TestReloadLogAndTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgfront.yaml")
	token := filepath.Join(dir, "admin.token")
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := func(level, format string) string {
		return `log: {level: ` + level + `, format: ` + format + `}
clusters:
  c:
    health: {check: none}
    servers: [{name: s, address: "127.0.0.1:1", role: primary}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: c, role: primary}
admin: {listen: "127.0.0.1:0", admin_token_file: ` + token + `}
`
	}
	write(path, conf("error", "text"))
	write(token, "first-token")
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf logtest.Buffer
	a, err := New(cfg, NewLogger(cfg.Log.Format, cfg.Log.Level, &buf))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	derived := a.log.With("component", "test")
	derived.Info("before reload")

	write(path, conf("debug", "json"))
	write(token, "second-token")
	if _, err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	derived.Debug("after reload")
	if out := buf.String(); strings.Contains(out, "before reload") || !strings.Contains(out, `"msg":"after reload"`) {
		t.Errorf("log after reloading level error/text to debug/json:\n%s", out)
	}

	status := func(tok string) int {
		req := httptest.NewRequest("GET", "/api/v1/routes", nil)
		req.Host = "127.0.0.1"
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		a.admin.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	if got := status("first-token"); got != http.StatusUnauthorized {
		t.Errorf("the token before the reload: %d, want 401", got)
	}
	if got := status("second-token"); got != http.StatusOK {
		t.Errorf("the token after the reload: %d, want 200", got)
	}
}
