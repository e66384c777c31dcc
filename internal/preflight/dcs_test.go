package preflight

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestDCS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, src := load(t, t.TempDir(), `
clusters:
  a:
    dcs:
      etcd:
        hosts: ["`+ln.Addr().String()+`", "http://10.255.0.1:2379"]
        scope: pg
        username: u
        password_env: PGF_ETCD
        tls: {ca_file: /nonexistent/ca.pem}
    servers: [{name: pg1, address: "127.0.0.1:5432"}]
routes:
  rw: {listen: "127.0.0.1:0", cluster: a, role: primary}
`)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == ln.Addr().String() {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		return nil, errors.New("connection refused")
	}
	warnings, err := Run(context.Background(), cfg, src, Options{LookupHost: noNetwork(t), LookupEnv: noEnv, Dial: dial})
	want(t, "warning", findings(warnings),
		finding{6, "clusters.a.dcs.etcd.hosts[1]", "etcd at 10.255.0.1:2379 does not accept connections from here|node checks alone decide"},
		finding{9, "clusters.a.dcs.etcd.password_env", "environment variable PGF_ETCD is not set here"},
	)
	want(t, "problem", findings(problemsOf(t, err)),
		finding{10, "clusters.a.dcs.etcd.tls.ca_file", "/nonexistent/ca.pem"},
	)
}
