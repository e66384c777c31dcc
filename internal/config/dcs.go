package config

import (
	"net/url"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// DCS makes Patroni's distributed configuration store a cluster's role source: the server
// holding the leader key is the primary, learned from a watch at once, and the members'
// registrations can supply the server list.
type DCS struct {
	// Etcd is Patroni's etcd3 DCS (the only kind supported).
	Etcd Etcd `json:"etcd"`
	// ServersFromMembers adds a server for every Patroni member the servers list does
	// not name (member name = server name, address from its conn_url, Patroni REST API
	// from its api_url): a new node joins without a config change, one that leaves
	// drains. Default false: only the listed servers, matched to members by name or by
	// conn_url host:port.
	ServersFromMembers bool `json:"servers_from_members"`
}

// Etcd is how to reach Patroni's etcd v3 (Patroni's etcd3 section: hosts, namespace,
// scope, TLS, username and password).
type Etcd struct {
	// Hosts are etcd's client endpoints, host:port or http(s)://host:port; at least one.
	Hosts []string `json:"hosts"`
	// Namespace is Patroni's namespace. Default "/service".
	Namespace string `json:"namespace"`
	// Scope is Patroni's scope (its cluster name); required.
	Scope string `json:"scope"`
	// TLS towards etcd: CAFile verifies etcd's certificate (default: the system roots,
	// when TLS is on); CertFile and KeyFile are a client certificate (both or neither).
	// TLS is on when any is set or a host is https://.
	TLS EtcdTLS `json:"tls"`
	// Username for etcd's authentication; empty = none.
	Username string `json:"username"`
	// PasswordEnv and PasswordFile give the password (one of them, with Username).
	PasswordEnv  string `json:"password_env"`
	PasswordFile string `json:"password_file"`
}

// EtcdTLS is the TLS pgfront uses towards etcd.
type EtcdTLS struct {
	CAFile   string `json:"ca_file"`
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// TLSOn reports whether TLS is used towards etcd.
func (e Etcd) TLSOn() bool {
	if e.TLS != (EtcdTLS{}) {
		return true
	}
	for _, h := range e.Hosts {
		if strings.HasPrefix(h, "https://") {
			return true
		}
	}
	return false
}

// defaultNamespace is Patroni's default namespace.
const defaultNamespace = "/service"

func (d *decoder) dcs(dst **DCS) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		c := &DCS{}
		*dst = c
		d.mapping(n, path, []field{
			{"etcd", func(n ast.Node, p string) {
				e := &c.Etcd
				d.mapping(n, p, []field{
					{"hosts", d.strs(&e.Hosts)},
					{"namespace", d.str(&e.Namespace)},
					{"scope", d.str(&e.Scope)},
					{"tls", func(n ast.Node, p string) {
						d.mapping(n, p, []field{
							{"ca_file", d.str(&e.TLS.CAFile)},
							{"cert_file", d.str(&e.TLS.CertFile)},
							{"key_file", d.str(&e.TLS.KeyFile)},
						})
					}},
					{"username", d.str(&e.Username)},
					{"password_env", d.str(&e.PasswordEnv)},
					{"password_file", d.str(&e.PasswordFile)},
				})
			}},
			{"servers_from_members", d.bool(&c.ServersFromMembers)},
		})
	}
}

// dcsDefaults applies the defaults of a cluster's dcs section (p is its path).
func dcsDefaults(c *DCS, p string, isSet func(string) bool) {
	if c != nil && !isSet(p+".etcd.namespace") {
		c.Etcd.Namespace = defaultNamespace
	}
}

// dcs checks a cluster's dcs section.
func (v *validator) dcs(p string, cl *Cluster) {
	c := cl.DCS
	if c == nil {
		return
	}
	ep := p + ".etcd"
	e := c.Etcd
	if len(e.Hosts) == 0 {
		v.bad(ep+".hosts", "lists no etcd endpoint (host:port or http(s)://host:port)")
	}
	for i, h := range e.Hosts {
		hp := index(ep+".hosts", i)
		addr := h
		if strings.Contains(h, "://") {
			u, err := url.Parse(h)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				v.bad(hp, "%q must be host:port or http(s)://host:port", h)
				continue
			}
			addr = u.Host
		}
		if _, _, err := splitAddr(addr, false); err != nil {
			v.bad(hp, "%v", err)
		}
	}
	if e.Scope == "" {
		v.bad(ep+".scope", "is required (Patroni's scope: the name of its cluster)")
	} else if strings.Contains(e.Scope, "/") {
		v.bad(ep+".scope", "%q must not contain '/'", e.Scope)
	}
	if !strings.HasPrefix(e.Namespace, "/") {
		v.bad(ep+".namespace", "%q must start with '/' (Patroni's default is /service)", e.Namespace)
	}
	v.notEmpty(ep+".tls.ca_file", e.TLS.CAFile)
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		v.bad(ep+".tls.cert_file", "cert_file and key_file go together: set both or neither")
	}
	v.notEmpty(ep+".username", e.Username)
	pwSet := v.m.isSet(ep+".password_env") || v.m.isSet(ep+".password_file")
	if pwSet {
		v.oneSource(ep, "etcd password", "password_file", e.PasswordFile, "password_env", e.PasswordEnv)
		if e.Username == "" {
			v.bad(ep+".username", "is required with a password")
		}
	} else if e.Username != "" {
		v.bad(ep+".password_env", "a password is required with username (password_env or password_file)")
	}
	if len(cl.Servers) == 0 && !c.ServersFromMembers {
		v.bad(strings.TrimSuffix(p, ".dcs")+".servers", "cluster %q needs at least one server (or dcs.servers_from_members: true)", cl.Name)
	}
}
