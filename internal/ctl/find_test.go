package ctl

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/cli"
)

// runWith is run with Options.DefaultConfig.
func runWith(defaultConfig string, env map[string]string, args ...string) result {
	var out, errOut bytes.Buffer
	code := Run(args, Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }, DefaultConfig: defaultConfig})
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// writeConfig writes a valid pgfront config whose admin section is admin (YAML lines indented
// two spaces) and returns its path.
func writeConfig(t *testing.T, dir, name, admin string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	src := "admin:\n" + admin + `clusters:
  main:
    servers: [{name: pg1, address: "127.0.0.1:5432", role: primary}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: main, role: primary}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func port(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// TestFlagsAfterTheCommand: flags may follow the command and its arguments.
func TestFlagsAfterTheCommand(t *testing.T) {
	srv, b := api(t, "", "")
	run(nil, "servers", "-addr", srv.URL).want(t, 0)
	r := run(nil, "routes", "-json", "-addr", srv.URL)
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, "[") {
		t.Errorf("-json after the command was not applied: %q", r.stdout)
	}
	run(nil, "server", "main/pg1", "-addr", srv.URL, "drain").want(t, 0)
	run(nil, "kill", "7", "-addr="+srv.URL).want(t, 0)
	if got := strings.Join(b.noted(), ","); !strings.Contains(got, "state main/pg1 drain") || !strings.Contains(got, "kill 7") {
		t.Errorf("actions %q", got)
	}
}

// TestAddressAndTokenFromConfig: -c takes the admin address and a token from the config: the
// read token for reading, the admin token for actions, each from its file or variable.
func TestAddressAndTokenFromConfig(t *testing.T) {
	srv, b := api(t, readToken, adminToken)
	dir := t.TempDir()
	readFile := filepath.Join(dir, "read.token")
	if err := os.WriteFile(readFile, []byte(readToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A wildcard listen address is called on loopback.
	cfg := writeConfig(t, dir, "pgfront.yaml", "  listen: \"0.0.0.0:"+port(t, srv.URL)+"\"\n  read_token_file: "+readFile+"\n  admin_token_env: PGF_ADMIN\n")
	withAdmin := map[string]string{"PGF_ADMIN": adminToken}

	run(nil, "-c", cfg, "routes").want(t, 0)
	run(withAdmin, "kill", "7", "-c", cfg).want(t, 0)
	if got := b.noted(); len(got) != 1 || !strings.HasSuffix(got[0], "scope=admin") {
		t.Errorf("kill with the config's admin token: %q", got)
	}
	// Without the admin token's variable, an action falls back to the read token, and the
	// API says what is missing.
	r := run(nil, "-c", cfg, "kill", "7")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "403 Forbidden: this endpoint needs the admin token") {
		t.Errorf("action with the read token: %q", r.stderr)
	}
	// -c wins over the environment; -addr and -token-file win over -c.
	run(map[string]string{"PGFRONT_ADMIN_ADDR": "http://127.0.0.1:0", "PGFRONT_TOKEN": "nope"}, "-c", cfg, "routes").want(t, 0)
	other, _ := api(t, "", "")
	run(nil, "-c", cfg, "-addr", other.URL, "routes").want(t, 0)
	r = run(withAdmin, "-c", cfg, "-token-file", filepath.Join(dir, "missing"), "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "reading token file") {
		t.Errorf("-token-file did not win: %q", r.stderr)
	}

	// A token the config names but this user cannot have.
	noRead := writeConfig(t, dir, "unreadable.yaml", "  listen: \"127.0.0.1:"+port(t, srv.URL)+"\"\n  read_token_file: "+filepath.Join(dir, "gone.token")+"\n  admin_token_env: PGF_ADMIN\n")
	r = run(nil, "-c", noRead, "routes")
	r.want(t, 1)
	for _, want := range []string{"no token from the config: admin.read_token_file: reading token file: open " + filepath.Join(dir, "gone.token"), "admin.admin_token_env: $PGF_ADMIN is not set", "-token-file or $PGFRONT_TOKEN"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}

	// An invalid config, or one with the admin API off, is an error naming the file.
	off := writeConfig(t, dir, "off.yaml", "  listen: \"\"\n")
	r = run(nil, "-c", off, "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, off+" turns the admin API off (admin.listen is empty)") {
		t.Errorf("admin off: %q", r.stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("admin: {listen: x, bogus: 1}\n"), 0o600)
	r = run(nil, "-c", bad, "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "reading the admin address from "+bad+": "+bad+":1: admin.bogus") {
		t.Errorf("bad config: %q", r.stderr)
	}
	run(nil, "routes", "-c").want(t, 2)
}

// TestDefaultConfig: without -c, the default config (when it exists) gives the address and
// token, after -addr and the environment; one that cannot be used is noted and skipped.
func TestDefaultConfig(t *testing.T) {
	srv, _ := api(t, readToken, "")
	dir := t.TempDir()
	def := writeConfig(t, dir, "pgfront.yaml", "  listen: \"127.0.0.1:"+port(t, srv.URL)+"\"\n  read_token_env: PGF_READ\n")
	env := map[string]string{"PGF_READ": readToken}
	r := runWith(def, env, "routes")
	r.want(t, 0)
	if r.stderr != "" {
		t.Errorf("stderr %q", r.stderr)
	}
	// The environment wins over the default config.
	r = runWith(def, map[string]string{"PGF_READ": readToken, "PGFRONT_ADMIN_ADDR": "127.0.0.1:0"}, "routes")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "cannot reach the admin API at http://127.0.0.1:0 ($PGFRONT_ADMIN_ADDR)") {
		t.Errorf("stderr %q", r.stderr)
	}
	// A missing default config is no default at all.
	tg, err := findTargetFor(t, filepath.Join(dir, "missing.yaml"), nil)
	if err != nil || tg.base != DefaultAddr || tg.from != "the default" || len(tg.notes) != 0 {
		t.Errorf("missing default config: %+v %v", tg, err)
	}
	// An invalid one is noted and skipped.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("admin: [\n"), 0o600)
	tg, err = findTargetFor(t, bad, nil)
	if err != nil || tg.base != DefaultAddr || len(tg.notes) != 1 || !strings.HasPrefix(tg.notes[0], "not using "+bad+" for the admin address: "+bad+":1") {
		t.Errorf("invalid default config: %+v %v", tg, err)
	}
}

func findTargetFor(t *testing.T, defaultConfig string, env map[string]string, args ...string) (target, error) {
	t.Helper()
	fs, f := newFlags()
	if _, err := cli.Parse(fs, args); err != nil {
		t.Fatal(err)
	}
	return findTarget(fs, f, Options{Getenv: func(k string) string { return env[k] }, DefaultConfig: defaultConfig})
}

// TestUnreachableSaysWhereAndHow: an admin API that cannot be reached is named, with how its
// address was chosen and how to choose another.
func TestUnreachableSaysWhereAndHow(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "pgfront.yaml", "  listen: \"127.0.0.1:0\"\n")
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"-addr", "127.0.0.1:0", "routes"}, "at http://127.0.0.1:0 (-addr): dial tcp 127.0.0.1:0: connect: connection refused"},
		{map[string]string{"PGFRONT_ADMIN_ADDR": "127.0.0.1:0"}, []string{"routes"}, "at http://127.0.0.1:0 ($PGFRONT_ADMIN_ADDR)"},
		{nil, []string{"routes", "-c", cfg}, "at http://127.0.0.1:0 (admin.listen in " + cfg + ")"},
	} {
		r := run(tt.env, tt.args...)
		r.want(t, 1)
		if !strings.HasPrefix(r.stderr, "pgfront ctl: cannot reach the admin API "+tt.want) ||
			!strings.Contains(r.stderr, "choose another with -addr URL, -c CONFIG (its admin.listen) or $PGFRONT_ADMIN_ADDR") {
			t.Errorf("%q: stderr %q", tt.args, r.stderr)
		}
	}
}

func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"servers", "--help"}, {"-addr", "x", "-h"}} {
		r := run(nil, args...)
		r.want(t, 0)
		if r.stderr != "" || !strings.HasPrefix(r.stdout, "usage: pgfront ctl") {
			t.Errorf("%q: stdout %q stderr %q", args, r.stdout, r.stderr)
		}
		for _, want := range []string{"Commands:", "Flags:", "Examples:", cli.DefaultConfig, "-c string", "$PGFRONT_ADMIN_ADDR"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q: help lacks %q", args, want)
			}
		}
	}
}

func probe(env map[string]string, args ...string) result {
	var out, errOut bytes.Buffer
	code := Probe(args, Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func TestProbe(t *testing.T) {
	srv, b := api(t, readToken, adminToken) // /healthz needs no token
	r := probe(nil, "-addr", srv.URL)
	r.want(t, 0)
	if r.stdout != "ok\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	probe(map[string]string{"PGFRONT_ADMIN_ADDR": srv.URL}).want(t, 0)
	cfg := writeConfig(t, t.TempDir(), "pgfront.yaml", "  listen: \"127.0.0.1:"+port(t, srv.URL)+"\"\n  read_token_env: UNSET\n")
	probe(nil, "-c", cfg).want(t, 0)

	b.mu.Lock()
	b.notReady = "draining: shutting down"
	b.mu.Unlock()
	r = probe(nil, "-addr", srv.URL)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "503 Service Unavailable: draining: shutting down") {
		t.Errorf("draining: stderr %q", r.stderr)
	}

	r = probe(nil, "-addr", "127.0.0.1:0")
	r.want(t, 1)
	if !strings.Contains(r.stderr, "pgfront probe: cannot reach the admin API at http://127.0.0.1:0 (-addr)") {
		t.Errorf("unreachable: stderr %q", r.stderr)
	}
	probe(nil, "extra").want(t, 2)
	probe(nil, "-json").want(t, 2)
	r = probe(nil, "-h")
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, "usage: pgfront probe") || !strings.Contains(r.stdout, "HEALTHCHECK") {
		t.Errorf("probe -h: %q", r.stdout)
	}
}
