package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// withDCS returns base with a dcs section for cluster main.
func withDCS(lines string) string {
	return strings.Replace(base, "    servers:", "    dcs:\n"+lines+"    servers:", 1)
}

func TestDCS(t *testing.T) {
	c, _ := mustParse(t, withDCS("      etcd:\n        hosts: [\"10.0.0.1:2379\", \"https://etcd2:2379\"]\n        scope: pg-main\n"+
		"        tls: {ca_file: /etc/ca.pem}\n        username: pgfront\n        password_env: ETCD_PW\n      servers_from_members: true\n"))
	d := c.Clusters["main"].DCS
	if d == nil {
		t.Fatal("dcs not decoded")
	}
	want := Etcd{Hosts: []string{"10.0.0.1:2379", "https://etcd2:2379"}, Namespace: "/service", Scope: "pg-main",
		TLS: EtcdTLS{CAFile: "/etc/ca.pem"}, Username: "pgfront", PasswordEnv: "ETCD_PW"}
	if !slices.Equal(d.Etcd.Hosts, want.Hosts) || d.Etcd.Namespace != want.Namespace || d.Etcd.Scope != want.Scope ||
		d.Etcd.TLS != want.TLS || d.Etcd.Username != want.Username || d.Etcd.PasswordEnv != want.PasswordEnv || !d.ServersFromMembers {
		t.Errorf("dcs = %+v, want %+v and servers_from_members", *d, want)
	}
	if !d.Etcd.TLSOn() {
		t.Error("TLS should be on")
	}
	c, _ = mustParse(t, base)
	if c.Clusters["main"].DCS != nil {
		t.Error("dcs absent should be nil")
	}
	// servers_from_members: the servers list may be empty.
	src := strings.Replace(withDCS("      etcd: {hosts: [\"127.0.0.1:2379\"], scope: pg, namespace: /db}\n      servers_from_members: true\n"),
		base[strings.Index(base, "    servers:"):strings.Index(base, "routes:")], "", 1)
	c, _ = mustParse(t, src)
	if cl := c.Clusters["main"]; len(cl.Servers) != 0 || cl.DCS.Etcd.Namespace != "/db" {
		t.Errorf("servers %v, namespace %q", cl.Servers, cl.DCS.Etcd.Namespace)
	}
}

func TestDCSProblems(t *testing.T) {
	noServers := func(s string) string {
		return strings.Replace(s, base[strings.Index(base, "    servers:"):strings.Index(base, "routes:")], "", 1)
	}
	for _, tc := range []struct {
		name, src string
		want      []want
	}{
		{"no scope, no hosts", withDCS("      etcd: {}\n"),
			[]want{{"etcd: {}", "clusters.main.dcs.etcd.hosts", "lists no etcd endpoint"},
				{"etcd: {}", "clusters.main.dcs.etcd.scope", "is required"}}},
		{"unknown key", withDCS("      etcd:\n        hosts: [\"127.0.0.1:2379\"]\n        scope: pg\n        endpoints: [x]\n"),
			[]want{{"endpoints", "clusters.main.dcs.etcd.endpoints", `unknown field "endpoints"`}}},
		{"bad host", withDCS("      etcd:\n        hosts: [etcd1, \"ftp://x:1\"]\n        scope: pg\n"),
			[]want{{"hosts:", "clusters.main.dcs.etcd.hosts[0]", "etcd1"}, {"hosts:", "clusters.main.dcs.etcd.hosts[1]", "must be host:port or http(s)://host:port"}}},
		{"cert without key", withDCS("      etcd:\n        hosts: [\"127.0.0.1:2379\"]\n        scope: pg\n        tls:\n          cert_file: /c.pem\n"),
			[]want{{"cert_file", "clusters.main.dcs.etcd.tls.cert_file", "set both or neither"}}},
		{"username without password", withDCS("      etcd:\n        hosts: [\"127.0.0.1:2379\"]\n        scope: pg\n        username: u\n"),
			[]want{{"etcd:", "clusters.main.dcs.etcd.password_env", "a password is required with username"}}},
		{"two passwords", withDCS("      etcd:\n        hosts: [\"127.0.0.1:2379\"]\n        scope: pg\n        username: u\n        password_file: /pw\n        password_env: PW\n"),
			[]want{{"password_env", "clusters.main.dcs.etcd.password_env", "both set"}}},
		{"namespace", withDCS("      etcd: {hosts: [\"127.0.0.1:2379\"], scope: pg, namespace: service}\n"),
			[]want{{"namespace", "clusters.main.dcs.etcd.namespace", "must start with '/'"}}},
		{"servers_from_members not a bool", withDCS("      etcd: {hosts: [\"127.0.0.1:2379\"], scope: pg}\n      servers_from_members: yes\n"),
			[]want{{"servers_from_members", "clusters.main.dcs.servers_from_members", "must be true or false"}}},
		{"no servers without servers_from_members", noServers(withDCS("      etcd: {hosts: [\"127.0.0.1:2379\"], scope: pg}\n")),
			[]want{{"main:", "clusters.main.servers", "or dcs.servers_from_members: true"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.src), "bad.yaml")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not *Error", err)
			}
			checkFindings(t, tc.src, asFindings(e.Problems), tc.want)
			if t.Failed() {
				t.Logf("source:\n%s\nerror:\n%v", tc.src, err)
			}
		})
	}
}
