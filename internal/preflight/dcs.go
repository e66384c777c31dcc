package preflight

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// dcs checks each cluster's dcs section against this machine: the etcd password's variable,
// the TLS files, and whether each etcd endpoint accepts a TCP connection (a warning: etcd may
// be reachable only from where pgfront runs; meanwhile node checks decide roles).
func (c *checker) dcs(ctx context.Context) {
	type endpoint struct{ path, addr string }
	var eps []endpoint
	for _, name := range c.cfg.ClusterNames() {
		d := c.cfg.Clusters[name].DCS
		if d == nil {
			continue
		}
		p := "clusters." + name + ".dcs.etcd"
		e := d.Etcd
		if e.PasswordEnv != "" {
			switch v, ok := c.opts.LookupEnv(e.PasswordEnv); {
			case !ok:
				c.warn(p+".password_env", "environment variable %s is not set here: pgfront run refuses to start without it (set it where pgfront runs)", e.PasswordEnv)
			case v == "":
				c.warn(p+".password_env", "environment variable %s is set but empty: etcd refuses an empty password", e.PasswordEnv)
			}
		}
		if e.TLS.CertFile != "" && e.TLS.KeyFile != "" {
			c.pair(p+".tls", e.TLS.CertFile, e.TLS.KeyFile, "client")
		}
		if e.TLS.CAFile != "" {
			c.caFile(p+".tls.ca_file", e.TLS.CAFile)
		}
		for i, h := range e.Hosts {
			addr := h
			if u, err := url.Parse(h); err == nil && strings.Contains(h, "://") {
				addr = u.Host
			}
			eps = append(eps, endpoint{p + ".hosts[" + strconv.Itoa(i) + "]", addr})
		}
	}
	if len(eps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.LookupTimeout)
	defer cancel()
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.opts.Dial(ctx, "tcp", ep.addr)
			if err == nil {
				conn.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, ep := range eps {
		if errs[i] != nil {
			c.warn(ep.path, "etcd at %s does not accept connections from here (%v): until pgfront reaches it, node checks alone decide roles", ep.addr, errs[i])
		}
	}
}

// dialer is the default Options.Dial.
var dialer net.Dialer
