package app

import (
	"time"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/health"
	"github.com/pgfront/pgfront/internal/observe"
)

// clusterReporter turns the health monitor's findings into server states of one cluster.
type clusterReporter struct {
	metrics *observe.Metrics
	cluster *cluster.Cluster
	servers map[string]*cluster.Server // by health target name
	static  bool                       // tcp checks: roles stay as configured
	monitor *health.Monitor            // set once built; hurried while there is no primary
}

// hurryFor is how long the monitor checks at its fast interval after the cluster was last
// seen without a primary.
const hurryFor = 30 * time.Second

var _ health.Reporter = (*clusterReporter)(nil)

// ReportStatus implements health.Reporter.
func (r *clusterReporter) ReportStatus(target string, st health.Status) {
	srv := r.servers[target]
	if srv == nil {
		return
	}
	if !st.LastCheck.IsZero() {
		r.metrics.ServerChecked(srv, st.CheckDuration)
	}
	r.cluster.Modify(srv, func(s *cluster.State) {
		s.Up = st.Up
		if !r.static && st.Role != health.RoleUnknown {
			s.Role = clusterRole(st.Role)
			s.Fenced = false // a check is the authority after an in-band fence
		}
		s.LSN = st.LSN
		s.LagSeconds = st.LagSeconds
		s.LastCheck = st.LastCheck
		s.CheckDuration = st.CheckDuration
		s.LastErr = st.LastErr
	})
	if r.monitor == nil || r.static {
		return
	}
	// No primary (a failover in progress): check everyone at the fast interval so the new
	// primary is seen within fast_interval, not interval.
	if r.hasPrimary() {
		r.monitor.Relax()
	} else {
		r.monitor.Hurry(hurryFor)
	}
}

func (r *clusterReporter) hasPrimary() bool {
	for _, srv := range r.cluster.Servers() {
		if (cluster.Selector{Role: cluster.RolePrimary}).Eligible(srv.State()) {
			return true
		}
	}
	return false
}

func clusterRole(r health.Role) cluster.Role {
	switch r {
	case health.RolePrimary:
		return cluster.RolePrimary
	case health.RoleReplica:
		return cluster.RoleReplica
	}
	return cluster.RoleUnknown
}

// targetName names a server for the health monitor and its logs.
func targetName(clusterName, server string) string { return clusterName + "/" + server }

// newMonitor builds the health monitor of one cluster, or nil for check: none.
func newMonitor(cc *config.Cluster, cl *cluster.Cluster, a *App) *health.Monitor {
	h := cc.Health
	if h.Check == "none" {
		return nil
	}
	rep := &clusterReporter{metrics: a.metrics, cluster: cl, servers: make(map[string]*cluster.Server), static: h.StaticRoles()}
	var targets []health.Target
	for i, sc := range cc.Servers {
		srv := cl.Servers()[i]
		name := targetName(cl.Name, sc.Name)
		rep.servers[name] = srv
		a.targets[srv] = name
		var chk health.Checker
		switch h.Check {
		case "tcp":
			chk = health.NewTCP(sc.Address)
		case "patroni":
			chk = health.NewPatroni(health.PatroniOptions{URL: h.PatroniScheme + "://" + sc.Patroni})
		default:
			opts := health.PostgresOptions{Addr: sc.Address, User: h.User, Database: h.Database, Password: passwordSource(h)}
			if c := a.serverTLS[cl.Name]; c != nil {
				opts.TLS = c.ConnParams() // the same TLS as sessions, SCRAM channel binding when offered
			}
			chk = health.NewPostgres(opts)
		}
		targets = append(targets, health.Target{Name: name, Checker: chk})
	}
	jitter := h.Jitter
	if jitter == 0 {
		jitter = -1 // the config's explicit 0 means no jitter; health's 0 means its default
	}
	m := health.NewMonitor(health.Options{
		Interval:     h.Interval.D(),
		FastInterval: h.FastInterval.D(),
		Timeout:      h.Timeout.D(),
		Rise:         h.Rise,
		Fall:         h.Fall,
		Jitter:       jitter,
		Logger:       a.log.With("cluster", cl.Name),
		Reporter:     rep,
	}, targets)
	rep.monitor = m
	return m
}

// passwordSource picks the monitoring password's source; nil means none.
func passwordSource(h config.Health) func() (string, error) {
	switch {
	case h.PasswordFile != "":
		return health.PasswordFromFile(h.PasswordFile)
	case h.PasswordEnv != "":
		return health.PasswordFromEnv(h.PasswordEnv)
	case h.Password != "":
		pw := h.Password
		return func() (string, error) { return pw, nil }
	}
	return nil
}
