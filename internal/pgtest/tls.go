package pgtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Names of the TLS files in the data directory. PostgreSQL resolves relative ssl_*_file
// paths against the data directory, so a replica made by pg_basebackup (which copies them,
// mode 0600, owned by the user it runs as) finds its own copies.
const (
	tlsCertName = "server.crt"
	tlsKeyName  = "server.key"
	tlsCAName   = "root.crt"
)

// TLSFiles turns ssl on for a server (Options.TLS): the PEM files are written into the data
// directory, owned by the server's OS user, mode 0600, as PostgreSQL demands for the key.
// Replicas inherit them (pg_basebackup copies the files) and the same pg_hba.conf policy.
//
// The harness itself (Exec, QueryValue, pg_basebackup and the standby's WAL receiver) uses
// the server's Unix socket when TLS is set, so its TCP lines can demand what they like.
// DSN still says sslmode=disable; append TLS parameters to it (in a keyword/value string
// the last occurrence of a keyword wins), e.g. s.DSN("postgres", "postgres") +
// " sslmode=verify-full sslrootcert=" + caFile.
type TLSFiles struct {
	CertPEM, KeyPEM []byte // server certificate (chain) and its key; PKCS#8, PKCS#1 or SEC 1
	// CAPEM becomes ssl_ca_file: it verifies client certificates when ClientCert is set
	// (without ClientCert the server asks for a certificate but lets clients without one in).
	CAPEM []byte
	// HostSSLOnly writes hostssl instead of host lines for TCP, preceded by hostnossl reject
	// lines: plain TCP logins (replication included) are rejected.
	HostSSLOnly bool
	// ClientCert appends clientcert=verify-ca to every TCP line: a login must present a
	// certificate that CAPEM verifies. PostgreSQL allows that option only on hostssl lines, so
	// it implies them; plain TCP then matches no line and is rejected as well.
	ClientCert bool
}

// validate checks the files load and match, so a bad pair fails before initdb runs rather
// than as a postmaster that refuses to start.
func (f *TLSFiles) validate() error {
	if _, err := tls.X509KeyPair(f.CertPEM, f.KeyPEM); err != nil {
		return fmt.Errorf("checking TLS certificate and key: %w", err)
	}
	if f.ClientCert && len(f.CAPEM) == 0 {
		return errors.New("checking TLS files: ClientCert needs CAPEM to verify client certificates")
	}
	return nil
}

func (f *TLSFiles) clone() *TLSFiles {
	c := *f
	c.CertPEM = slices.Clone(f.CertPEM)
	c.KeyPEM = slices.Clone(f.KeyPEM)
	c.CAPEM = slices.Clone(f.CAPEM)
	return &c
}

// writeTLSFiles writes the PEM files into the data directory.
func (s *Server) writeTLSFiles() error {
	f := s.opts.TLS
	files := map[string][]byte{tlsCertName: f.CertPEM, tlsKeyName: f.KeyPEM}
	if len(f.CAPEM) > 0 {
		files[tlsCAName] = f.CAPEM
	}
	for name, content := range files {
		if err := s.writeOwned(filepath.Join(s.DataDir, name), string(content)); err != nil {
			return err
		}
	}
	return nil
}

// tlsSettings are the postgresql.conf settings for Options.TLS; nil without it.
func (s *Server) tlsSettings() map[string]string {
	f := s.opts.TLS
	if f == nil {
		return nil
	}
	settings := map[string]string{
		"ssl":           "on",
		"ssl_cert_file": tlsCertName,
		"ssl_key_file":  tlsKeyName,
		"ssl_ca_file":   "",
	}
	if len(f.CAPEM) > 0 {
		settings["ssl_ca_file"] = tlsCAName
	}
	return settings
}

// hbaTCP returns the connection type and trailing options of pg_hba.conf's TCP lines, and
// lines to put first.
func (s *Server) hbaTCP() (connType, options, first string) {
	f := s.opts.TLS
	if f == nil {
		return "host", "", ""
	}
	connType = "host" // matches TLS and plain TCP alike
	if f.HostSSLOnly || f.ClientCert {
		connType = "hostssl"
	}
	if f.ClientCert {
		options = " clientcert=verify-ca"
	}
	if f.HostSSLOnly {
		// An explicit reject says so in the server log rather than "no pg_hba.conf entry".
		var b strings.Builder
		for _, db := range []string{"all", "replication"} { // "all" does not match replication
			for _, addr := range []string{"0.0.0.0/0", "::/0"} {
				fmt.Fprintf(&b, "hostnossl %s all %s reject\n", db, addr)
			}
		}
		first = b.String()
	}
	return connType, options, first
}

// adminHost is where the harness's own connections go: the Unix socket when TLS is on (TCP
// may demand a client certificate the harness does not have), else TCP on loopback.
func (s *Server) adminHost() string {
	if s.opts.TLS != nil {
		return s.Dir
	}
	return s.Host
}
