package preflight

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

// certificates loads every certificate, key and CA file the config names, as pgfront would,
// and says which file is at fault when they cannot serve.
func (c *checker) certificates() {
	for _, name := range c.cfg.RouteNames() {
		t := c.cfg.Routes[name].TLS
		if t.Mode != "terminate" {
			continue
		}
		p := "routes." + name + ".tls"
		c.pair(p, t.CertFile, t.KeyFile, "server")
		if t.ClientCAFile != "" {
			c.caFile(p+".client_ca_file", t.ClientCAFile)
		}
	}
	for _, name := range c.cfg.ClusterNames() {
		t := c.cfg.Clusters[name].ServerTLS
		if t.Mode == "disable" {
			continue
		}
		p := "clusters." + name + ".server_tls"
		if t.CertFile != "" && t.KeyFile != "" {
			c.pair(p, t.CertFile, t.KeyFile, "client")
		}
		if t.CAFile != "" {
			c.caFile(p+".ca_file", t.CAFile)
		}
	}
}

// pemFile is what a PEM file holds.
type pemFile struct {
	certs     []*x509.Certificate
	badCerts  int // CERTIFICATE blocks that do not parse
	keys      []*pem.Block
	encrypted bool // a key is encrypted with a passphrase
}

// readPEM reads and sorts the blocks of a PEM file.
func readPEM(path string) (*pemFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *fs.PathError: "open FILE: permission denied"
	}
	f := &pemFile{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				f.badCerts++
				continue
			}
			f.certs = append(f.certs, cert)
		case b.Type == "ENCRYPTED PRIVATE KEY" || (strings.HasSuffix(b.Type, "PRIVATE KEY") && b.Headers["Proc-Type"] == "4,ENCRYPTED"):
			f.encrypted = true
			f.keys = append(f.keys, b)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			f.keys = append(f.keys, b)
		}
	}
	return f, nil
}

// pair checks a certificate and its key (a route's server certificate, or a cluster's client
// certificate towards its servers). Findings are at PATH.cert_file or PATH.key_file.
func (c *checker) pair(p, certPath, keyPath, role string) {
	certField, keyField := p+".cert_file", p+".key_file"
	cf, certErr := readPEM(certPath)
	if certErr != nil {
		c.problem(certField, "%v", certErr)
	}
	kf, keyErr := readPEM(keyPath)
	if keyErr != nil {
		c.problem(keyField, "%v", keyErr)
	}
	if certErr != nil || keyErr != nil {
		return
	}
	certHoldsKey := len(cf.certs) == 0 && len(cf.keys) > 0
	keyHoldsCert := len(kf.keys) == 0 && len(kf.certs) > 0
	switch {
	case certHoldsKey && keyHoldsCert:
		c.problem(certField, "cert_file %s holds a private key and key_file %s holds a certificate: the two are swapped", certPath, keyPath)
		return
	case certHoldsKey:
		c.problem(certField, "cert_file %s holds a private key, not a certificate: is it the key file?", certPath)
		return
	case keyHoldsCert:
		c.problem(keyField, "key_file %s holds a certificate, not a private key: is it the certificate file?", keyPath)
		return
	}
	ok := true
	if len(cf.certs) == 0 {
		c.problem(certField, "cert_file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", certPath)
		ok = false
	}
	switch {
	case len(kf.keys) == 0:
		c.problem(keyField, "key_file %s holds no PEM private key (-----BEGIN PRIVATE KEY-----)", keyPath)
		ok = false
	case kf.encrypted:
		c.problem(keyField, "key_file %s is encrypted with a passphrase; pgfront needs the key unencrypted (openssl pkey -in KEY -out KEY.plain)", keyPath)
		ok = false
	}
	if !ok {
		return
	}
	key, err := parseKey(kf.keys[0])
	if err != nil {
		c.problem(keyField, "key_file %s: %v", keyPath, err)
		return
	}
	leaf := cf.certs[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		for _, later := range cf.certs[1:] {
			if samePublicKey(later.PublicKey, key.Public()) {
				c.problem(certField, "cert_file %s has its certificates in the wrong order: the one for key_file %s (%s) must come first, before the CA certificates that issued it", certPath, keyPath, describe(later))
				return
			}
		}
		c.problem(keyField, "key_file %s does not match the certificate in cert_file %s (%s): the key belongs to another certificate", keyPath, certPath, describe(leaf))
		return
	}
	// What crypto/tls itself would still refuse (an unsupported key type, ...).
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		c.problem(certField, "cert_file %s with key_file %s: %v", certPath, keyPath, err)
		return
	}
	if leaf.IsCA && leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		c.warn(certField, "cert_file %s holds a CA certificate (%s, it signs certificates), not a %s certificate: put the %s certificate this CA issued there, with its key, and give the CA to the other side as its root", certPath, describe(leaf), role, role)
	}
	c.validity(certField, certPath, leaf)
}

// caFile checks a file of CA certificates (a route's client_ca_file, a cluster's ca_file).
func (c *checker) caFile(field, path string) {
	f, err := readPEM(path)
	switch {
	case err != nil:
		c.problem(field, "%v", err)
	case len(f.certs) == 0 && len(f.keys) > 0:
		c.problem(field, "%s holds a private key, not CA certificates", path)
	case len(f.certs) == 0:
		c.problem(field, "%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
	default:
		for _, cert := range f.certs {
			c.validity(field, path, cert)
		}
	}
}

// validity warns about a certificate outside its validity period: pgfront serves or uses it,
// and the other side refuses it.
func (c *checker) validity(field, path string, cert *x509.Certificate) {
	now := c.opts.Now
	switch {
	case now.After(cert.NotAfter):
		c.warn(field, "%s: the certificate %s expired on %s", path, describe(cert), cert.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(cert.NotBefore):
		c.warn(field, "%s: the certificate %s is not valid before %s", path, describe(cert), cert.NotBefore.UTC().Format(time.DateTime))
	}
}

// describe names a certificate for messages: "CN=db1.example".
func describe(cert *x509.Certificate) string {
	if cn := cert.Subject.CommonName; cn != "" {
		return "CN=" + cn
	}
	if s := cert.Subject.String(); s != "" {
		return s
	}
	return "serial " + cert.SerialNumber.Text(16)
}

// parseKey parses a PEM private key block in any form crypto/tls reads: PKCS #8, PKCS #1
// (RSA) or SEC 1 (EC).
func parseKey(b *pem.Block) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("the %s block does not parse as a private key", b.Type)
}

// samePublicKey reports whether a certificate's public key is the key pair's.
func samePublicKey(certKey, pub crypto.PublicKey) bool {
	k, ok := certKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}
