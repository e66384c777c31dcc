package app_test

// TLS on both sides, end to end: certificates made by the test (crypto/x509), real PostgreSQL
// with ssl=on where the server side needs it, pgx, psql and hand-driven TLS clients.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// tlsFixture is a CA and the certificates the TLS tests use, written to files.
type tlsFixture struct {
	t      *testing.T
	dir    string
	ca     *certtest.CA
	caFile string
	// pgfront's certificate (127.0.0.1, localhost and two SNI names).
	proxyCert, proxyKey string
	proxyLeaf           *certtest.Leaf
	// clients' CA and one client certificate from it.
	clientCAFile          string
	clientCert, clientKey string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{t: t, dir: t.TempDir()}
	var err error
	if f.ca, err = certtest.NewCA("pgfront test CA"); err != nil {
		t.Fatal(err)
	}
	if f.caFile, err = f.ca.WriteFile(f.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	f.proxyLeaf = f.issue(certtest.LeafOptions{CommonName: "pgfront", Hosts: []string{"127.0.0.1", "localhost", "a.example.test", "b.example.test"}})
	f.proxyCert, f.proxyKey = f.write(f.proxyLeaf, "pgfront")
	clientCA, err := certtest.NewCA("pgfront test client CA")
	if err != nil {
		t.Fatal(err)
	}
	if f.clientCAFile, err = clientCA.WriteFile(f.dir, "client-ca"); err != nil {
		t.Fatal(err)
	}
	cl, err := clientCA.Issue(certtest.LeafOptions{CommonName: "app1", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	f.clientCert, f.clientKey = f.write(cl, "client")
	return f
}

func (f *tlsFixture) issue(o certtest.LeafOptions) *certtest.Leaf {
	f.t.Helper()
	l, err := f.ca.Issue(o)
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *tlsFixture) write(l *certtest.Leaf, name string) (cert, key string) {
	f.t.Helper()
	cert, key, err := l.WriteFiles(f.dir, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return cert, key
}

// serverFiles are PEM files for a PostgreSQL server whose certificate names hosts.
func (f *tlsFixture) serverFiles(o certtest.LeafOptions) *pgtest.TLSFiles {
	l := f.issue(o)
	return &pgtest.TLSFiles{CertPEM: l.CertPEM, KeyPEM: l.KeyPEM, CAPEM: f.ca.CertPEM}
}

// terminate is a route's tls block terminating with pgfront's certificate.
func (f *tlsFixture) terminate(extra string) string {
	return fmt.Sprintf("tls:\n  mode: terminate\n  cert_file: %s\n  key_file: %s\n%s\n", f.proxyCert, f.proxyKey, indent(extra, "  "))
}

// tlsDSN is a connection string to a route with sslmode and the fixture's CA.
func (f *tlsFixture) tlsDSN(e *env, route, sslmode string) string {
	a := e.addr(route)
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=%s sslrootcert=%s connect_timeout=10",
		a.IP, a.Port, sslmode, f.caFile)
}

func (f *tlsFixture) roots() *x509.CertPool { return f.ca.Pool() }

func connectDSN(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting with %q: %v", dsn, err)
	}
	t.Cleanup(func() { closeConn(c) })
	return c
}

func queryString(t *testing.T, c *pgx.Conn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// peerCert is the certificate the client saw.
func peerCert(t *testing.T, c *pgx.Conn) *x509.Certificate {
	t.Helper()
	tc, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("connection is %T, not TLS", c.PgConn().Conn())
	}
	cs := tc.ConnectionState()
	if cs.Version < tls.VersionTLS12 || len(cs.PeerCertificates) == 0 {
		t.Fatalf("TLS state: version %x, %d certificates", cs.Version, len(cs.PeerCertificates))
	}
	return cs.PeerCertificates[0]
}

func TestTLSTerminate(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate("")+"timeouts:\n  startup: 2s\n", ""))

	// verify-full against pgfront's certificate; the server side stays plain.
	c := connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
	if got := peerCert(t, c); !got.Equal(f.proxyLeaf.Cert) {
		t.Fatalf("client saw certificate %q, want pgfront's", got.Subject.CommonName)
	}
	if ssl := queryString(t, c, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); ssl != "false" {
		t.Errorf("server side ssl = %s, want false (server_tls is disable)", ssl)
	}
	if s := e.sessionOf(c); !strings.HasPrefix(s.TLS, "TLS 1.3") || s.State != "idle" {
		t.Errorf("session view: tls %q state %q", s.TLS, s.State)
	}

	// Cancel routing over TLS: the CancelRequest comes on a new TLS connection.
	cancelQuery(t, p, c)
	if got := queryString(t, c, "SELECT 'alive'"); got != "alive" {
		t.Fatalf("session after cancel: %q", got)
	}

	// Plain text still works when TLS is not required, and so does sslmode=require.
	connectDSN(t, e.dsn("rw"))
	connectDSN(t, f.tlsDSN(e, "rw", "require"))

	// psql (libpq) with verify-full, when psql is here.
	if psql, err := exec.LookPath("psql"); err == nil {
		cmd := exec.Command(psql, f.tlsDSN(e, "rw", "verify-full"), "-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "f" {
			t.Errorf("psql verify-full through pgfront: %v: %s", err, out)
		}
	}
}

// directTLS opens PostgreSQL 17's direct TLS (sslnegotiation=direct): a ClientHello first, with
// the given ALPN protocols.
func directTLS(t *testing.T, e *env, f *tlsFixture, alpn []string) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	return tls.DialWithDialer(d, "tcp", e.addr("rw").String(), &tls.Config{RootCAs: f.roots(), ServerName: "127.0.0.1", NextProtos: alpn})
}

func TestTLSDirect(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate(""), ""))

	tc, err := directTLS(t, e, f, []string{"postgresql"})
	if err != nil {
		t.Fatalf("direct TLS with ALPN postgresql: %v", err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
	fe := pgproto3.NewFrontend(tc, tc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}})
	fe.Send(&pgproto3.Query{String: "SELECT 'direct'"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var got string
	for got == "" {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("direct TLS session: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("direct TLS session: %s %s", m.Code, m.Message)
		case *pgproto3.DataRow:
			got = string(m.Values[0])
		}
	}
	if got != "direct" {
		t.Fatalf("direct TLS query returned %q", got)
	}

	// Without ALPN: refused, with a FATAL over the TLS that says why.
	tc2, err := directTLS(t, e, f, nil)
	if err != nil {
		t.Fatalf("direct TLS without ALPN: handshake: %v", err)
	}
	defer tc2.Close()
	_ = tc2.SetDeadline(time.Now().Add(15 * time.Second))
	msg, err := pgproto3.NewFrontend(tc2, tc2).Receive()
	if er, ok := msg.(*pgproto3.ErrorResponse); err != nil || !ok || er.Code != "08P01" || !strings.Contains(er.Message, "ALPN") {
		t.Fatalf("direct TLS without ALPN: got %#v, %v; want FATAL 08P01 about ALPN", msg, err)
	}
	// With another protocol: the handshake itself fails.
	if tc3, err := directTLS(t, e, f, []string{"h2"}); err == nil {
		tc3.Close()
		t.Fatal("direct TLS with ALPN h2 was accepted")
	}
	hcNewClientWorks(t, e, "rw")
}

func TestTLSRequireAndBadHandshakes(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate("require: true")+"timeouts:\n  startup: 1s\n", ""))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, e.dsn("rw"))
	wantPgError(t, err, "28000", "requires SSL")
	connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))

	// A client that gets 'S' and then stalls: cut at timeouts.startup.
	raw, err := net.Dial("tcp", e.addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	answer := make([]byte, 1)
	if _, err := io.ReadFull(raw, answer); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest: %q %v", answer, err)
	}
	start := time.Now()
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(raw); err != nil && !isReset(err) {
		t.Fatalf("stalled handshake: %v", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("stalled TLS handshake closed after %s, want about timeouts.startup (1s)", d)
	}
	waitFor(t, 5*time.Second, "the stalled session's log line", func() bool {
		return strings.Contains(e.logs.String(), "cause=startup_timeout")
	})

	// Garbage after 'S': the handshake fails and the connection is closed, nothing more.
	raw2, err := net.Dial("tcp", e.addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	raw2.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	if _, err := io.ReadFull(raw2, answer); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest: %q %v", answer, err)
	}
	raw2.Write([]byte("this is not a TLS ClientHello\r\n\r\n"))
	_ = raw2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(raw2); err != nil && !isReset(err) {
		t.Fatalf("garbage after S: %v", err)
	}
	waitFor(t, 5*time.Second, "the garbage session's log line", func() bool {
		return strings.Contains(e.logs.String(), "cause=tls_error")
	})
	connectDSN(t, f.tlsDSN(e, "rw", "verify-full")) // pgfront is fine
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(err.Error(), "reset")
}

func TestTLSClientCertificates(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate("client_ca_file: "+f.clientCAFile), ""))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, f.tlsDSN(e, "rw", "verify-full")); err == nil {
		closeConn(c)
		t.Fatal("a client without a certificate got in")
	}
	c := connectDSN(t, f.tlsDSN(e, "rw", "verify-full")+fmt.Sprintf(" sslcert=%s sslkey=%s", f.clientCert, f.clientKey))
	if s := e.sessionOf(c); !strings.Contains(s.TLS, "client_cn=app1") {
		t.Errorf("session view tls %q, want the client certificate's name", s.TLS)
	}
}

func TestTLSCertificateReload(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate(""), ""))
	old := connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
	if !peerCert(t, old).Equal(f.proxyLeaf.Cert) {
		t.Fatal("first certificate not served")
	}

	next := f.issue(certtest.LeafOptions{CommonName: "pgfront-renewed", Hosts: []string{"127.0.0.1"}})
	writeFile(t, f.proxyCert, next.CertPEM)
	writeFile(t, f.proxyKey, next.KeyPEM)
	if err := e.app.ReloadCertificates(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	fresh := connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
	if got := peerCert(t, fresh); !got.Equal(next.Cert) {
		t.Fatalf("after reload a new client saw %q", got.Subject.CommonName)
	}
	if got := queryString(t, old, "SELECT 'still here'"); got != "still here" {
		t.Fatalf("old session after reload: %q", got)
	}

	// A broken key: the reload fails, says which file, and the renewed certificate stays.
	writeFile(t, f.proxyKey, []byte("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"))
	if err := e.app.ReloadCertificates(); err == nil || !strings.Contains(err.Error(), f.proxyKey) && !strings.Contains(err.Error(), f.proxyCert) {
		t.Fatalf("reload of a broken key: %v", err)
	}
	if got := peerCert(t, connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))); !got.Equal(next.Cert) {
		t.Fatalf("after a failed reload a new client saw %q", got.Subject.CommonName)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A new modification time, so the change is seen even within the file system's time
	// granularity.
	when := time.Now().Add(time.Duration(len(data)) * time.Millisecond)
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}

// TestTLSSNI: one listener, two clusters; the TLS server name picks the cluster.
func TestTLSSNI(t *testing.T) {
	f := newTLSFixture(t)
	pa := pgtest.NewPrimary(t, nil)
	pb := pgtest.NewPrimary(t, nil)
	e := startProxy(t, fmt.Sprintf(`
clusters:
  a:
    servers: [{name: pa, address: "%s", role: primary}]
  b:
    servers: [{name: pb, address: "%s", role: primary}]
routes:
  rw:
    listen: 127.0.0.1:0
    cluster: a
    role: primary
    tls:
      mode: terminate
      cert_file: %s
      key_file: %s
      sni:
        b.example.test: b
`, pa.Addr(), pb.Addr(), f.proxyCert, f.proxyKey))

	byName := func(host string) string {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10",
			host, e.addr("rw").Port, f.caFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connecting as %s: %v", host, err)
		}
		defer closeConn(c)
		return queryString(t, c, "SELECT inet_server_port()::text")
	}
	if got := byName("b.example.test"); got != fmt.Sprint(pb.Port) {
		t.Errorf("SNI b.example.test reached port %s, want cluster b (%d)", got, pb.Port)
	}
	if got := byName("a.example.test"); got != fmt.Sprint(pa.Port) {
		t.Errorf("SNI a.example.test reached port %s, want the route's cluster a (%d)", got, pa.Port)
	}
	if got := byName("127.0.0.1"); got != fmt.Sprint(pa.Port) {
		t.Errorf("no SNI reached port %s, want cluster a (%d)", got, pa.Port)
	}
}

func TestTLSPassthrough(t *testing.T) {
	f := newTLSFixture(t)
	files := f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}})
	p := pgtest.NewPrimaryTLS(t, files, nil)
	e := startProxy(t, oneServerConfig(p, "tls:\n  mode: passthrough\n", ""))

	// A verify-full client sees the server's own certificate through pgfront.
	c := connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
	if got := peerCert(t, c); got.Subject.CommonName != "postgres-server" {
		t.Fatalf("client saw %q through passthrough, want the server's certificate", got.Subject.CommonName)
	}
	if ssl := queryString(t, c, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); ssl != "true" {
		t.Fatalf("server side ssl = %s", ssl)
	}
	var s admin.Session
	waitFor(t, 5*time.Second, "the passthrough session listed", func() bool {
		s = e.sessionOf(c)
		return s.State == "passthrough"
	})
	if s.TLS != "passthrough" || s.BytesFromClient == 0 {
		t.Fatalf("passthrough session view: %+v", s)
	}
	// A plain client on the same route keeps every PostgreSQL-aware feature.
	plain := connectDSN(t, e.dsn("rw"))
	if ps := e.sessionOf(plain); ps.State != "idle" || ps.TxStatus != "I" {
		t.Fatalf("plain session on a passthrough route: %+v", ps)
	}
	closeConn(c)
	waitFor(t, 5*time.Second, "the passthrough session's end", func() bool {
		return strings.Contains(e.logs.String(), "tls=passthrough")
	})
}

// TestServerTLS: pgfront to a server that accepts TLS only, verify-full, with the health check
// logging in over TLS with SCRAM.
func TestServerTLS(t *testing.T) {
	f := newTLSFixture(t)
	files := f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}})
	files.HostSSLOnly = true
	p := pgtest.NewPrimaryTLS(t, files, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.CreateUser(ctx, "monitor", "monitor-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGFRONT_TEST_MONITOR_PW", "monitor-pw")
	cfg := strings.Replace(oneServerConfig(p, "", ""), "    servers:", fmt.Sprintf(`    server_tls:
      mode: verify-full
      ca_file: %s
    health:
      user: monitor
      password_env: PGFRONT_TEST_MONITOR_PW
      interval: 500ms
      fast_interval: 100ms
      timeout: 400ms
    servers:`, f.caFile), 1)
	cfg = strings.Replace(cfg, "        role: primary\n", "", 1) // learned by the check
	e := startProxy(t, cfg)

	waitFor(t, 15*time.Second, "the server checked up over TLS", func() bool {
		return e.value("pgfront_server_up", "cluster", "c", "server", "pg") == 1 &&
			e.value("pgfront_server_role", "cluster", "c", "server", "pg", "role", "primary") == 1
	})
	c := e.connect("rw")
	if ssl := queryString(t, c, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); ssl != "true" {
		t.Fatalf("server side ssl = %s, want true", ssl)
	}
	// Cancel routing reaches a TLS-only server.
	cancelQuery(t, p, c)
	if strings.Contains(e.logs.String(), "monitor-pw") {
		t.Fatal("the monitoring password reached the log")
	}
}

// TestServerTLSVerificationFailures: a server whose certificate names another host, or has
// expired, is refused under verify-full with a log line that says why; verify-ca accepts the
// wrong host; require against a server without TLS says so.
func TestServerTLSVerificationFailures(t *testing.T) {
	f := newTLSFixture(t)
	wrongHost := pgtest.NewPrimaryTLS(t, f.serverFiles(certtest.LeafOptions{CommonName: "other", Hosts: []string{"other.example"}}), nil)
	expired := pgtest.NewPrimaryTLS(t, f.serverFiles(certtest.LeafOptions{CommonName: "old", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), nil)
	plain := pgtest.NewPrimary(t, nil)

	for _, tc := range []struct {
		name, mode string
		p          *pgtest.Server
		log        string // "" = the connection works
	}{
		{"wrong host verify-full", "verify-full", wrongHost, "(verify-full): x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
		{"wrong host verify-ca", "verify-ca", wrongHost, ""},
		{"expired verify-full", "verify-full", expired, "expired"},
		{"no TLS require", "require", plain, "does not support SSL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverTLS := fmt.Sprintf("    server_tls:\n      mode: %s\n", tc.mode)
			if tc.mode != "require" {
				serverTLS += "      ca_file: " + f.caFile + "\n"
			}
			cfg := strings.Replace(oneServerConfig(tc.p, "timeouts:\n  queue: 1s\n  failover_wait: 1s\nconnect_retries: 0\n", ""), "    servers:",
				serverTLS+"    health: {check: none}\n    servers:", 1)
			e := startProxy(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, e.dsn("rw"))
			if tc.log == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				closeConn(c)
				return
			}
			if err == nil {
				closeConn(c)
				t.Fatal("connected through a server pgfront should have refused")
			}
			wantPgError(t, err, "08006", "could not connect to a server")
			waitFor(t, 5*time.Second, "a log line naming the TLS failure", func() bool {
				return strings.Contains(e.logs.String(), tc.log)
			})
		})
	}
}

// TestServerTLSClientCertificate: a server that demands a client certificate gets pgfront's.
func TestServerTLSClientCertificate(t *testing.T) {
	f := newTLSFixture(t)
	files := f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}})
	files.ClientCert = true
	// The server verifies client certificates with the fixture's CA: issue pgfront's from it.
	cl := f.issue(certtest.LeafOptions{CommonName: "pgfront-client", Client: true})
	certFile, keyFile := f.write(cl, "pgfront-client")
	p := pgtest.NewPrimaryTLS(t, files, nil)
	cfg := strings.Replace(oneServerConfig(p, "", ""), "    servers:", fmt.Sprintf(
		"    server_tls: {mode: verify-full, ca_file: %s, cert_file: %s, key_file: %s}\n    health: {check: none}\n    servers:",
		f.caFile, certFile, keyFile), 1)
	e := startProxy(t, cfg)
	c := e.connect("rw")
	if ssl := queryString(t, c, "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); !strings.Contains(ssl, "pgfront-client") {
		t.Fatalf("server saw client certificate %q", ssl)
	}
}

// TestHalfCloseMatrixTLS runs the half-close matrix with every client on TLS terminated by
// pgfront.
func TestHalfCloseMatrixTLS(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	halfCloseMatrix(t, p, func(t *testing.T, routeExtra string) *env {
		e := startProxy(t, oneServerConfig(p, routeExtra+"\n"+f.terminate("require: true"), ""))
		e.clientTLS = &tls.Config{RootCAs: f.roots(), ServerName: "127.0.0.1"}
		return e
	})
}

// cancelQuery runs pg_sleep(30) on c, sends a CancelRequest (the way c connected: over TLS for
// a TLS client) once the backend sleeps, and checks the query ends with 57014.
func cancelQuery(t *testing.T, p *pgtest.Server, c *pgx.Conn) {
	t.Helper()
	pid := c.PgConn().PID()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
		errc <- err
	}()
	hcWaitSleeping(t, p, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatalf("sending the cancel request: %v", err)
	}
	select {
	case err := <-errc:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("cancelled query: %v, want 57014", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the query was not cancelled within 15s")
	}
}

// TestTLSChannelBindingThroughTermination pins down what the README says about SCRAM channel
// binding behind a terminating pgfront: with server_tls on, a client's default
// channel_binding=prefer binds to pgfront's certificate and the server refuses it, while
// channel_binding=disable works; with server_tls disable the default works.
func TestTLSChannelBindingThroughTermination(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimaryTLS(t, f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.CreateUser(ctx, "app", "app-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	dsn := func(e *env, extra string) string {
		a := e.addr("rw")
		return fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-pw dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10 %s",
			a.Port, f.caFile, extra)
	}
	withServerTLS := startProxy(t, strings.Replace(oneServerConfig(p, f.terminate(""), ""), "    servers:",
		fmt.Sprintf("    server_tls: {mode: verify-full, ca_file: %s}\n    health: {check: none}\n    servers:", f.caFile), 1))
	if c, err := pgx.Connect(ctx, dsn(withServerTLS, "")); err == nil {
		closeConn(c)
		t.Fatal("SCRAM with channel binding through a terminating pgfront to a TLS server succeeded")
	}
	connectDSN(t, dsn(withServerTLS, "channel_binding=disable"))

	plainServer := startProxy(t, strings.Replace(oneServerConfig(p, f.terminate(""), ""), "    servers:",
		"    health: {check: none}\n    servers:", 1))
	connectDSN(t, dsn(plainServer, ""))
}

// TestTLSReloadOnSIGHUP: SIGHUP reloads the config, certificate files included, and pgfront
// keeps running.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	r := startRun(t, oneServerConfig(p, f.terminate(""), ""))
	dsn := func() string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10",
			r.addr.Port, f.caFile)
	}
	next := f.issue(certtest.LeafOptions{CommonName: "pgfront-after-hup", Hosts: []string{"127.0.0.1"}})
	writeFile(t, f.proxyCert, next.CertPEM)
	writeFile(t, f.proxyKey, next.KeyPEM)
	r.sigs <- syscall.SIGHUP
	waitFor(t, 5*time.Second, "the reload log line", func() bool {
		return strings.Contains(r.logs.String(), "config reloaded")
	})
	r.wantRunning(t)
	if got := peerCert(t, connectDSN(t, dsn())); !got.Equal(next.Cert) {
		t.Fatalf("after SIGHUP a new client saw %q", got.Subject.CommonName)
	}
}
