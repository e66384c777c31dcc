package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/logtest"
)

func newCA(t testing.TB, name string) *certtest.CA {
	t.Helper()
	ca, err := certtest.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *certtest.CA, o certtest.LeafOptions) *certtest.Leaf {
	t.Helper()
	leaf, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func serverLeaf(t testing.TB, ca *certtest.CA, cn string) *certtest.Leaf {
	return issue(t, ca, certtest.LeafOptions{CommonName: cn, Hosts: []string{"127.0.0.1", "localhost"}})
}

// replaceFile rewrites path and moves its mtime a second past the previous one, so the
// change shows even within the file system's timestamp granularity.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	mtime := time.Now()
	if fi, err := os.Stat(path); err == nil {
		mtime = fi.ModTime().Add(time.Second)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects log records for assertions; safe for concurrent use.
type logBuffer = logtest.Buffer

func count(b *logBuffer, substr string) int { return strings.Count(b.String(), substr) }

func newLogger(b *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// handshakeResult is what the server side of one handshake saw.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// handshake runs one TLS handshake over loopback TCP between a server with serverCfg and a
// client with clientCfg, and returns the server's result and the client's error. With TLS
// 1.3 a client's handshake can succeed although the server then rejects its certificate:
// the server's error is the one to check for client authentication.
func handshake(t testing.TB, serverCfg, clientCfg *tls.Config) (handshakeResult, tls.ConnectionState, error) {
	t.Helper()
	res, cs, clientErr, setupErr := tryHandshake(serverCfg, clientCfg)
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return res, cs, clientErr
}

// tryHandshake is handshake for any goroutine: setupErr reports a loopback failure.
func tryHandshake(serverCfg, clientCfg *tls.Config) (_ handshakeResult, _ tls.ConnectionState, clientErr, setupErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return handshakeResult{}, tls.ConnectionState{}, nil, err
	}
	defer ln.Close()
	result := make(chan handshakeResult, 1)
	go serveOneHandshake(ln, serverCfg, result)
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-result
		return handshakeResult{}, tls.ConnectionState{}, nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return handshakeResult{}, tls.ConnectionState{}, nil, err
	}
	tc := tls.Client(conn, clientCfg)
	clientErr = tc.Handshake()
	if clientErr != nil {
		conn.Close() // the server may be waiting for the next flight
	}
	res := <-result
	return res, tc.ConnectionState(), clientErr, nil
}

func serveOneHandshake(ln net.Listener, cfg *tls.Config, result chan<- handshakeResult) {
	conn, err := ln.Accept()
	if err != nil {
		result <- handshakeResult{err: err}
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Server(conn, cfg)
	err = tc.Handshake()
	result <- handshakeResult{state: tc.ConnectionState(), err: err}
}

// servedLeaf does a handshake with s and returns the certificate the client got.
func servedLeaf(t testing.TB, s *Server, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	res, cs, err := handshake(t, s.Config(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil || res.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, res.err)
	}
	return cs.PeerCertificates[0]
}

func mustServe(t testing.TB, s *Server, roots *x509.CertPool, want *certtest.Leaf) {
	t.Helper()
	if got := servedLeaf(t, s, roots); !got.Equal(want.Cert) {
		t.Fatalf("served %s, want %s", got.Subject.CommonName, want.Cert.Subject.CommonName)
	}
	if !s.Leaf().Equal(want.Cert) {
		t.Fatalf("Leaf() is %s, want %s", s.Leaf().Subject.CommonName, want.Cert.Subject.CommonName)
	}
}

func TestServerReloadsChangedFiles(t *testing.T) {
	ca := newCA(t, "CA")
	dir := t.TempDir()
	one, two, three := serverLeaf(t, ca, "one"), serverLeaf(t, ca, "two"), serverLeaf(t, ca, "three")
	certFile, keyFile, err := one.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	s, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile, CheckEvery: -1, Logger: newLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	mustServe(t, s, ca.Pool(), one)

	// New files: the next handshake serves them.
	replaceFile(t, certFile, two.CertPEM)
	replaceFile(t, keyFile, two.KeyPEM)
	mustServe(t, s, ca.Pool(), two)
	if n := count(&logs, "TLS certificate reloaded"); n != 1 {
		t.Errorf("%d reload lines, want 1", n)
	}

	// A broken key keeps the old certificate; the failure is logged once.
	replaceFile(t, keyFile, []byte("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"))
	mustServe(t, s, ca.Pool(), two) // the handshake tried the new files
	for range 2 {
		err := s.Reload()
		if err == nil || !strings.Contains(err.Error(), keyFile) {
			t.Fatalf("Reload with a broken key: %v, want an error naming %s", err, keyFile)
		}
	}
	mustServe(t, s, ca.Pool(), two)
	if n := count(&logs, "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one failure, want 1:\n%s", n, logs.String())
	}

	// A key that does not match the certificate: another failure, logged too.
	replaceFile(t, keyFile, one.KeyPEM)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "does not match") || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("Reload with another certificate's key: %v", err)
	}
	// A broken certificate file is named as such.
	replaceFile(t, keyFile, two.KeyPEM)
	replaceFile(t, certFile, []byte("not PEM"))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "certificate file "+certFile) {
		t.Errorf("Reload with a broken certificate: %v", err)
	}
	mustServe(t, s, ca.Pool(), two)
	if n := count(&logs, "level=ERROR"); n != 3 {
		t.Errorf("%d error lines for three distinct failures, want 3", n)
	}

	// Fixed: served at the next handshake, and Reload agrees.
	replaceFile(t, certFile, three.CertPEM)
	replaceFile(t, keyFile, three.KeyPEM)
	mustServe(t, s, ca.Pool(), three)
	if err := s.Reload(); err != nil {
		t.Errorf("Reload of good files: %v", err)
	}
}

func TestServerChecksAtMostEvery(t *testing.T) {
	ca := newCA(t, "CA")
	dir := t.TempDir()
	one, two := serverLeaf(t, ca, "one"), serverLeaf(t, ca, "two")
	certFile, keyFile, err := one.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile, CheckEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, certFile, two.CertPEM)
	replaceFile(t, keyFile, two.KeyPEM)
	mustServe(t, s, ca.Pool(), one) // no check due yet
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	mustServe(t, s, ca.Pool(), two)

	d, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if d.checkEvery != 5*time.Second {
		t.Errorf("default CheckEvery = %v, want 5s", d.checkEvery)
	}
}

func TestServerClientCertificates(t *testing.T) {
	ca, otherCA := newCA(t, "client CA"), newCA(t, "other CA")
	dir := t.TempDir()
	certFile, keyFile, err := serverLeaf(t, ca, "server").WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "clients")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, CheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	alice := issue(t, ca, certtest.LeafOptions{CommonName: "alice", Client: true})
	mallory := issue(t, otherCA, certtest.LeafOptions{CommonName: "mallory", Client: true})
	client := func(cert *certtest.Leaf) *tls.Config {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{cert.TLS}
		}
		return cfg
	}
	accepts := func(cert *certtest.Leaf) bool {
		t.Helper()
		res, _, _ := handshake(t, s.Config(), client(cert))
		if res.err != nil {
			return false
		}
		if got := res.state.PeerCertificates[0].Subject.CommonName; got != cert.Cert.Subject.CommonName {
			t.Fatalf("server saw client %q", got)
		}
		return true
	}
	res, _, _ := handshake(t, s.Config(), client(nil))
	if res.err == nil {
		t.Error("a client without a certificate was accepted")
	}
	if !accepts(alice) {
		t.Error("a client with a certificate from the client CA was refused")
	}
	if accepts(mallory) {
		t.Error("a client with a certificate from another CA was accepted")
	}

	// The client CA file is reloaded with the certificate.
	replaceFile(t, caFile, otherCA.CertPEM)
	if !accepts(mallory) {
		t.Error("after the CA file changed: the new CA's client was refused")
	}
	if accepts(alice) {
		t.Error("after the CA file changed: the old CA's client was accepted")
	}
}

func TestServerConfig(t *testing.T) {
	ca := newCA(t, "CA")
	certFile, keyFile, err := serverLeaf(t, ca, "server").WriteFiles(t.TempDir(), "server")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Config()
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPN || ALPN != "postgresql" {
		t.Errorf("MinVersion %x, NextProtos %q", cfg.MinVersion, cfg.NextProtos)
	}
	if cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("ClientAuth = %v without a client CA file", cfg.ClientAuth)
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.Contains(name, "ECDHE") || !(strings.Contains(name, "GCM") || strings.Contains(name, "CHACHA20")) {
			t.Errorf("cipher suite %s is not ECDHE with AEAD", name)
		}
	}

	roots := ca.Pool()
	res, cs, err := handshake(t, s.Config(), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{ALPN}})
	if err != nil || res.err != nil {
		t.Fatalf("handshake: %v / %v", err, res.err)
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != ALPN {
		t.Errorf("version %s, ALPN %q; want TLS 1.3, %q", tls.VersionName(cs.Version), cs.NegotiatedProtocol, ALPN)
	}
	// TLS 1.2 with an AEAD suite works; with CBC only, or below 1.2, it does not.
	tls12 := func(suites ...uint16) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12, CipherSuites: suites}
	}
	if res, cs, err := handshake(t, s.Config(), tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)); err != nil || res.err != nil || cs.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 with GCM: %v / %v, version %x", err, res.err, cs.Version)
	}
	if res, _, _ := handshake(t, s.Config(), tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA)); res.err == nil {
		t.Error("TLS 1.2 with a CBC suite only was accepted")
	}
	if res, _, _ := handshake(t, s.Config(), &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); res.err == nil {
		t.Error("TLS 1.1 was accepted")
	}
}

func TestNewServerErrors(t *testing.T) {
	ca := newCA(t, "CA")
	dir := t.TempDir()
	leaf, other := serverLeaf(t, ca, "server"), serverLeaf(t, ca, "other")
	certFile, keyFile, err := leaf.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := other.WriteFiles(dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	emptyCA := filepath.Join(dir, "empty.crt")
	if err := os.WriteFile(emptyCA, []byte("no certificates here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	for _, tc := range []struct {
		name string
		o    ServerOptions
		want string
	}{
		{"no files", ServerOptions{}, "certificate file and a key file"},
		{"missing certificate", ServerOptions{CertFile: missing, KeyFile: keyFile}, missing},
		{"missing key", ServerOptions{CertFile: certFile, KeyFile: missing}, missing},
		{"key of another certificate", ServerOptions{CertFile: certFile, KeyFile: otherKey}, otherKey},
		{"key as certificate", ServerOptions{CertFile: keyFile, KeyFile: keyFile}, "certificate file " + keyFile},
		{"client CA file without certificates", ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: emptyCA}, emptyCA},
		{"missing client CA file", ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: missing}, missing},
	} {
		_, err := NewServer(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if errors.Is(err, os.ErrNotExist) != strings.HasPrefix(tc.name, "missing") {
			t.Errorf("%s: errors.Is(err, os.ErrNotExist) = %v", tc.name, errors.Is(err, os.ErrNotExist))
		}
	}
}

// TestServerConcurrentHandshakesDuringReload runs handshakes in parallel while the files
// change (for -race): each is served one of the certificates, none fails.
func TestServerConcurrentHandshakesDuringReload(t *testing.T) {
	ca := newCA(t, "CA")
	dir := t.TempDir()
	leaves := []*certtest.Leaf{serverLeaf(t, ca, "a"), serverLeaf(t, ca, "b")}
	certFile, keyFile, err := leaves[0].WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{CertFile: certFile, KeyFile: keyFile, CheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, cs, err, setupErr := tryHandshake(s.Config(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
				err = errors.Join(setupErr, err, res.err)
				if err != nil {
					errs <- err
					return
				}
				if cn := cs.PeerCertificates[0].Subject.CommonName; cn != "a" && cn != "b" {
					errs <- errors.New("served " + cn)
					return
				}
			}
		}()
	}
	for i := range 20 {
		// Replace each file atomically (rename), as certificate managers do. A handshake
		// between the two renames sees a mismatched pair and is served the previous one.
		next := leaves[(i+1)%2]
		tmpCert, tmpKey, err := next.WriteFiles(dir, "next")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmpKey, keyFile); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmpCert, certFile); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
