package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/certtest"
)

// peerScript is what a scripted PostgreSQL server does with one connection.
type peerScript func(conn net.Conn) error

// startPeer accepts one connection on loopback and runs script on it; the channel gets the
// script's error once it has returned and closed the connection.
func startPeer(t *testing.T, script peerScript) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go runPeer(ln, script, ch)
	return ln.Addr().String(), ch
}

func runPeer(ln net.Listener, script peerScript, done chan<- error) {
	conn, err := ln.Accept()
	if err != nil {
		done <- err
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	done <- script(conn)
}

// readSSLRequest reads 8 bytes and checks they are an SSLRequest.
func readSSLRequest(conn net.Conn) error {
	want, err := (&pgproto3.SSLRequest{}).Encode(nil)
	if err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("reading SSLRequest: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("got %x, want an SSLRequest %x", got, want)
	}
	return nil
}

// answerTLS answers 'S' and serves TLS with cfg, then a ping-pong.
func answerTLS(cfg *tls.Config) peerScript {
	return func(conn net.Conn) error {
		if err := readSSLRequest(conn); err != nil {
			return err
		}
		if _, err := conn.Write([]byte{'S'}); err != nil {
			return err
		}
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		return pong(tc)
	}
}

// answer answers the SSLRequest with raw bytes, then does a plain ping-pong.
func answer(b ...byte) peerScript {
	return func(conn net.Conn) error {
		if err := readSSLRequest(conn); err != nil {
			return err
		}
		if _, err := conn.Write(b); err != nil {
			return err
		}
		return pong(conn)
	}
}

func pong(conn net.Conn) error {
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("got %q, want ping", buf)
	}
	_, err := conn.Write([]byte("pong"))
	return err
}

func ping(conn net.Conn) error {
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "pong" {
		return fmt.Errorf("got %q, want pong", buf)
	}
	return nil
}

func newClient(t *testing.T, o ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// negotiate dials addr and negotiates as name:port (name "" = the dialled host); the raw
// connection is closed when the test ends.
func negotiate(t *testing.T, ctx context.Context, c *Client, addr, name string) (raw, conn net.Conn, err error) {
	t.Helper()
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if name != "" {
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(name, port)
	}
	conn, err = c.Negotiate(ctx, raw, addr)
	if err == nil && conn == nil {
		t.Fatal("Negotiate returned neither a connection nor an error")
	}
	return raw, conn, err
}

// tlsFixture is a CA with its file, and server certificates of several kinds.
type tlsFixture struct {
	dir                   string
	ca, otherCA           *certtest.CA
	caFile                string
	good, otherHost       *certtest.Leaf // for 127.0.0.1; for other.example only
	expired, foreign      *certtest.Leaf // expired; from otherCA
	client, foreignClient *certtest.Leaf // client certificates from ca and otherCA
}

func newFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir(), ca: newCA(t, "CA"), otherCA: newCA(t, "other CA")}
	var err error
	if f.caFile, err = f.ca.WriteFile(f.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	f.good = serverLeaf(t, f.ca, "good")
	f.otherHost = issue(t, f.ca, certtest.LeafOptions{CommonName: "other", Hosts: []string{"other.example"}})
	f.expired = issue(t, f.ca, certtest.LeafOptions{CommonName: "expired", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	f.foreign = serverLeaf(t, f.otherCA, "foreign")
	f.client = issue(t, f.ca, certtest.LeafOptions{CommonName: "pgfront", Client: true})
	f.foreignClient = issue(t, f.otherCA, certtest.LeafOptions{CommonName: "mallory", Client: true})
	return f
}

func serverConfig(leaf *certtest.Leaf) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{ALPN}}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestNegotiateTLS(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		mode   string
		server *certtest.Leaf
		name   string // the host Negotiate is told ("" = 127.0.0.1)
	}{
		{ModeVerifyFull, f.good, ""},
		{ModeVerifyFull, f.otherHost, "other.example"},
		{ModeVerifyCA, f.otherHost, ""}, // the host is not checked
		{ModeRequire, f.foreign, ""},    // nothing is checked
		{ModeRequire, f.expired, "other.example"},
		{ModePrefer, f.foreign, ""},
	} {
		t.Run(tc.mode+"/"+tc.server.Cert.Subject.CommonName, func(t *testing.T) {
			c := newClient(t, ClientOptions{Mode: tc.mode, CAFile: f.caFile})
			addr, done := startPeer(t, answerTLS(serverConfig(tc.server)))
			raw, conn, err := negotiate(t, testContext(t), c, addr, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			tc, ok := conn.(*tls.Conn)
			if !ok || tc.NetConn() != raw {
				t.Fatalf("got %T, want a *tls.Conn over the connection", conn)
			}
			if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
				t.Errorf("ALPN %q, want %q", p, ALPN)
			}
			if err := ping(conn); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Errorf("peer: %v", err)
			}
		})
	}
}

func TestNegotiateRejectsCertificates(t *testing.T) {
	f := newFixture(t)
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var invalidErr x509.CertificateInvalidError
	for _, tc := range []struct {
		mode   string
		server *certtest.Leaf
		name   string // the host Negotiate is told ("" = 127.0.0.1)
		target any
		want   string // with ADDR for the address
	}{
		{ModeVerifyFull, f.otherHost, "db.example", &hostErr,
			"verifying the certificate of server db.example:PORT (verify-full): x509: certificate is valid for other.example, not db.example"},
		{ModeVerifyFull, f.otherHost, "", &hostErr,
			"verifying the certificate of server ADDR (verify-full): x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
		{ModeVerifyFull, f.expired, "", &invalidErr, "verifying the certificate of server ADDR (verify-full): x509: certificate has expired"},
		{ModeVerifyFull, f.foreign, "", &authErr, "verifying the certificate of server ADDR (verify-full): x509: certificate signed by unknown authority"},
		{ModeVerifyCA, f.foreign, "", &authErr, "verifying the certificate of server ADDR (verify-ca): x509: certificate signed by unknown authority"},
		{ModeVerifyCA, f.expired, "", &invalidErr, "verifying the certificate of server ADDR (verify-ca): x509: certificate has expired"},
	} {
		t.Run(tc.mode+"/"+tc.server.Cert.Subject.CommonName+"/"+tc.name, func(t *testing.T) {
			c := newClient(t, ClientOptions{Mode: tc.mode, CAFile: f.caFile})
			addr, done := startPeer(t, answerTLS(serverConfig(tc.server)))
			_, _, err := negotiate(t, testContext(t), c, addr, tc.name)
			if err == nil {
				t.Fatal("accepted")
			}
			_, port, _ := net.SplitHostPort(addr)
			want := strings.NewReplacer("ADDR", addr, "PORT", port).Replace(tc.want)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q\nwant prefix %q", err, want)
			}
			if !errors.As(err, tc.target) {
				t.Errorf("error %v is not a %T", err, tc.target)
			}
			if err := <-done; err == nil {
				t.Error("the peer's handshake succeeded")
			}
		})
	}
}

func TestNegotiatePlain(t *testing.T) {
	f := newFixture(t)
	t.Run("prefer falls back on N", func(t *testing.T) {
		addr, done := startPeer(t, answer('N'))
		raw, conn, err := negotiate(t, testContext(t), newClient(t, ClientOptions{Mode: ModePrefer}), addr, "")
		if err != nil {
			t.Fatal(err)
		}
		if conn != raw {
			t.Fatalf("got %T, want the connection itself", conn)
		}
		if err := ping(conn); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("peer: %v", err)
		}
	})
	for _, mode := range []string{ModeRequire, ModeVerifyCA, ModeVerifyFull} {
		t.Run(mode+" fails on N", func(t *testing.T) {
			addr, done := startPeer(t, answer('N'))
			raw, _, err := negotiate(t, testContext(t), newClient(t, ClientOptions{Mode: mode, CAFile: f.caFile}), addr, "")
			want := fmt.Sprintf("server at %s does not support SSL, but server_tls is %s", addr, mode)
			if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, ErrServerNoSSL) {
				t.Errorf("got %v, want %q (ErrServerNoSSL)", err, want)
			}
			raw.Close()
			<-done
		})
	}
	t.Run("disable sends no SSLRequest", func(t *testing.T) {
		addr, done := startPeer(t, pong) // expects "ping" as the very first bytes
		raw, conn, err := negotiate(t, testContext(t), newClient(t, ClientOptions{Mode: ModeDisable, CAFile: f.caFile}), addr, "")
		if err != nil || conn != raw {
			t.Fatalf("disable: %T, %v; want the connection itself", conn, err)
		}
		if err := ping(conn); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("peer: %v", err)
		}
	})
}

func TestNegotiateBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
		want   string
	}{
		{"bytes injected after S", []byte("Sinjected plaintext"), "sent 18 bytes after agreeing to SSL"},
		{"error answer", []byte("E\x00\x00\x00\x08abcd"), "answered SSLRequest with an error message"},
		{"unknown answer", []byte("X"), `answered SSLRequest with 'X'`},
	} {
		for _, mode := range []string{ModePrefer, ModeRequire} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				addr, done := startPeer(t, answer(tc.answer...))
				raw, _, err := negotiate(t, testContext(t), newClient(t, ClientOptions{Mode: mode}), addr, "")
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want %q", err, tc.want)
				}
				if strings.HasPrefix(tc.name, "bytes") && !errors.Is(err, ErrDataAfterSSLAnswer) {
					t.Errorf("%v is not ErrDataAfterSSLAnswer", err)
				}
				raw.Close()
				<-done
			})
		}
	}
}

func TestNegotiateClientCertificate(t *testing.T) {
	f := newFixture(t)
	certFile, keyFile, err := f.client.WriteFiles(f.dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := f.foreignClient.WriteFiles(f.dir, "foreign")
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(f.good)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = f.ca.Pool()
	peerSaw := make(chan string, 1)
	script := func(conn net.Conn) error {
		if err := readSSLRequest(conn); err != nil {
			return err
		}
		if _, err := conn.Write([]byte{'S'}); err != nil {
			return err
		}
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		peerSaw <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		return pong(tc)
	}

	c := newClient(t, ClientOptions{Mode: ModeVerifyFull, CAFile: f.caFile, CertFile: certFile, KeyFile: keyFile})
	addr, done := startPeer(t, script)
	_, conn, err := negotiate(t, testContext(t), c, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(conn); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("peer: %v", err)
	}
	if cn := <-peerSaw; cn != "pgfront" {
		t.Errorf("peer saw client %q", cn)
	}

	for name, o := range map[string]ClientOptions{
		"without a certificate":      {Mode: ModeVerifyFull, CAFile: f.caFile},
		"with a foreign certificate": {Mode: ModeRequire, CertFile: foreignCert, KeyFile: foreignKey},
	} {
		addr, done := startPeer(t, script)
		raw, conn, err := negotiate(t, testContext(t), newClient(t, o), addr, "")
		if err == nil {
			err = ping(conn) // with TLS 1.3 the server's refusal arrives after the handshake
		}
		raw.Close()
		if err == nil {
			t.Errorf("%s: the server let the client in", name)
		}
		if err := <-done; err == nil {
			t.Errorf("%s: the server's handshake succeeded", name)
		}
	}
}

func TestNegotiateContext(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, ClientOptions{Mode: ModeVerifyFull, CAFile: f.caFile})

	t.Run("deadline", func(t *testing.T) {
		addr, done := startPeer(t, readSSLRequestAndWait)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		raw, _, err := negotiate(t, ctx, c, addr, "")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("returned after %v", d)
		}
		raw.Close()
		<-done
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addr, done := startPeer(t, func(conn net.Conn) error {
			cancel() // once the request is in: Negotiate is waiting for the answer
			return readSSLRequestAndWait(conn)
		})
		raw, _, err := negotiate(t, ctx, c, addr, "")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want Canceled", err)
		}
		raw.Close()
		<-done
	})
	t.Run("deadline cleared after success", func(t *testing.T) {
		addr, done := startPeer(t, answerTLS(serverConfig(f.good)))
		deadline := time.Now().Add(300 * time.Millisecond)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		_, conn, err := negotiate(t, ctx, c, addr, "")
		if err != nil {
			t.Fatal(err)
		}
		<-ctx.Done() // past the deadline, and cancelled
		if err := ping(conn); err != nil {
			t.Fatalf("the connection after the context ended: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("peer: %v", err)
		}
	})
}

// readSSLRequestAndWait reads the request and never answers; it returns when the client
// closes.
func readSSLRequestAndWait(conn net.Conn) error {
	if err := readSSLRequest(conn); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, conn)
	return err
}

func TestNewClient(t *testing.T) {
	f := newFixture(t)
	certFile, keyFile, err := f.client.WriteFiles(f.dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(f.dir, "missing.crt")
	for _, tc := range []struct {
		name string
		o    ClientOptions
		want string
	}{
		{"empty mode", ClientOptions{}, `server TLS mode "" is not one of`},
		{"libpq allow", ClientOptions{Mode: "allow"}, `"allow" is not one of`},
		{"verify-full without CA", ClientOptions{Mode: ModeVerifyFull}, "needs a CA file"},
		{"verify-ca without CA", ClientOptions{Mode: ModeVerifyCA}, "needs a CA file"},
		{"missing CA file", ClientOptions{Mode: ModeVerifyCA, CAFile: missing}, missing},
		{"CA file without certificates", ClientOptions{Mode: ModeVerifyCA, CAFile: keyFile}, keyFile},
		{"certificate without key", ClientOptions{Mode: ModeRequire, CertFile: certFile}, "both a certificate file and a key file"},
		{"key without certificate", ClientOptions{Mode: ModeRequire, KeyFile: keyFile}, "both a certificate file and a key file"},
		{"missing key file", ClientOptions{Mode: ModeRequire, CertFile: certFile, KeyFile: missing}, missing},
	} {
		if _, err := NewClient(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// require and prefer do not need (nor read) a CA file.
	for _, mode := range []string{ModeDisable, ModePrefer, ModeRequire} {
		c, err := NewClient(ClientOptions{Mode: mode, CAFile: missing})
		if err != nil || c.Mode() != mode {
			t.Errorf("%s: %v", mode, err)
		}
	}
}

func TestConnParams(t *testing.T) {
	f := newFixture(t)
	certFile, keyFile, err := f.client.WriteFiles(f.dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    ClientOptions
		want map[string]string
	}{
		{ClientOptions{Mode: ModeDisable}, map[string]string{"sslmode": "disable", "channel_binding": "prefer"}},
		// No sslrootcert for require: libpq and pgconn would verify with it.
		{ClientOptions{Mode: ModeRequire, CAFile: f.caFile}, map[string]string{"sslmode": "require", "channel_binding": "prefer"}},
		{ClientOptions{Mode: ModeVerifyCA, CAFile: f.caFile},
			map[string]string{"sslmode": "verify-ca", "sslrootcert": f.caFile, "channel_binding": "prefer"}},
		{ClientOptions{Mode: ModeVerifyFull, CAFile: f.caFile, CertFile: certFile, KeyFile: keyFile},
			map[string]string{"sslmode": "verify-full", "sslrootcert": f.caFile, "sslcert": certFile, "sslkey": keyFile, "channel_binding": "prefer"}},
		{ClientOptions{Mode: ModePrefer, CertFile: certFile, KeyFile: keyFile},
			map[string]string{"sslmode": "prefer", "sslcert": certFile, "sslkey": keyFile, "channel_binding": "prefer"}},
	} {
		if got := newClient(t, tc.o).ConnParams(); !maps.Equal(got, tc.want) {
			t.Errorf("%+v: ConnParams() = %v, want %v", tc.o, got, tc.want)
		}
	}
}

// FuzzNegotiateAnswer feeds arbitrary server answers to Negotiate over net.Pipe (no socket,
// so no pending-bytes check): it must not panic or hang, must never succeed under require
// (no real TLS server), and under prefer may only return the plain connection after 'N'.
func FuzzNegotiateAnswer(f *testing.F) {
	for _, seed := range []string{"S", "N", "Nrest", "E\x00\x00\x00\x08abcd", "", "X", "Sinjected",
		"S\x16\x03\x01\x00\x05hello", "S\x15\x03\x03\x00\x02\x02\x28"} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	c := map[bool]*Client{}
	for prefer, mode := range map[bool]string{true: ModePrefer, false: ModeRequire} {
		cl, err := NewClient(ClientOptions{Mode: mode})
		if err != nil {
			f.Fatal(err)
		}
		c[prefer] = cl
	}
	f.Fuzz(func(t *testing.T, data []byte, prefer bool) {
		client, server := net.Pipe()
		defer client.Close()
		peerDone := make(chan struct{})
		go fuzzPeer(server, data, peerDone)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := c[prefer].Negotiate(ctx, client, "127.0.0.1:5432")
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("Negotiate hung on %q: %v", data, err)
		case err == nil && !prefer:
			t.Fatalf("require succeeded on %q", data)
		case err == nil && (conn != client || len(data) == 0 || data[0] != 'N'):
			t.Fatalf("prefer returned %T on %q", conn, data)
		case err != nil && conn != nil:
			t.Fatalf("a connection with an error: %v", err)
		}
		client.Close()
		<-peerDone
	})
}

// fuzzPeer reads the SSLRequest, then writes data and closes while draining what the
// client sends (net.Pipe is unbuffered: a client writing its ClientHello would block).
func fuzzPeer(conn net.Conn, data []byte, done chan<- struct{}) {
	defer close(done)
	defer conn.Close()
	if err := readSSLRequest(conn); err != nil {
		return
	}
	drained := make(chan struct{})
	go drain(conn, drained)
	_, _ = conn.Write(data)
	conn.Close()
	<-drained
}

func drain(conn net.Conn, done chan<- struct{}) {
	defer close(done)
	_, _ = io.Copy(io.Discard, conn)
}
