package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"testing"
)

func TestWriteCertsMakesAVerifiableServerCertificate(t *testing.T) {
	dir := t.TempDir()
	paths, err := writeCerts(dir, "bench", []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatalf("writeCerts: %v", err)
	}
	want := []string{dir + "/ca.crt", dir + "/server.crt", dir + "/server.key"}
	if !slices.Equal(paths, want) {
		t.Fatalf("paths = %v, want %v", paths, want)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// PostgreSQL refuses a key readable by group or others.
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", p, fi.Mode().Perm())
		}
	}

	pair, err := tls.LoadX509KeyPair(paths[1], paths[2])
	if err != nil {
		t.Fatalf("loading the key pair: %v", err)
	}
	caPEM, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verifying for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "db.example.com"}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
}

func TestSplitHosts(t *testing.T) {
	got := splitHosts(" 127.0.0.1, ,localhost,")
	if want := []string{"127.0.0.1", "localhost"}; !slices.Equal(got, want) {
		t.Errorf("splitHosts = %q, want %q", got, want)
	}
}
