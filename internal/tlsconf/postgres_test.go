package tlsconf

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// loginVia logs in to s as postgres through a connection Negotiate prepared (told the
// server is name:port; "" = the real address), and returns pg_stat_ssl's ssl and client_dn
// for the session. pgconn itself does no TLS here (sslmode=disable).
func loginVia(ctx context.Context, s *pgtest.Server, c *Client, name string) (ssl, clientDN string, err error) {
	cfg, err := pgconn.ParseConfig(s.DSN("postgres", "postgres"))
	if err != nil {
		return "", "", err
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if name != "" {
			_, port, _ := net.SplitHostPort(addr)
			addr = net.JoinHostPort(name, port)
		}
		nc, err := c.Negotiate(ctx, conn, addr)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return nc, nil
	}
	return sessionSSL(ctx, cfg)
}

// loginParams logs in with pgconn's own TLS, configured from ConnParams.
func loginParams(ctx context.Context, s *pgtest.Server, c *Client) (ssl, clientDN string, err error) {
	dsn := s.DSN("postgres", "postgres")
	params := c.ConnParams()
	for _, k := range slices.Sorted(maps.Keys(params)) {
		dsn += fmt.Sprintf(" %s='%s'", k, params[k])
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", "", err
	}
	return sessionSSL(ctx, cfg)
}

func sessionSSL(ctx context.Context, cfg *pgconn.Config) (ssl, clientDN string, err error) {
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

// TestPostgreSQLModes runs every mode against a real PostgreSQL with ssl on (TCP with and
// without TLS allowed), through Negotiate and through pgconn with ConnParams.
func TestPostgreSQLModes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := pgtest.NewPrimaryTLS(t, &pgtest.TLSFiles{CertPEM: f.good.CertPEM, KeyPEM: f.good.KeyPEM}, nil)
	ctx := testContext(t)
	for _, mode := range []string{ModeDisable, ModePrefer, ModeRequire, ModeVerifyCA, ModeVerifyFull} {
		c := newClient(t, ClientOptions{Mode: mode, CAFile: f.caFile})
		want := "t"
		if mode == ModeDisable {
			want = "f"
		}
		if ssl, _, err := loginVia(ctx, p, c, ""); err != nil || ssl != want {
			t.Errorf("%s via Negotiate: ssl=%q, %v; want %s", mode, ssl, err, want)
		}
		if ssl, _, err := loginParams(ctx, p, c); err != nil || ssl != want {
			t.Errorf("%s via ConnParams: ssl=%q, %v; want %s", mode, ssl, err, want)
		}
	}

	// The certificate is for 127.0.0.1 and localhost: verify-ca takes another name,
	// verify-full does not.
	verifyCA := newClient(t, ClientOptions{Mode: ModeVerifyCA, CAFile: f.caFile})
	if ssl, _, err := loginVia(ctx, p, verifyCA, "db.example"); err != nil || ssl != "t" {
		t.Errorf("verify-ca as db.example: ssl=%q, %v", ssl, err)
	}
	verifyFull := newClient(t, ClientOptions{Mode: ModeVerifyFull, CAFile: f.caFile})
	var hostErr x509.HostnameError
	if _, _, err := loginVia(ctx, p, verifyFull, "db.example"); !errors.As(err, &hostErr) ||
		!strings.Contains(err.Error(), "(verify-full): x509: certificate is valid for localhost, not db.example") {
		t.Errorf("verify-full as db.example: %v, want a host name error", err)
	}
	if ssl, _, err := loginVia(ctx, p, verifyFull, "localhost"); err != nil || ssl != "t" {
		t.Errorf("verify-full as localhost: ssl=%q, %v", ssl, err)
	}
	// A CA that did not sign the server's certificate.
	otherFile, err := f.otherCA.WriteFile(f.dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	var authErr x509.UnknownAuthorityError
	wrongCA := newClient(t, ClientOptions{Mode: ModeVerifyCA, CAFile: otherFile})
	if _, _, err := loginVia(ctx, p, wrongCA, ""); !errors.As(err, &authErr) {
		t.Errorf("verify-ca with another CA: %v, want unknown authority", err)
	}
}

// TestPostgreSQLWithoutSSL: a server with ssl off answers 'N'.
func TestPostgreSQLWithoutSSL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := pgtest.NewPrimary(t, nil)
	ctx := testContext(t)
	prefer := newClient(t, ClientOptions{Mode: ModePrefer})
	if ssl, _, err := loginVia(ctx, p, prefer, ""); err != nil || ssl != "f" {
		t.Errorf("prefer: ssl=%q, %v; want a plain session", ssl, err)
	}
	if ssl, _, err := loginParams(ctx, p, prefer); err != nil || ssl != "f" {
		t.Errorf("prefer via ConnParams: ssl=%q, %v; want a plain session", ssl, err)
	}
	for _, mode := range []string{ModeRequire, ModeVerifyCA, ModeVerifyFull} {
		c := newClient(t, ClientOptions{Mode: mode, CAFile: f.caFile})
		want := fmt.Sprintf("server at %s does not support SSL, but server_tls is %s", p.Addr(), mode)
		if _, _, err := loginVia(ctx, p, c, ""); !errors.Is(err, ErrServerNoSSL) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", mode, err, want)
		}
	}
}

// TestPostgreSQLClientCert: a server whose pg_hba.conf demands client certificates lets
// pgfront in with its certificate, and not without.
func TestPostgreSQLClientCert(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := pgtest.NewPrimaryTLS(t, &pgtest.TLSFiles{CertPEM: f.good.CertPEM, KeyPEM: f.good.KeyPEM, CAPEM: f.ca.CertPEM,
		HostSSLOnly: true, ClientCert: true}, nil)
	ctx := testContext(t)
	certFile, keyFile, err := f.client.WriteFiles(f.dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{ModeRequire, ModeVerifyFull} {
		with := newClient(t, ClientOptions{Mode: mode, CAFile: f.caFile, CertFile: certFile, KeyFile: keyFile})
		ssl, dn, err := loginVia(ctx, p, with, "")
		if err != nil || ssl != "t" || !strings.Contains(dn, "CN=pgfront") {
			t.Errorf("%s with a certificate: ssl=%q dn=%q, %v", mode, ssl, dn, err)
		}
		if ssl, dn, err := loginParams(ctx, p, with); err != nil || ssl != "t" || !strings.Contains(dn, "CN=pgfront") {
			t.Errorf("%s with a certificate via ConnParams: ssl=%q dn=%q, %v", mode, ssl, dn, err)
		}
		without := newClient(t, ClientOptions{Mode: mode, CAFile: f.caFile})
		var pgErr *pgconn.PgError
		if _, _, err := loginVia(ctx, p, without, ""); !errors.As(err, &pgErr) || pgErr.Code != "28000" {
			t.Errorf("%s without a certificate: %v, want SQLSTATE 28000", mode, err)
		}
	}
	disable := newClient(t, ClientOptions{Mode: ModeDisable})
	var pgErr *pgconn.PgError
	if _, _, err := loginVia(ctx, p, disable, ""); !errors.As(err, &pgErr) || pgErr.Code != "28000" {
		t.Errorf("disable: %v, want SQLSTATE 28000", err)
	}
}
