// Package tlsconf builds pgfront's TLS configurations: the certificate pgfront shows clients
// (re-read when its files change or on Reload, keeping the old one when a new file is broken)
// and the TLS pgfront uses towards PostgreSQL servers, with libpq's sslmode semantics.
//
// Client side (pgfront terminating TLS):
//
//	srv, err := tlsconf.NewServer(tlsconf.ServerOptions{CertFile: "server.crt", KeyFile: "server.key", Logger: log})
//	...
//	tlsConn := tls.Server(conn, srv.Config()) // after answering 'S' to the client's SSLRequest
//	// on SIGHUP: srv.Reload()
//
// Server side (pgfront connecting to PostgreSQL):
//
//	cl, err := tlsconf.NewClient(tlsconf.ClientOptions{Mode: "verify-full", CAFile: "root.crt"})
//	...
//	conn, err = cl.Negotiate(ctx, conn, "db1.example:5432") // before the StartupMessage
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// ALPN is PostgreSQL's ALPN protocol name (PostgreSQL 17 direct TLS).
const ALPN = "postgresql"

// defaultCheckEvery bounds how stale the served certificate can be after its files change.
const defaultCheckEvery = 5 * time.Second

// cipherSuites are the TLS 1.2 suites offered: ECDHE key exchange with AEAD ciphers only
// (no RSA key exchange, no CBC). TLS 1.3 suites are not configurable and all AEAD.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerOptions configures the TLS pgfront offers its clients.
type ServerOptions struct {
	CertFile, KeyFile string // PEM; the certificate file may hold intermediates after the leaf
	// ClientCAFile, when set, makes client certificates required and verified against the
	// CAs in it (mTLS); "" asks for no client certificate.
	ClientCAFile string
	// CheckEvery is how often (at most) a handshake stats the files for changes; 0 = 5s;
	// < 0 = every handshake (tests).
	CheckEvery time.Duration
	Logger     *slog.Logger // nil = discard
}

// Server holds the certificate (and client CAs) pgfront serves and reloads them when their
// files change. It is safe for concurrent use.
type Server struct {
	opts       ServerOptions
	checkEvery time.Duration
	log        *slog.Logger

	// loadMu serialises loading: only one goroutine stats and reads the files at a time, and
	// it guards the fields below, which only loaders use.
	loadMu     sync.Mutex
	stamps     []fileStamp // of the files at the last load attempt, successful or not
	lastFailed string      // the last failure logged, so a repeated one is logged once

	// mu guards what handshakes read; it is never held during file I/O.
	mu struct {
		sync.Mutex
		current   *material
		lastCheck time.Time
	}
}

// material is one loaded, consistent set of files; it never changes once built.
type material struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool // nil without ClientCAFile
}

// fileStamp identifies a version of a file: a rewrite changes mtime or size, a rename over
// it changes the inode.
type fileStamp struct {
	path    string
	modTime time.Time
	size    int64
	inode   uint64
	err     string // the stat failed (missing file)
}

// NewServer loads the files now; an error names the file at fault.
func NewServer(o ServerOptions) (*Server, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("loading TLS certificate: both a certificate file and a key file are needed")
	}
	s := &Server{opts: o, checkEvery: o.CheckEvery, log: o.Logger}
	if s.checkEvery == 0 {
		s.checkEvery = defaultCheckEvery
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.stamps = s.statFiles()
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.mu.current = m
	s.mu.lastCheck = time.Now()
	s.warnValidity(m.cert.Leaf)
	return s, nil
}

// Config returns a new tls.Config for tls.Server: TLS 1.2 minimum (1.3 preferred, as Go
// does when both sides have it), ECDHE+AEAD suites only for 1.2, NextProtos [ALPN],
// GetCertificate returning the current certificate (checking the files per CheckEvery) and,
// with ClientCAFile, client certificates required and verified against the current client
// CAs (each handshake gets a snapshot through GetConfigForClient, so its certificate and
// CAs come from the same load). Do not modify it after use.
func (s *Server) Config() *tls.Config {
	cfg := s.baseConfig()
	cfg.GetCertificate = s.getCertificate
	if s.opts.ClientCAFile != "" {
		cfg.GetConfigForClient = s.getConfigForClient
	}
	return cfg
}

func (s *Server) baseConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: cipherSuites,
		NextProtos:   []string{ALPN},
	}
	if s.opts.ClientCAFile != "" {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.check().cert, nil
}

func (s *Server) getConfigForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	m := s.check()
	cfg := s.baseConfig()
	cfg.Certificates = []tls.Certificate{*m.cert}
	cfg.ClientCAs = m.clientCAs
	return cfg, nil
}

// check reloads the files if a check is due and they changed, and returns what to serve.
func (s *Server) check() *material {
	s.mu.Lock()
	m := s.mu.current
	due := s.checkEvery < 0 || time.Since(s.mu.lastCheck) >= s.checkEvery
	if due {
		s.mu.lastCheck = time.Now() // concurrent handshakes do not all check
	}
	s.mu.Unlock()
	if !due {
		return m
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	stamps := s.statFiles()
	if stampsEqual(stamps, s.stamps) {
		return s.currentMaterial()
	}
	s.stamps = stamps // a broken version is tried once, not at every handshake
	_ = s.reloadLocked("files changed")
	return s.currentMaterial()
}

func (s *Server) currentMaterial() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.current
}

// Reload re-reads the files now (SIGHUP). A file that fails to load or whose key does not
// match keeps the old certificate, and the error is logged once per distinct failure and
// returned.
func (s *Server) Reload() error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	s.stamps = s.statFiles()
	return s.reloadLocked("reload")
}

// reloadLocked loads the files and swaps them in if they load. s.loadMu is held.
func (s *Server) reloadLocked(why string) error {
	m, err := s.load()
	if err != nil {
		if msg := err.Error(); msg != s.lastFailed {
			s.lastFailed = msg
			s.log.Error("TLS certificate not reloaded, keeping the current one", "reason", why, "error", err)
		}
		return err
	}
	s.lastFailed = ""
	s.mu.Lock()
	old := s.mu.current
	s.mu.current = m
	s.mu.Unlock()
	if !old.cert.Leaf.Equal(m.cert.Leaf) {
		leaf := m.cert.Leaf
		s.log.Info("TLS certificate reloaded", "reason", why, "file", s.opts.CertFile,
			"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
		s.warnValidity(leaf)
	}
	return nil
}

// warnValidity logs a certificate clients will reject for its dates; it is still served
// (refusing to start over it would turn a renewal slip into an outage).
func (s *Server) warnValidity(leaf *x509.Certificate) {
	now := time.Now()
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		s.log.Warn("TLS certificate is outside its validity period", "file", s.opts.CertFile,
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
}

// Leaf is the certificate served now.
func (s *Server) Leaf() *x509.Certificate {
	return s.currentMaterial().cert.Leaf
}

// CertFile is the certificate file the server reads.
func (s *Server) CertFile() string { return s.opts.CertFile }

// load reads and checks all files; the error names the file at fault.
func (s *Server) load() (*material, error) {
	certPEM, err := os.ReadFile(s.opts.CertFile)
	if err != nil {
		return nil, fmt.Errorf("reading TLS certificate file: %w", err)
	}
	if err := checkCertPEM(certPEM); err != nil {
		return nil, fmt.Errorf("loading TLS certificate file %s: %w", s.opts.CertFile, err)
	}
	keyPEM, err := os.ReadFile(s.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading TLS key file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading TLS key file %s for certificate %s: %w", s.opts.KeyFile, s.opts.CertFile, err)
	}
	if cert.Leaf == nil { // Go fills it in unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing TLS certificate file %s: %w", s.opts.CertFile, err)
		}
	}
	m := &material{cert: &cert}
	if s.opts.ClientCAFile != "" {
		if m.clientCAs, err = loadPool(s.opts.ClientCAFile); err != nil {
			return nil, fmt.Errorf("loading client CA file: %w", err)
		}
	}
	return m, nil
}

// checkCertPEM reports a certificate file without a parsable first certificate, so that
// error names the certificate file rather than the key file.
func checkCertPEM(data []byte) error {
	block, rest := pem.Decode(data)
	for block != nil && block.Type != "CERTIFICATE" {
		block, rest = pem.Decode(rest)
	}
	if block == nil {
		return errors.New("no CERTIFICATE PEM block")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return err
	}
	return nil
}

// loadPool reads a PEM file of CA certificates; the error names the file.
func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *fs.PathError names the file
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

func (s *Server) statFiles() []fileStamp {
	paths := []string{s.opts.CertFile, s.opts.KeyFile}
	if s.opts.ClientCAFile != "" {
		paths = append(paths, s.opts.ClientCAFile)
	}
	stamps := make([]fileStamp, len(paths))
	for i, path := range paths {
		stamps[i] = statFile(path)
	}
	return stamps
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{path: path, err: err.Error()}
	}
	st := fileStamp{path: path, modTime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = sys.Ino
	}
	return st
}

func stampsEqual(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].path != b[i].path || !a[i].modTime.Equal(b[i].modTime) || a[i].size != b[i].size ||
			a[i].inode != b[i].inode || a[i].err != b[i].err {
			return false
		}
	}
	return true
}
