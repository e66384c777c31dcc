package preflight

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// load parses a config written to dir/pgfront.yaml.
func load(t *testing.T, dir, src string) (*config.Config, *config.Source) {
	t.Helper()
	path := filepath.Join(dir, "pgfront.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, s, _, err := config.LoadSource(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	return cfg, s
}

// noNetwork is a LookupHost that fails the test: no test reaches a real DNS server.
func noNetwork(t *testing.T) func(context.Context, string) ([]string, error) {
	return func(_ context.Context, host string) ([]string, error) {
		t.Errorf("unexpected lookup of %q", host)
		return nil, errors.New("no lookups here")
	}
}

func noEnv(string) (string, bool) { return "", false }

// finding is a warning or problem reduced to what the tests compare.
type finding struct {
	line int
	path string
	msg  string
}

func findings[T config.Warning | config.Problem](xs []T) []finding {
	var out []finding
	for _, x := range xs {
		switch v := any(x).(type) {
		case config.Warning:
			out = append(out, finding{v.Line, v.Path, v.Message})
		case config.Problem:
			out = append(out, finding{v.Line, v.Path, v.Message})
		}
	}
	return out
}

func problemsOf(t *testing.T, err error) []config.Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *config.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not a *config.Error: %v", err, err)
	}
	return e.Problems
}

// want checks that got holds exactly one finding per want, in order, each at the given line
// and path with a message containing every fragment.
func want(t *testing.T, what string, got []finding, wants ...finding) {
	t.Helper()
	if len(got) != len(wants) {
		t.Errorf("%s: got %d findings, want %d:\n%v", what, len(got), len(wants), got)
		return
	}
	for i, w := range wants {
		g := got[i]
		if g.line != w.line || g.path != w.path {
			t.Errorf("%s %d: at %d %s, want %d %s (%s)", what, i, g.line, g.path, w.line, w.path, g.msg)
		}
		for _, frag := range strings.Split(w.msg, "|") {
			if !strings.Contains(g.msg, frag) {
				t.Errorf("%s %d: %q lacks %q", what, i, g.msg, frag)
			}
		}
	}
}

func TestHostsThatDoNotResolve(t *testing.T) {
	cfg, src := load(t, t.TempDir(), `
clusters:
  main:
    health: {check: patroni}
    servers:
      - {name: pg1, address: "db1.example:5432", patroni: "db1.example:8008"}
      - {name: pg2, address: "db2.invalid:5432", patroni: "10.0.0.2:8008"}
      - {name: pg3, address: "[::1]:5432", patroni: "api3.invalid:8008"}
routes:
  rw: {listen: "127.0.0.1:0", cluster: main, role: primary}
fleet:
  secret_env: FLEET_KEY
  dns_peers: ["pgfront-peers.invalid:9187", "db1.example:9187", "10.0.0.9:9187"]
`)
	var mu sync.Mutex
	calls := map[string]int{}
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		calls[host]++
		mu.Unlock()
		switch host {
		case "db1.example":
			return []string{"192.0.2.1"}, nil
		case "db2.invalid", "pgfront-peers.invalid":
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return nil, context.DeadlineExceeded
	}
	warnings, err := Run(context.Background(), cfg, src, Options{LookupHost: lookup, LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	want(t, "warning", findings(warnings),
		finding{7, "clusters.main.servers[1].address", `host "db2.invalid" does not resolve on this machine (no such host)|health checks fail`},
		finding{8, "clusters.main.servers[2].patroni", `host "api3.invalid" does not resolve on this machine (the lookup timed out)`},
		finding{12, "fleet.secret_env", "FLEET_KEY is not set here"},
		finding{13, "fleet.dns_peers[0]", `host "pgfront-peers.invalid" does not resolve on this machine (no such host)|no peer is found through it`},
	)
	if len(calls) != 4 || calls["db1.example"] != 1 {
		t.Errorf("lookups %v: want each name once, no IP literal", calls)
	}
}

// TestRealResolverResolvesLocalhost: with no seam, the machine's resolver is used (localhost
// comes from /etc/hosts, so no DNS server is asked).
func TestRealResolverResolvesLocalhost(t *testing.T) {
	cfg, src := load(t, t.TempDir(), `
clusters:
  main:
    servers: [{name: pg1, address: "localhost:5432", role: primary}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: main, role: primary}
`)
	warnings, err := Run(context.Background(), cfg, src, Options{LookupEnv: noEnv})
	if err != nil || len(warnings) != 0 {
		t.Fatalf("localhost: %v %v", warnings, err)
	}
}

func TestEnvironment(t *testing.T) {
	cfg, src := load(t, t.TempDir(), `
admin:
  listen: "127.0.0.1:0"
  read_token_env: PGF_READ
  admin_token_env: PGF_ADMIN
clusters:
  a:
    health: {password_env: PGF_A}
    servers: [{name: pg1, address: "127.0.0.1:5432"}]
  b:
    health: {password_env: PGF_B}
    servers: [{name: pg1, address: "127.0.0.1:5433"}]
  c:
    health: {password_env: PGF_C}
    servers: [{name: pg1, address: "127.0.0.1:5434"}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: a, role: primary}
`)
	env := map[string]string{"PGF_B": "", "PGF_C": "secret", "PGF_READ": "r"}
	lookupEnv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	warnings, err := Run(context.Background(), cfg, src, Options{LookupHost: noNetwork(t), LookupEnv: lookupEnv})
	if err != nil {
		t.Fatal(err)
	}
	want(t, "warning", findings(warnings),
		finding{5, "admin.admin_token_env", "environment variable PGF_ADMIN is not set here: pgfront run refuses to start without it"},
		finding{8, "clusters.a.health.password_env", "environment variable PGF_A is not set here: the health checks of cluster a cannot log in"},
		finding{11, "clusters.b.health.password_env", "PGF_B is set but empty"},
	)
	read, admin := UnsetEnv(cfg, lookupEnv)
	if read || !admin {
		t.Errorf("UnsetEnv = %v %v, want false true", read, admin)
	}
}

// TestFleetSecretEnvironment: a fleet secret variable that is missing or too short here is
// warned about, and FleetSecretUnset lets check build the config without it.
func TestFleetSecretEnvironment(t *testing.T) {
	cfg, src := load(t, t.TempDir(), `
admin:
  listen: "127.0.0.1:0"
fleet:
  secret_env: PGF_FLEET
clusters:
  a:
    servers: [{name: pg1, address: "127.0.0.1:5432"}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: a, role: primary}
`)
	for _, tc := range []struct {
		env   map[string]string
		want  []finding
		unset bool
	}{
		{map[string]string{}, []finding{{5, "fleet.secret_env", "environment variable PGF_FLEET is not set here"}}, true},
		{map[string]string{"PGF_FLEET": "short"}, []finding{{5, "fleet.secret_env", "fewer than 32 bytes"}}, false},
		{map[string]string{"PGF_FLEET": strings.Repeat("k", 32)}, nil, false},
	} {
		lookupEnv := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		warnings, err := Run(context.Background(), cfg, src, Options{LookupHost: noNetwork(t), LookupEnv: lookupEnv})
		if err != nil {
			t.Fatal(err)
		}
		want(t, "warning", findings(warnings), tc.want...)
		if got := FleetSecretUnset(cfg, lookupEnv); got != tc.unset {
			t.Errorf("env %v: FleetSecretUnset = %v", tc.env, got)
		}
	}
}

// certFiles are the files of one certificate test.
type certFiles struct {
	dir                           string
	ca                            *certtest.CA
	caCrt, caKey                  string // the CA's certificate and key
	srvCrt, srvKey                string // a server certificate the CA issued, and its key
	otherCrt, otherKey            string // another one
	expiredCrt, expiredKey        string
	chainWrongOrder, encryptedKey string
	garbage                       string
}

func newCertFiles(t *testing.T) *certFiles {
	t.Helper()
	dir := t.TempDir()
	ca, err := certtest.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	f := &certFiles{dir: dir, ca: ca}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(name string, o certtest.LeafOptions) (string, string, *certtest.Leaf) {
		l, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", l.CertPEM), write(name+".key", l.KeyPEM), l
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	f.caCrt = write("ca.crt", ca.CertPEM)
	f.caKey = write("ca.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	var srv *certtest.Leaf
	f.srvCrt, f.srvKey, srv = issue("server", certtest.LeafOptions{CommonName: "db.example", Hosts: []string{"db.example"}})
	f.otherCrt, f.otherKey, _ = issue("other", certtest.LeafOptions{CommonName: "other.example"})
	f.expiredCrt, f.expiredKey, _ = issue("expired", certtest.LeafOptions{CommonName: "old.example",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	f.chainWrongOrder = write("wrong-order.crt", append(append([]byte(nil), ca.CertPEM...), srv.CertPEM...))
	f.encryptedKey = write("encrypted.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	f.garbage = write("garbage.pem", []byte("not PEM at all\n"))
	return f
}

// routeTLS is a config whose route rw terminates TLS with cert and key (line 7 and 8).
func routeTLS(cert, key, clientCA string) string {
	s := `clusters:
  main:
    servers: [{name: pg1, address: "127.0.0.1:5432", role: primary}]
routes:
  rw:
    listen: "127.0.0.1:0"
    cluster: main
    role: primary
    tls:
      mode: terminate
      cert_file: ` + cert + `
      key_file: ` + key + "\n"
	if clientCA != "" {
		s += "      client_ca_file: " + clientCA + "\n"
	}
	return s
}

const (
	certLine = 11
	keyLine  = 12
	caLine   = 13
	certPath = "routes.rw.tls.cert_file"
	keyPath  = "routes.rw.tls.key_file"
	caPath   = "routes.rw.tls.client_ca_file"
)

func TestCertificates(t *testing.T) {
	f := newCertFiles(t)
	missing := filepath.Join(f.dir, "missing.crt")
	tests := []struct {
		name            string
		cert, key, ca   string
		problems, warns []finding
	}{
		{name: "a good pair and CA", cert: f.srvCrt, key: f.srvKey, ca: f.caCrt},
		{name: "a missing file is named", cert: missing, key: f.srvKey,
			problems: []finding{{certLine, certPath, "open " + missing + ": no such file or directory"}}},
		{name: "swapped", cert: f.srvKey, key: f.srvCrt,
			problems: []finding{{certLine, certPath, "cert_file " + f.srvKey + " holds a private key and key_file " + f.srvCrt + " holds a certificate: the two are swapped"}}},
		{name: "the key twice", cert: f.srvKey, key: f.srvKey,
			problems: []finding{{certLine, certPath, "cert_file " + f.srvKey + " holds a private key, not a certificate: is it the key file?"}}},
		{name: "the certificate twice", cert: f.srvCrt, key: f.srvCrt,
			problems: []finding{{keyLine, keyPath, "key_file " + f.srvCrt + " holds a certificate, not a private key: is it the certificate file?"}}},
		{name: "a key of another certificate", cert: f.srvCrt, key: f.otherKey,
			problems: []finding{{keyLine, keyPath, "key_file " + f.otherKey + " does not match the certificate in cert_file " + f.srvCrt + " (CN=db.example)"}}},
		{name: "the CA before the server certificate", cert: f.chainWrongOrder, key: f.srvKey,
			problems: []finding{{certLine, certPath, "cert_file " + f.chainWrongOrder + " has its certificates in the wrong order: the one for key_file " + f.srvKey + " (CN=db.example) must come first"}}},
		{name: "a CA certificate as the server certificate", cert: f.caCrt, key: f.caKey,
			warns: []finding{{certLine, certPath, "cert_file " + f.caCrt + " holds a CA certificate (CN=test CA, it signs certificates), not a server certificate"}}},
		{name: "an expired certificate", cert: f.expiredCrt, key: f.expiredKey,
			warns: []finding{{certLine, certPath, "the certificate CN=old.example expired on"}}},
		{name: "an encrypted key", cert: f.srvCrt, key: f.encryptedKey,
			problems: []finding{{keyLine, keyPath, "key_file " + f.encryptedKey + " is encrypted with a passphrase"}}},
		{name: "not PEM", cert: f.garbage, key: f.garbage,
			problems: []finding{{certLine, certPath, "cert_file " + f.garbage + " holds no PEM certificate"},
				{keyLine, keyPath, "key_file " + f.garbage + " holds no PEM private key"}}},
		{name: "a key as the client CA", cert: f.srvCrt, key: f.srvKey, ca: f.caKey,
			problems: []finding{{caLine, caPath, f.caKey + " holds a private key, not CA certificates"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, src := load(t, t.TempDir(), routeTLS(tt.cert, tt.key, tt.ca))
			warnings, err := Run(context.Background(), cfg, src, Options{LookupHost: noNetwork(t), LookupEnv: noEnv})
			want(t, "problem", findings(problemsOf(t, err)), tt.problems...)
			want(t, "warning", findings(warnings), tt.warns...)
		})
	}
}

// TestServerTLSFiles: a cluster's client certificate and CA towards its servers are checked
// the same way.
func TestServerTLSFiles(t *testing.T) {
	f := newCertFiles(t)
	cfg, src := load(t, t.TempDir(), `clusters:
  main:
    server_tls:
      mode: verify-full
      ca_file: `+f.garbage+`
      cert_file: `+f.srvKey+`
      key_file: `+f.srvCrt+`
    servers: [{name: pg1, address: "127.0.0.1:5432", role: primary}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: main, role: primary}
`)
	_, err := Run(context.Background(), cfg, src, Options{LookupHost: noNetwork(t), LookupEnv: noEnv})
	want(t, "problem", findings(problemsOf(t, err)),
		finding{5, "clusters.main.server_tls.ca_file", f.garbage + " holds no PEM certificate"},
		finding{6, "clusters.main.server_tls.cert_file", "the two are swapped"},
	)
}
