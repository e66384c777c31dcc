// Package certtest makes throw-away X.509 certificates for tests and benchmarks: a CA and
// the server and client certificates it issues, as Go values and as PEM (files on request).
// It uses crypto/x509 only (no openssl); keys are ECDSA P-256 and private keys are written
// as PKCS#8 ("PRIVATE KEY"), which both PostgreSQL and Go read.
//
//	ca, err := certtest.NewCA("test CA")
//	srv, err := ca.Issue(certtest.LeafOptions{CommonName: "db", Hosts: []string{"127.0.0.1", "localhost"}})
//	cfg := &tls.Config{Certificates: []tls.Certificate{srv.TLS}}
//	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// defaultBefore and defaultAfter bound a certificate's validity when none is given: an hour
// back absorbs clock skew between processes, a day covers any test run.
const (
	defaultBefore = time.Hour
	defaultAfter  = 24 * time.Hour
)

// CA is a self-signed certificate authority. Its fields are set by NewCA and never change.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA makes a CA named name (its subject CommonName), ECDSA P-256, valid from an hour ago
// to a day from now.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"pgfront certtest"}},
		NotBefore:             now.Add(-defaultBefore),
		NotAfter:              now.Add(defaultAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der)}, nil
}

// Pool returns a new pool holding only the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// WriteFile writes the CA certificate as dir/name.crt (mode 0600) and returns its path.
func (ca *CA) WriteFile(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".crt")
	if err := writePrivate(path, ca.CertPEM); err != nil {
		return "", fmt.Errorf("writing CA certificate: %w", err)
	}
	return path, nil
}

// LeafOptions describes a certificate issued by a CA.
type LeafOptions struct {
	CommonName string
	// Hosts become subject alternative names: an entry that parses as an IP address is an
	// IP SAN, anything else a DNS SAN.
	Hosts []string
	// Client makes a client certificate (ExtKeyUsageClientAuth) instead of a server one
	// (ExtKeyUsageServerAuth).
	Client bool
	// NotBefore and NotAfter bound the validity; zero means an hour ago and a day from now.
	// A NotAfter in the past makes an expired certificate.
	NotBefore, NotAfter time.Time
}

// Leaf is a certificate issued by a CA with its private key, parsed, as PEM and ready for
// crypto/tls. Its fields never change.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // the leaf only (not the CA)
	KeyPEM  []byte // PKCS#8
	TLS     tls.Certificate
}

// Issue makes a new key and a certificate for it signed by ca.
func (ca *CA) Issue(o LeafOptions) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for %q: %w", o.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.CommonName, Organization: []string{"pgfront certtest"}},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-defaultBefore)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(defaultAfter)
	}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate for %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate for %q: %w", o.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key for %q: %w", o.CommonName, err)
	}
	return &Leaf{
		Cert:    cert,
		CertPEM: encodeCert(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}, nil
}

// WriteFiles writes the certificate and key as dir/name.crt and dir/name.key (mode 0600)
// and returns their paths.
func (l *Leaf) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := writePrivate(certFile, l.CertPEM); err != nil {
		return "", "", fmt.Errorf("writing certificate: %w", err)
	}
	if err := writePrivate(keyFile, l.KeyPEM); err != nil {
		return "", "", fmt.Errorf("writing key: %w", err)
	}
	return certFile, keyFile, nil
}

// writePrivate writes data to path with mode 0600, also when path already exists with
// another mode (os.WriteFile keeps an existing file's mode).
func writePrivate(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newSerial returns a random 128-bit serial number, as RFC 5280 recommends (unique per CA).
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}
