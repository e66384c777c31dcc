package app_test

// The PROXY protocol end to end against real PostgreSQL: a route behind a load balancer takes
// the client address from a v2 or v1 header sent by a trusted source (loopback plays the
// balancer) and shows it in the admin API's session list, the end record and the session log
// line; untrusted sources, trusted ones without a header, a header that never completes and a
// malformed one are refused; the header comes before TLS; a reload turns it on for new sessions.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/pgtest"
)

const carried = "203.0.113.7:4242" // the client address the test balancer's header carries

// proxyHeader is a PROXY protocol header of version 1 or 2 from src to dst.
func proxyHeader(t *testing.T, version byte, src string, dst net.Addr) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connectProxied connects pgx to a route through a dialer that first sends header (nil: none),
// as a load balancer would; local receives the socket's local address, known even when the
// connection is refused.
func connectProxied(ctx context.Context, dsn string, header []byte, local *string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		*local = c.LocalAddr().String()
		if header != nil {
			if _, err := c.Write(header); err != nil {
				_ = c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// listedClient waits for the admin API to list a session whose client is client.
func listedClient(t *testing.T, e *env, client string) admin.Session {
	t.Helper()
	var found admin.Session
	waitFor(t, 5*time.Second, "a session of client "+client+" listed", func() bool {
		var list []admin.Session
		if code := e.api("GET", "/api/v1/sessions", "", nil, &list); code != 200 {
			t.Fatalf("GET sessions: %d", code)
		}
		for _, s := range list {
			if s.Client == client {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// TestProxyProtocolCarriesClient: v2 and v1 headers from a trusted source (127.0.0.1): the
// session works, and the carried address is the client in the session list, the end record and
// the log line, which names the balancer as via.
func TestProxyProtocolCarriesClient(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "proxy_protocol:\n  trusted: [10.0.0.0/8, 127.0.0.1/32]", ""))
	for _, tc := range []struct {
		version byte
		client  string
	}{{2, carried}, {1, "198.51.100.9:5151"}} {
		t.Run(fmt.Sprintf("v%d", tc.version), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var local string
			c, err := connectProxied(ctx, e.dsn("rw"), proxyHeader(t, tc.version, tc.client, e.addr("rw")), &local)
			if err != nil {
				t.Fatalf("connecting with a v%d header: %v", tc.version, err)
			}
			if got := queryString(t, c, "SELECT 'through'"); got != "through" {
				t.Fatalf("query: %q", got)
			}
			if s := listedClient(t, e, tc.client); s.Route != "rw" || s.State != "idle" {
				t.Errorf("session view %+v", s)
			}
			closeConn(c)
			if rec := e.ended(tc.client); rec.Cause != "client_terminate" || rec.Refused {
				t.Errorf("end record %+v", rec)
			}
			line := logLine(t, e.logs, `msg="session ended"`, tc.client)
			if got := logAttr(line, "via"); got != local {
				t.Errorf("via=%q, want the balancer's address %s: %s", got, local, line)
			}
			if _, ok := e.endedNow(local); ok {
				t.Errorf("an end record shows the balancer's address %s as the client", local)
			}
		})
	}
}

// TestProxyProtocolUntrustedSource: the route trusts 10.0.0.0/8 only and the test connects
// from 127.0.0.1. A header is refused by closing the connection without a word; a client
// speaking PostgreSQL directly gets FATAL 28000. Both end records and log lines say why.
func TestProxyProtocolUntrustedSource(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "proxy_protocol: {trusted: [10.0.0.0/8]}", ""))

	c, fe := wireDial(t, e, "rw")
	if _, err := c.Write(append(proxyHeader(t, 2, carried, e.addr("rw")), wireStartup(t, pgproto3.ProtocolVersion30)...)); err != nil {
		t.Fatal(err)
	}
	if m, err := fe.Receive(); err == nil {
		t.Fatalf("an untrusted balancer got %T, want the connection closed", m)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		t.Fatalf("an untrusted balancer's read: %v, want a close", err)
	}
	local := c.LocalAddr().String()
	rec := e.ended(local)
	if rec.Cause != "denied" || !strings.Contains(rec.Error, `source `+local+` is not in route "rw"'s proxy_protocol.trusted`) {
		t.Errorf("end record %+v", rec)
	}
	if line := logLine(t, e.logs, `msg="session ended"`, local); !strings.Contains(logAttr(line, "err"), "proxy_protocol.trusted") {
		t.Errorf("log line does not say why: %s", line)
	}
	if _, ok := e.endedNow(carried); ok {
		t.Error("an untrusted header's address was believed")
	}

	direct, fe := wireDial(t, e, "rw")
	wireSend(t, direct, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}})
	wireFatal(t, direct, fe, "28000", "accepts connections only through its trusted load balancers")
	wantCause(t, e, direct.LocalAddr().String(), "denied")
}

// TestProxyProtocolTrustedWithoutHeader: a client on a trusted network that sends no header
// (it bypassed the balancer, or the balancer is not configured to send one) is refused.
func TestProxyProtocolTrustedWithoutHeader(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "proxy_protocol: {trusted: [127.0.0.1/32]}", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var local string
	c, err := connectProxied(ctx, e.dsn("rw"), nil, &local)
	if err == nil {
		closeConn(c)
		t.Fatal("connected without a PROXY header")
	}
	if got := sqlstate(err); got != "28000" || !strings.Contains(err.Error(), "expects a PROXY protocol header") {
		t.Fatalf("err = %v, want FATAL 28000 about the missing header", err)
	}
	if rec := e.ended(local); rec.Cause != "denied" || !strings.Contains(rec.Error, "no header from trusted source "+local) {
		t.Errorf("end record %+v", rec)
	}
}

// TestProxyProtocolHeaderTimeout: a header that never completes ends within timeouts.startup.
func TestProxyProtocolHeaderTimeout(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "proxy_protocol: {trusted: [127.0.0.1/32]}\ntimeouts: {startup: 500ms}", ""))
	c, fe := wireDial(t, e, "rw")
	start := time.Now()
	if _, err := c.Write(proxyHeader(t, 2, carried, e.addr("rw"))[:10]); err != nil {
		t.Fatal(err)
	}
	wireFatal(t, c, fe, "08P01", "incomplete PROXY protocol header: timed out")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refused after %s, want about timeouts.startup (500ms)", took)
	}
	rec := e.ended(c.LocalAddr().String())
	if rec.Cause != "startup_timeout" || !strings.Contains(rec.Error, "no complete PROXY protocol header within timeouts.startup (500ms)") {
		t.Errorf("end record %+v", rec)
	}
}

// TestProxyProtocolGarbageHeader: a header with the signature and garbage after it is refused
// with a clear reason; so is a v2 header with an unknown command.
func TestProxyProtocolGarbageHeader(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "proxy_protocol: {trusted: [127.0.0.1/32]}", ""))
	badV2 := proxyHeader(t, 2, carried, e.addr("rw"))
	badV2[12] = 0x2f // version 2, command 15
	for name, hdr := range map[string][]byte{"v1": []byte("PROXY TCP4 not-an-address 10.0.0.1 4242 6432\r\n"), "v2": badV2} {
		t.Run(name, func(t *testing.T) {
			c, fe := wireDial(t, e, "rw")
			if _, err := c.Write(append(hdr, wireStartup(t, pgproto3.ProtocolVersion30)...)); err != nil {
				t.Fatal(err)
			}
			wireFatal(t, c, fe, "08P01", "invalid PROXY protocol header")
			rec := e.ended(c.LocalAddr().String())
			if rec.Cause != "protocol_error" || !strings.Contains(rec.Error, "malformed PROXY protocol header") {
				t.Errorf("end record %+v", rec)
			}
		})
	}
}

// TestProxyProtocolBeforeTLS: on a TLS terminate route the header comes first, then the
// SSLRequest and the handshake; the session is encrypted and shows the carried client.
func TestProxyProtocolBeforeTLS(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate("require: true")+"proxy_protocol: {trusted: [127.0.0.1/32]}", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var local string
	c, err := connectProxied(ctx, f.tlsDSN(e, "rw", "verify-ca"), proxyHeader(t, 2, carried, e.addr("rw")), &local)
	if err != nil {
		t.Fatalf("TLS after a v2 header: %v", err)
	}
	defer closeConn(c)
	if got := queryString(t, c, "SELECT 'encrypted'"); got != "encrypted" {
		t.Fatalf("query: %q", got)
	}
	if s := listedClient(t, e, carried); !strings.HasPrefix(s.TLS, "TLS") {
		t.Errorf("session view %+v, want TLS", s)
	}
}

// TestProxyProtocolReload: a reload that turns the PROXY protocol on applies to new sessions:
// a plain client is then refused and a proxied one shows its carried address.
func TestProxyProtocolReload(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxyFile(t, oneServerConfig(p, "", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var local string
	before, err := connectProxied(ctx, e.dsn("rw"), nil, &local)
	if err != nil {
		t.Fatalf("plain client before the reload: %v", err)
	}
	defer closeConn(before)

	e.reload(t, oneServerConfig(p, "proxy_protocol: {trusted: [127.0.0.1/32]}", ""))
	if c, err := connectProxied(ctx, e.dsn("rw"), nil, &local); err == nil {
		closeConn(c)
		t.Fatal("a plain client was served after the reload turned the PROXY protocol on")
	} else if sqlstate(err) != "28000" {
		t.Fatalf("plain client after the reload: %v, want 28000", err)
	}
	c, err := connectProxied(ctx, e.dsn("rw"), proxyHeader(t, 2, carried, e.addr("rw")), &local)
	if err != nil {
		t.Fatalf("proxied client after the reload: %v", err)
	}
	defer closeConn(c)
	listedClient(t, e.env, carried)
	if got := queryString(t, before, "SELECT 'kept'"); got != "kept" {
		t.Errorf("the session opened before the reload: %q", got)
	}
}

// TestProxyProtocolPassthrough: on a TLS passthrough route pgfront reads the header itself and
// forwards only what follows: the client completes TLS with the server, whose certificate it
// sees, and the session shows the carried client.
func TestProxyProtocolPassthrough(t *testing.T) {
	f := newTLSFixture(t)
	files := f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}})
	p := pgtest.NewPrimaryTLS(t, files, nil)
	e := startProxy(t, oneServerConfig(p, "tls: {mode: passthrough}\nproxy_protocol: {trusted: [127.0.0.1/32]}", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var local string
	c, err := connectProxied(ctx, f.tlsDSN(e, "rw", "verify-full"), proxyHeader(t, 2, carried, e.addr("rw")), &local)
	if err != nil {
		t.Fatalf("passthrough TLS after a v2 header: %v", err)
	}
	if got := peerCert(t, c); got.Subject.CommonName != "postgres-server" {
		t.Fatalf("client saw %q, want the server's certificate", got.Subject.CommonName)
	}
	if s := listedClient(t, e, carried); s.TLS != "passthrough" {
		t.Errorf("session view %+v", s)
	}
	closeConn(c)
	if rec := e.ended(carried); rec.TLS != "passthrough" {
		t.Errorf("end record %+v", rec)
	}
}
