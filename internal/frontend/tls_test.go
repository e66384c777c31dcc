package frontend

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// tlsRoute makes route rw terminate TLS with a certificate from a new CA (clientCA: also
// require client certificates from another one); it returns the CA's pool.
func tlsRoute(t *testing.T, clientCA bool) (roots *x509.CertPool, adjust func(*Route, *admission.Controller)) {
	t.Helper()
	dir := t.TempDir()
	ca, err := certtest.NewCA("frontend test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certtest.LeafOptions{CommonName: "pgfront", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(dir, "pgfront")
	if err != nil {
		t.Fatal(err)
	}
	opts := tlsconf.ServerOptions{CertFile: certFile, KeyFile: keyFile}
	if clientCA {
		cca, err := certtest.NewCA("frontend test client CA")
		if err != nil {
			t.Fatal(err)
		}
		if opts.ClientCAFile, err = cca.WriteFile(dir, "client-ca"); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := tlsconf.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Pool(), func(r *Route, _ *admission.Controller) {
		r.TLS = RouteTLS{Mode: TLSTerminate, Config: srv.Config()}
	}
}

// sslRequest asks for TLS and reads pgfront's 'S'.
func sslRequest(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v", b[:], err)
	}
}

// TestTLSHandshakeResults: each way a client's handshake ends is counted by result, and the
// session line says it in an operator's words.
func TestTLSHandshakeResults(t *testing.T) {
	roots, terminate := tlsRoute(t, false)
	other, _ := tlsRoute(t, false)
	_, mtls := tlsRoute(t, true)
	for _, tc := range []struct {
		name   string
		adjust func(*Route, *admission.Controller)
		client func(t *testing.T, c net.Conn)
		result string
		err    string // in the end record's Err
	}{
		{"ok", terminate, handshake(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}), TLSResultOK, ""},
		{"client rejects the certificate (TLS 1.3)", terminate, handshake(&tls.Config{RootCAs: other, ServerName: "127.0.0.1"}),
			TLSResultClientRejectedCertificate, "the client rejected pgfront's certificate (TLS alert 42: bad certificate)"},
		{"client rejects the certificate (TLS 1.2)", terminate,
			handshake(&tls.Config{RootCAs: other, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12}),
			TLSResultClientRejectedCertificate, "the client rejected pgfront's certificate (TLS alert"},
		{"no common ALPN protocol", terminate, handshake(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}}),
			TLSResultNoCommonProtocol, "no TLS version, cipher suite or ALPN protocol in common with the client"},
		{"no common cipher suite", terminate, handshake(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}),
			TLSResultNoCommonProtocol, "no TLS version, cipher suite or ALPN protocol in common with the client"},
		{"not TLS", terminate, func(t *testing.T, c net.Conn) {
			sslRequest(t, c)
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			_, _ = io.ReadAll(c)
		}, TLSResultNotTLS, "the client asked for TLS, then did not send a TLS handshake"},
		{"client closes", terminate, func(t *testing.T, c net.Conn) {
			sslRequest(t, c)
			_ = c.(*net.TCPConn).CloseWrite()
			_, _ = io.ReadAll(c)
		}, TLSResultClientClosed, "the client closed the connection during the TLS handshake"},
		{"no client certificate (TLS 1.2)", mtls,
			handshake(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}),
			TLSResultBadClientCertificate, "pgfront rejected the client's certificate"},
		{"no client certificate (TLS 1.3)", mtls, handshake(&tls.Config{InsecureSkipVerify: true}),
			TLSResultBadClientCertificate, "pgfront rejected the client's certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := fakeServer(t)
			l := newLoggedFrontend(t, ln.Addr().String(), tc.adjust)
			c := l.dial(t)
			tc.client(t, c)
			c.Close()
			rec := l.rec.waitEnded(t, c.LocalAddr().String())
			l.rec.mu.Lock()
			results := strings.Join(l.rec.tls, ",")
			l.rec.mu.Unlock()
			if results != "rw "+tc.result {
				t.Fatalf("handshakes counted %q, want %q", results, "rw "+tc.result)
			}
			if tc.result == TLSResultOK {
				if rec.TLSResult != "" || !strings.HasPrefix(rec.TLS, "TLS") {
					t.Fatalf("end record %+v", rec)
				}
				return
			}
			if rec.Cause != relay.CauseTLSError || rec.TLSResult != tc.result || !strings.Contains(rec.Err, tc.err) {
				t.Fatalf("end record %+v, want tls_error, %s and %q", rec, tc.result, tc.err)
			}
			if line := l.lines(c.LocalAddr().String()); len(line) != 1 || !strings.Contains(line[0], "level=WARN") ||
				!strings.Contains(line[0], " tls_result="+tc.result+" ") {
				t.Fatalf("lines:\n%s", strings.Join(line, "\n"))
			}
		})
	}
}

// handshake is a client that asks for TLS and runs a handshake with cfg (its error ignored:
// the test looks at what pgfront made of it).
func handshake(cfg *tls.Config) func(t *testing.T, c net.Conn) {
	return func(t *testing.T, c net.Conn) {
		sslRequest(t, c)
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err == nil {
			_ = tc.Close()
		}
		_, _ = io.ReadAll(c)
	}
}

// TestAlertTracker: a plaintext fatal alert is found across any split of the records, and
// only a plaintext fatal one: not a warning, not an encrypted record, not after stop.
func TestAlertTracker(t *testing.T) {
	handshakeRecord := []byte{22, 3, 3, 0, 4, 1, 0, 0, 0}
	alert := []byte{21, 3, 3, 0, 2, 2, alertUnknownCA}
	stream := append(append([]byte{}, handshakeRecord...), alert...)
	for split := range len(stream) + 1 {
		tr := alertTracker{alert: -1}
		tr.feed(stream[:split])
		tr.feed(stream[split:])
		if tr.alert != alertUnknownCA {
			t.Fatalf("split at %d: alert %d", split, tr.alert)
		}
	}
	for name, records := range map[string][]byte{
		"warning":                    {21, 3, 3, 0, 2, 1, 0},
		"encrypted (TLS 1.2)":        {21, 3, 3, 0, 26, 2, 48, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24},
		"application data (TLS 1.3)": {23, 3, 3, 0, 2, 2, 48},
	} {
		tr := alertTracker{alert: -1}
		tr.feed(records)
		if tr.alert != -1 {
			t.Errorf("%s: alert %d, want none", name, tr.alert)
		}
	}
	tr := alertTracker{alert: -1, off: true}
	tr.feed(alert)
	if tr.alert != -1 {
		t.Errorf("stopped tracker found alert %d", tr.alert)
	}
}

// TestClassifyPlaintextAlertAfterKeyChange: OpenSSL (psql, libpq) rejecting pgfront's
// certificate in TLS 1.3 sends its alert in plaintext after pgfront has switched keys, and
// crypto/tls reports a record it could not decrypt; the alert seen on the wire says what
// happened.
func TestClassifyPlaintextAlertAfterKeyChange(t *testing.T) {
	w := newAlertWatch(nil)
	w.in.feed([]byte{21, 3, 3, 0, 2, 2, alertUnknownCA})
	result, err := handshakeFailure{err: errors.New("local error: tls: bad record MAC"), watch: w, startup: time.Second}.classify()
	if result != TLSResultClientRejectedCertificate ||
		!strings.Contains(err.Error(), "the client rejected pgfront's certificate (TLS alert 48: unknown certificate authority)") {
		t.Fatalf("%s: %v", result, err)
	}
}
