// Command tlscerts writes a throw-away CA and a server certificate and key signed by it,
// for the TLS benchmark (bench/tls.sh): PostgreSQL, pgfront and PgBouncer all present the
// same server certificate, so every target does the same handshake work.
//
//	tlscerts -dir /tmp/certs                       # ca.crt, server.crt, server.key
//	tlscerts -dir /tmp/certs -hosts 127.0.0.1,db   # other subject alternative names
//
// Keys are ECDSA P-256, the key PKCS#8, every file mode 0600, valid from an hour ago to a
// day from now (internal/certtest). It prints the three paths, one a line.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pgfront/pgfront/internal/certtest"
)

func main() {
	dir := flag.String("dir", "", "directory to write ca.crt, server.crt and server.key into (must exist)")
	hosts := flag.String("hosts", "127.0.0.1,localhost", "comma-separated subject alternative names of the server certificate")
	commonName := flag.String("cn", "pgfront-bench", "CommonName of the server certificate")
	flag.Parse()
	if *dir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: tlscerts -dir DIR [-hosts 127.0.0.1,localhost] [-cn NAME]")
		os.Exit(2)
	}
	paths, err := writeCerts(*dir, *commonName, splitHosts(*hosts))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlscerts:", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}

// writeCerts makes the CA and the server certificate and writes them into dir; it returns
// the paths of the CA certificate, the server certificate and the server key.
func writeCerts(dir, commonName string, hosts []string) ([]string, error) {
	ca, err := certtest.NewCA("pgfront bench CA")
	if err != nil {
		return nil, fmt.Errorf("making CA: %w", err)
	}
	server, err := ca.Issue(certtest.LeafOptions{CommonName: commonName, Hosts: hosts})
	if err != nil {
		return nil, fmt.Errorf("issuing server certificate: %w", err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		return nil, fmt.Errorf("writing into %s: %w", dir, err)
	}
	certFile, keyFile, err := server.WriteFiles(dir, "server")
	if err != nil {
		return nil, fmt.Errorf("writing into %s: %w", dir, err)
	}
	return []string{caFile, certFile, keyFile}, nil
}

func splitHosts(s string) []string {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
