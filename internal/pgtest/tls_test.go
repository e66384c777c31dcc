package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/certtest"
)

// tlsFixture is a CA, a server certificate for loopback and the CA file clients use.
type tlsFixture struct {
	ca     *certtest.CA
	server *certtest.Leaf
	dir    string // client-side files
	caFile string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	ca, err := certtest.NewCA("pgtest CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(certtest.LeafOptions{CommonName: "pgtest", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	return &tlsFixture{ca: ca, server: server, dir: dir, caFile: caFile}
}

// clientCert issues a client certificate from ca and returns libpq parameters presenting it.
func (f *tlsFixture) clientCert(t *testing.T, ca *certtest.CA, name string) string {
	t.Helper()
	leaf, err := ca.Issue(certtest.LeafOptions{CommonName: name, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(f.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return " sslcert=" + certFile + " sslkey=" + keyFile
}

func (f *tlsFixture) verifyFull() string { return " sslmode=verify-full sslrootcert=" + f.caFile }

// connectWith logs in to s over TCP as user with extra libpq parameters (which override
// DSN's sslmode=disable), returns what pg_stat_ssl says about the session and closes it.
func connectWith(ctx context.Context, s *Server, user, password, params string) (ssl, clientDN string, err error) {
	cfg, err := pgconn.ParseConfig(s.DSN(user, "postgres") + params)
	if err != nil {
		return "", "", err
	}
	cfg.Password = password
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", "", err
	}
	defer conn.Close(ctx)
	results, err := conn.Exec(ctx, "SELECT ssl, coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").ReadAll()
	if err != nil {
		return "", "", err
	}
	row := results[0].Rows[0]
	return string(row[0]), string(row[1]), nil
}

// mustTLSLogin asserts a login with params succeeds over TLS and returns the client DN.
func mustTLSLogin(t *testing.T, s *Server, user, password, params string) string {
	t.Helper()
	ssl, dn, err := connectWith(testContext(t), s, user, password, params)
	if err != nil {
		t.Fatalf("%s: %s with%s: %v", s.Name, user, params, err)
	}
	if ssl != "t" {
		t.Fatalf("%s: %s with%s: pg_stat_ssl.ssl = %q, want t", s.Name, user, params, ssl)
	}
	return dn
}

// mustRefuseLogin asserts the server refuses a login with params with SQLSTATE code.
func mustRefuseLogin(t *testing.T, s *Server, user, password, params, code string) {
	t.Helper()
	_, _, err := connectWith(testContext(t), s, user, password, params)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		t.Fatalf("%s: %s with%s: %v, want SQLSTATE %s", s.Name, user, params, err, code)
	}
}

// mustBeServerFile asserts path is mode 0600 and owned by the user the server runs as.
func mustBeServerFile(t *testing.T, s *Server, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	wantUID := uint32(os.Getuid())
	if s.cred != nil {
		wantUID = s.cred.Uid
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != wantUID {
		t.Errorf("%s: owner %v, want uid %d", path, fi.Sys(), wantUID)
	}
}

// TestTLSHostSSLOnly: verify-full with the CA works, plain TCP is rejected, password users
// keep their method over TLS, and a replica (whose key pg_basebackup copied) does the same.
func TestTLSHostSSLOnly(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newTLSFixture(t)
	p := NewPrimaryTLS(t, &TLSFiles{CertPEM: f.server.CertPEM, KeyPEM: f.server.KeyPEM, CAPEM: f.ca.CertPEM, HostSSLOnly: true}, nil)
	mustBeServerFile(t, p, filepath.Join(p.DataDir, tlsKeyName))
	mustValue(t, p, "SHOW ssl", "on")

	mustTLSLogin(t, p, "postgres", "", f.verifyFull())
	mustRefuseLogin(t, p, "postgres", "", " sslmode=disable", "28000")

	// The server shows the certificate we gave it: another CA does not verify it.
	other, err := certtest.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, err := other.WriteFile(f.dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := connectWith(ctx, p, "postgres", "", " sslmode=verify-full sslrootcert="+otherFile); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("verify-full against another CA: %v, want unknown authority", err)
	}

	if err := p.CreateUser(ctx, "alice", "pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	mustTLSLogin(t, p, "alice", "pw", f.verifyFull())
	mustRefuseLogin(t, p, "alice", "wrong", f.verifyFull(), "28P01")
	mustRefuseLogin(t, p, "alice", "pw", " sslmode=disable", "28000")

	r, err := p.StartReplica(ctx, "replica1")
	if err != nil {
		t.Fatal(err)
	}
	registerCleanup(t, r)
	mustBeServerFile(t, r, filepath.Join(r.DataDir, tlsKeyName))
	mustValue(t, r, "SELECT pg_is_in_recovery()", "t")
	mustTLSLogin(t, r, "postgres", "", f.verifyFull())
	mustTLSLogin(t, r, "alice", "pw", f.verifyFull())
	mustRefuseLogin(t, r, "alice", "wrong", f.verifyFull(), "28P01")
	mustRefuseLogin(t, r, "postgres", "", " sslmode=disable", "28000")
	if err := p.Exec(ctx, "CREATE TABLE replicated (x int)"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "table replicated", valueIs(r, "SELECT count(*) FROM pg_tables WHERE tablename = 'replicated'", "1"))
}

// TestTLSClientCert: logins over TCP need a client certificate from the CA; replicas too.
func TestTLSClientCert(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newTLSFixture(t)
	p := NewPrimaryTLS(t, &TLSFiles{CertPEM: f.server.CertPEM, KeyPEM: f.server.KeyPEM, CAPEM: f.ca.CertPEM, ClientCert: true}, nil)
	mustBeServerFile(t, p, filepath.Join(p.DataDir, tlsCAName))

	aliceCert := f.clientCert(t, f.ca, "alice")
	mustRefuseLogin(t, p, "postgres", "", f.verifyFull(), "28000")
	mustRefuseLogin(t, p, "postgres", "", " sslmode=disable", "28000")
	if dn := mustTLSLogin(t, p, "postgres", "", f.verifyFull()+aliceCert); !strings.Contains(dn, "CN=alice") {
		t.Errorf("client_dn = %q, want CN=alice", dn)
	}
	// A certificate from another CA fails the handshake.
	other, err := certtest.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := connectWith(ctx, p, "postgres", "", f.verifyFull()+f.clientCert(t, other, "mallory")); err == nil {
		t.Error("a client certificate from another CA was accepted")
	}

	if err := p.CreateUser(ctx, "bob", "pw", "md5"); err != nil {
		t.Fatal(err)
	}
	mustTLSLogin(t, p, "bob", "pw", f.verifyFull()+aliceCert)
	mustRefuseLogin(t, p, "bob", "wrong", f.verifyFull()+aliceCert, "28P01")
	mustRefuseLogin(t, p, "bob", "pw", f.verifyFull(), "28000")

	r, err := p.StartReplica(ctx, "replica1")
	if err != nil {
		t.Fatal(err)
	}
	registerCleanup(t, r)
	mustBeServerFile(t, r, filepath.Join(r.DataDir, tlsKeyName))
	mustTLSLogin(t, r, "postgres", "", f.verifyFull()+aliceCert)
	mustRefuseLogin(t, r, "postgres", "", f.verifyFull(), "28000")
}

// TestTLSOptional: without HostSSLOnly and ClientCert, TCP takes TLS and plain alike.
func TestTLSOptional(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newTLSFixture(t)
	p := NewPrimaryTLS(t, &TLSFiles{CertPEM: f.server.CertPEM, KeyPEM: f.server.KeyPEM}, nil)
	mustTLSLogin(t, p, "postgres", "", f.verifyFull())
	mustTLSLogin(t, p, "postgres", "", " sslmode=require")
	ssl, _, err := connectWith(ctx, p, "postgres", "", " sslmode=disable")
	if err != nil || ssl != "f" {
		t.Errorf("sslmode=disable: ssl=%q, %v; want f", ssl, err)
	}
	mustValue(t, p, "SHOW ssl_ca_file", "")
}

func TestTLSFilesRejected(t *testing.T) {
	f := newTLSFixture(t)
	other, err := f.ca.Issue(certtest.LeafOptions{CommonName: "other"})
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for name, files := range map[string]*TLSFiles{
		"mismatched key":         {CertPEM: f.server.CertPEM, KeyPEM: other.KeyPEM},
		"client cert without CA": {CertPEM: f.server.CertPEM, KeyPEM: f.server.KeyPEM, ClientCert: true},
		"no certificate":         {KeyPEM: f.server.KeyPEM},
	} {
		_, err := StartPrimary(context.Background(), Options{BaseDir: base, TLS: files})
		if err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Errorf("%s: %v, want an error about the TLS files", name, err)
		}
	}
	if entries, err := os.ReadDir(base); err != nil || len(entries) != 0 {
		t.Errorf("left behind in the base dir: %v %v", entries, err)
	}
}
