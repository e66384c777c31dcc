package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/certtest"
)

// TestCheckAgainstTheMachine: check warns about variables not set here, without failing on an
// admin token variable that run would need (it may be set where pgfront runs), and fails,
// naming the files, on a certificate and key that cannot serve.
func TestCheckAgainstTheMachine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PGFRONT_TEST_UNSET_PW", "")
	os.Unsetenv("PGFRONT_TEST_UNSET_PW")
	t.Setenv("PGFRONT_TEST_UNSET_TOKEN", "")
	os.Unsetenv("PGFRONT_TEST_UNSET_TOKEN")
	envs := filepath.Join(dir, "env.yaml")
	os.WriteFile(envs, []byte(`admin:
  listen: 127.0.0.1:0
  admin_token_env: PGFRONT_TEST_UNSET_TOKEN
clusters:
  c:
    health: {password_env: PGFRONT_TEST_UNSET_PW}
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw: {listen: 127.0.0.1:0, cluster: c, role: primary}
`), 0o600)
	r := call("check", "-c", envs)
	r.want(t, 0)
	for _, want := range []string{
		"WARNING: " + envs + ":3: admin.admin_token_env: environment variable PGFRONT_TEST_UNSET_TOKEN is not set here",
		"WARNING: " + envs + ":6: clusters.c.health.password_env: environment variable PGFRONT_TEST_UNSET_PW is not set here",
		envs + ": OK (1 routes, 1 clusters, 2 warnings)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.stdout)
		}
	}

	ca, err := certtest.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certtest.LeafOptions{CommonName: "db.example"})
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := leaf.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	swapped := filepath.Join(dir, "swapped.yaml")
	os.WriteFile(swapped, []byte(`clusters:
  c:
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: c
    role: primary
    tls: {mode: terminate, cert_file: `+key+`, key_file: `+crt+`}
`), 0o600)
	r = call("check", "-c", swapped)
	r.want(t, 1)
	want := "pgfront check: " + swapped + ":10: routes.rw.tls.cert_file: cert_file " + key + " holds a private key and key_file " + crt + " holds a certificate: the two are swapped\n"
	if r.stderr != want {
		t.Errorf("swapped pair: stderr\n%q\nwant\n%q", r.stderr, want)
	}
}

// TestCheckYAMLSyntax: a YAML syntax error reaches the user with its line, column and hint.
func TestCheckYAMLSyntax(t *testing.T) {
	path := filepath.Join(t.TempDir(), "indent.yaml")
	os.WriteFile(path, []byte("clusters:\n  c:\n    servers:\n      - name: a\n       address: 127.0.0.1:5432\n"), 0o600)
	r := call("check", "-c", path)
	r.want(t, 1)
	want := "pgfront check: " + path + ":5:8: invalid YAML: "
	if !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "(hint: line 5 is indented 7 spaces, in line with no key above it") {
		t.Errorf("stderr %q, want %q... with a hint", r.stderr, want)
	}
}

// TestCheckDCS: an etcd password variable not set here and an etcd that does not answer are
// warnings (run may have both), not failures.
func TestCheckDCS(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PGFRONT_TEST_UNSET_ETCD", "")
	os.Unsetenv("PGFRONT_TEST_UNSET_ETCD")
	// 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never reachable; the dial fails or times out.
	path := filepath.Join(dir, "dcs.yaml")
	os.WriteFile(path, []byte(`clusters:
  c:
    dcs:
      etcd: {hosts: ["192.0.2.1:2379"], scope: pg, username: u, password_env: PGFRONT_TEST_UNSET_ETCD}
    servers:
      - {name: a, address: 127.0.0.1:5432}
routes:
  rw: {listen: 127.0.0.1:0, cluster: c, role: primary}
`), 0o600)
	r := call("check", "-c", path)
	r.want(t, 0)
	for _, want := range []string{
		"clusters.c.dcs.etcd.password_env: environment variable PGFRONT_TEST_UNSET_ETCD is not set here",
		"clusters.c.dcs.etcd.hosts[0]: etcd at 192.0.2.1:2379 does not accept connections from here",
		path + ": OK (1 routes, 1 clusters, 2 warnings)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.stdout)
		}
	}
}
