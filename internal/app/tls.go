package app

import (
	"fmt"

	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// newServerTLS builds each cluster's TLS towards its servers (absent: plain).
func newServerTLS(cfg *config.Config) (map[string]*tlsconf.Client, error) {
	out := make(map[string]*tlsconf.Client)
	for _, name := range cfg.ClusterNames() {
		st := cfg.Clusters[name].ServerTLS
		if st.Mode == "" || st.Mode == "disable" {
			continue
		}
		c, err := tlsconf.NewClient(tlsconf.ClientOptions{Mode: st.Mode, CAFile: st.CAFile, CertFile: st.CertFile, KeyFile: st.KeyFile})
		if err != nil {
			return nil, fmt.Errorf("clusters.%s.server_tls: %w", name, err)
		}
		out[name] = c
	}
	return out, nil
}

// serverTLSFor is the frontend's view of a cluster's server TLS: a nil interface when plain.
func serverTLSFor(clients map[string]*tlsconf.Client, cluster string) frontend.ServerTLS {
	if c := clients[cluster]; c != nil {
		return c
	}
	return nil
}

// routeTLS builds what route rc offers TLS clients. SNI entries become routes of their own
// clusters that share r's listener, name, limits and client TLS (newRoute copies r once its
// TLS is set).
func (a *App) routeTLS(g *generation, rc *config.Route, r *frontend.Route, newRoute func(cluster string) *frontend.Route) error {
	t := rc.TLS
	switch t.Mode {
	case "terminate":
		srv, err := tlsconf.NewServer(tlsconf.ServerOptions{CertFile: t.CertFile, KeyFile: t.KeyFile,
			ClientCAFile: t.ClientCAFile, Logger: a.log.With("route", rc.Name)})
		if err != nil {
			return fmt.Errorf("routes.%s.tls: %w", rc.Name, err)
		}
		g.certs = append(g.certs, srv)
		if g.routeCerts == nil {
			g.routeCerts = make(map[string]*tlsconf.Server)
		}
		g.routeCerts[rc.Name] = srv
		r.TLS = frontend.RouteTLS{Mode: frontend.TLSTerminate, Config: srv.Config(), Require: t.Require}
		sni := make(map[string]*frontend.Route, len(t.SNI))
		for name, cl := range t.SNI {
			sni[name] = newRoute(cl)
		}
		r.TLS.SNI = sni
	case "passthrough":
		r.TLS = frontend.RouteTLS{Mode: frontend.TLSPassthrough}
	}
	return nil
}

// ReloadCertificates re-reads every route's certificate files now. A file that fails to load
// keeps the certificate in use; the errors are returned (and logged by tlsconf). SIGHUP
// reloads the whole config, certificates included.
func (a *App) ReloadCertificates() error {
	a.reloadMu.Lock()
	certs := a.certs
	a.reloadMu.Unlock()
	var first error
	for _, c := range certs {
		if err := c.Reload(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
