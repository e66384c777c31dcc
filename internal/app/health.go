package app

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/health"
	"github.com/pgfront/pgfront/internal/observe"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// clusterReporter turns the health monitor's findings into server states of one cluster. A
// reload replaces its target map and static flag while the loops report.
type clusterReporter struct {
	metrics *observe.Metrics
	cluster *cluster.Cluster
	servers atomic.Pointer[map[string]*cluster.Server] // by health target name
	static  atomic.Bool                                // tcp checks: roles stay as configured
	// patroniFlags: the checks are Patroni's REST API, which says noloadbalance and
	// sync_standby; other checks know nothing of them and leave them (a DCS source sets them).
	patroniFlags atomic.Bool
	monitor      *health.Monitor // set once built; hurried while there is no primary
}

// clusterHealth is the running health checking of one cluster: nil monitor for check: none.
type clusterHealth struct {
	rep  *clusterReporter
	mon  *health.Monitor
	keys map[string]string // target name -> what its checker was built from (checkerKey)
}

// hurryFor is how long the monitor checks at its fast interval after the cluster was last
// seen without a primary.
const hurryFor = 30 * time.Second

var _ health.Reporter = (*clusterReporter)(nil)

// ReportStatus implements health.Reporter.
func (r *clusterReporter) ReportStatus(target string, st health.Status) {
	srv := (*r.servers.Load())[target]
	if srv == nil {
		return
	}
	static := r.static.Load()
	if !st.LastCheck.IsZero() {
		r.metrics.ServerChecked(srv, st.CheckDuration)
	}
	r.cluster.Modify(srv, func(s *cluster.State) {
		s.Up = st.Up
		if !static && st.Role != health.RoleUnknown {
			s.Role = clusterRole(st.Role)
			s.Fenced = false // a check is the authority after an in-band fence
		}
		s.LSN = st.LSN
		s.LagSeconds = st.LagSeconds
		if r.patroniFlags.Load() {
			s.NoLoadBalance, s.SyncStandby = st.NoLoadBalance, st.SyncStandby
		}
		s.LastCheck = st.LastCheck
		s.CheckDuration = st.CheckDuration
		s.LastErr = st.LastErr
		s.TLSVerifyFailed = st.TLSVerifyFailed
	})
	if r.monitor == nil || static {
		return
	}
	// No usable primary (a failover in progress, or a split brain): check everyone at the
	// fast interval so the new primary, or the end of the split brain, is seen within
	// fast_interval, not interval.
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

// applyHealth brings a cluster's health checking in line with plan: a monitor for a new
// cluster (or a cluster whose check was none), new options and checkers where the config
// changed them, loops added for new servers and removed for servers that left. Loops of
// servers that stay keep running: their state never goes back to unknown.
func (a *App) applyHealth(old *generation, g *generation, plan *clusterPlan, note func(string, ...any)) {
	h := plan.cfg.Health
	ch := a.health[plan.cl]
	if h.Check == "none" {
		if ch != nil && ch.mon != nil {
			a.stopHealth(plan.cl)
			note("cluster %s: health checks off", plan.cl.Name)
		}
		return
	}
	targets := make(map[string]*cluster.Server, len(plan.servers))
	keys := make(map[string]string, len(plan.servers))
	for i, srv := range plan.servers {
		name := targetName(plan.cl.Name, srv.Name)
		targets[name] = srv
		keys[name] = checkerKey(plan.cfg, plan.cfg.Servers[i], g.serverTLS[plan.cl.Name] != nil)
	}
	opts := monitorOptions(h, a.log.With("cluster", plan.cl.Name))
	if ch == nil || ch.mon == nil {
		rep := &clusterReporter{metrics: a.metrics, cluster: plan.cl}
		rep.servers.Store(&targets)
		rep.static.Store(h.StaticRoles())
		rep.patroniFlags.Store(h.Check == "patroni")
		opts.Reporter = rep
		var ts []health.Target
		for i, srv := range plan.servers {
			name := targetName(plan.cl.Name, srv.Name)
			ts = append(ts, health.Target{Name: name, Checker: newChecker(plan.cfg, plan.cfg.Servers[i], g.serverTLS[plan.cl.Name])})
		}
		m := health.NewMonitor(opts, ts)
		rep.monitor = m
		a.health[plan.cl] = &clusterHealth{rep: rep, mon: m, keys: keys}
		if a.running {
			m.Start()
		}
		return
	}
	ch.rep.static.Store(h.StaticRoles())
	ch.rep.patroniFlags.Store(h.Check == "patroni")
	opts.Reporter = ch.rep
	ch.mon.SetOptions(opts)
	// Removed first (their reports stop), then the reporter learns the new targets, then new
	// loops start.
	for name := range ch.keys {
		if cur, ok := targets[name]; !ok || g.retired[(*ch.rep.servers.Load())[name]] || (*ch.rep.servers.Load())[name] != cur {
			ch.mon.RemoveTarget(name)
			delete(ch.keys, name)
		}
	}
	ch.rep.servers.Store(&targets)
	for i, srv := range plan.servers {
		name := targetName(plan.cl.Name, srv.Name)
		key := keys[name]
		prev, running := ch.keys[name]
		switch {
		case !running:
			if err := ch.mon.AddTarget(health.Target{Name: name, Checker: newChecker(plan.cfg, plan.cfg.Servers[i], g.serverTLS[plan.cl.Name])}); err != nil {
				a.log.Error("health check not started", "server", name, "err", err)
			}
		case prev != key:
			if err := ch.mon.SetChecker(name, newChecker(plan.cfg, plan.cfg.Servers[i], g.serverTLS[plan.cl.Name])); err != nil {
				a.log.Error("health checker not replaced", "server", name, "err", err)
			}
			note("server %s: health check changed (state kept)", name)
		}
		ch.keys[name] = key
	}
}

// stopHealth stops a cluster's checks (the cluster left the config, or pgfront stops).
func (a *App) stopHealth(cl *cluster.Cluster) {
	if ch := a.health[cl]; ch != nil && ch.mon != nil {
		ch.mon.Stop()
	}
	delete(a.health, cl)
}

// checkerKey is everything a server's checker is built from: a change means a new checker.
func checkerKey(cc *config.Cluster, sc *config.Server, tls bool) string {
	h := cc.Health
	return strings.Join([]string{h.Check, sc.Address, h.PatroniScheme, sc.Patroni, h.User, h.Database,
		h.PasswordFile, h.PasswordEnv, h.Password, fmt.Sprint(tls), fmt.Sprint(cc.ServerTLS)}, "\x00")
}

// newChecker builds the checker of one server.
func newChecker(cc *config.Cluster, sc *config.Server, tls *tlsconf.Client) health.Checker {
	h := cc.Health
	switch h.Check {
	case "tcp":
		return health.NewTCP(sc.Address)
	case "patroni":
		return health.NewPatroni(health.PatroniOptions{URL: h.PatroniScheme + "://" + sc.Patroni})
	}
	opts := health.PostgresOptions{Addr: sc.Address, User: h.User, Database: h.Database, Password: passwordSource(h)}
	if tls != nil {
		opts.TLS = tls.ConnParams() // the same TLS as sessions, SCRAM channel binding when offered
	}
	return health.NewPostgres(opts)
}

// monitorOptions are a cluster's check settings as the monitor takes them.
func monitorOptions(h config.Health, logger *slog.Logger) health.Options {
	jitter := h.Jitter
	if jitter == 0 {
		jitter = -1 // the config's explicit 0 means no jitter; health's 0 means its default
	}
	return health.Options{
		Interval:     h.Interval.D(),
		FastInterval: h.FastInterval.D(),
		Timeout:      h.Timeout.D(),
		Rise:         h.Rise,
		Fall:         h.Fall,
		Jitter:       jitter,
		Logger:       logger,
	}
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
