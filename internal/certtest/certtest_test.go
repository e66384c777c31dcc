package certtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, o LeafOptions) *Leaf {
	t.Helper()
	l, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCA(t *testing.T) {
	ca := newCA(t)
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "test CA" {
		t.Errorf("CA cert: IsCA=%v CN=%q", ca.Cert.IsCA, ca.Cert.Subject.CommonName)
	}
	if got := time.Until(ca.Cert.NotAfter); got < 23*time.Hour || got > 25*time.Hour {
		t.Errorf("CA valid for %v more, want about 24h", got)
	}
	if got := time.Since(ca.Cert.NotBefore); got < 59*time.Minute || got > 61*time.Minute {
		t.Errorf("CA valid since %v, want about 1h", got)
	}
	block, _ := pem.Decode(ca.CertPEM)
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, ca.Cert.Raw) {
		t.Errorf("CertPEM does not hold the CA certificate")
	}
}

func TestLeafVerifiesAgainstCA(t *testing.T) {
	ca := newCA(t)
	leaf := issue(t, ca, LeafOptions{CommonName: "db", Hosts: []string{"db.example", "127.0.0.1", "::1"}})
	for _, name := range []string{"db.example", "127.0.0.1", "::1"} {
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name}); err != nil {
			t.Errorf("verifying for %s: %v", name, err)
		}
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.example"}); err == nil {
		t.Error("verified for a host not in the SANs")
	}
	other := newCA(t)
	var unknown x509.UnknownAuthorityError
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: other.Pool()}); !errors.As(err, &unknown) {
		t.Errorf("verifying against another CA: %v, want UnknownAuthorityError", err)
	}
}

func TestHostsBecomeSANs(t *testing.T) {
	ca := newCA(t)
	leaf := issue(t, ca, LeafOptions{CommonName: "x", Hosts: []string{"localhost", "127.0.0.1", "a.example", "::1"}})
	if want := []string{"localhost", "a.example"}; !slices.Equal(leaf.Cert.DNSNames, want) {
		t.Errorf("DNSNames = %v, want %v", leaf.Cert.DNSNames, want)
	}
	want := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if !slices.EqualFunc(leaf.Cert.IPAddresses, want, net.IP.Equal) {
		t.Errorf("IPAddresses = %v, want %v", leaf.Cert.IPAddresses, want)
	}
}

func TestUsages(t *testing.T) {
	ca := newCA(t)
	server := issue(t, ca, LeafOptions{CommonName: "server", Hosts: []string{"localhost"}})
	client := issue(t, ca, LeafOptions{CommonName: "alice", Client: true})
	if !slices.Equal(server.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server ExtKeyUsage = %v", server.Cert.ExtKeyUsage)
	}
	if !slices.Equal(client.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("client ExtKeyUsage = %v", client.Cert.ExtKeyUsage)
	}
	clientAuth := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := client.Cert.Verify(clientAuth); err != nil {
		t.Errorf("client cert for client auth: %v", err)
	}
	var invalid x509.CertificateInvalidError
	if _, err := server.Cert.Verify(clientAuth); !errors.As(err, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Errorf("server cert for client auth: %v, want IncompatibleUsage", err)
	}
	if _, err := client.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); !errors.As(err, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Errorf("client cert for server auth: %v, want IncompatibleUsage", err)
	}
}

func TestExpired(t *testing.T) {
	ca := newCA(t)
	leaf := issue(t, ca, LeafOptions{CommonName: "old", Hosts: []string{"localhost"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	var invalid x509.CertificateInvalidError
	_, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"})
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("expired cert: %v, want Expired", err)
	}
}

// TestTLSHandshake checks the tls.Certificate and PEM forms work with crypto/tls both ways
// (mutual TLS) over loopback TCP.
func TestTLSHandshake(t *testing.T) {
	ca := newCA(t)
	server := issue(t, ca, LeafOptions{CommonName: "server", Hosts: []string{"127.0.0.1"}})
	client := issue(t, ca, LeafOptions{CommonName: "alice", Client: true})
	clientPair, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM) // the PEM forms load
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverDone := make(chan error, 1)
	peerCN := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{server.TLS},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()})
		err = tc.Handshake()
		if err == nil {
			peerCN <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		}
		serverDone <- err
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientPair}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
	if got := <-peerCN; got != "alice" {
		t.Errorf("server saw client %q", got)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	leaf := issue(t, ca, LeafOptions{CommonName: "db", Hosts: []string{"127.0.0.1"}})
	// A pre-existing file with a wider mode is narrowed.
	if err := os.WriteFile(filepath.Join(dir, "server.key"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{certFile: leaf.CertPEM, keyFile: leaf.KeyPEM, caFile: ca.CertPEM} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
		}
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("loading written files: %v", err)
	}
	block, _ := pem.Decode(leaf.KeyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM type: %v", block)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Errorf("key is not PKCS#8: %v", err)
	}
}
