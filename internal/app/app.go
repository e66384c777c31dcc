// Package app is pgfront's composition root: it turns a loaded config into each component's
// own options, wires them together and runs them until a signal says stop.
//
//	a, err := app.New(cfg, logger)
//	if err != nil { ... }
//	if err := a.Start(); err != nil { ... }
//	a.Shutdown(ctx)
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/health"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/observe"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/sockmon"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// App is one running pgfront.
type App struct {
	cfg      *config.Config
	log      *slog.Logger
	started  time.Time
	frontend *frontend.Frontend
	clusters map[string]*cluster.Cluster
	monitors []*health.Monitor
	targets  map[*cluster.Server]string // health target name of each checked server
	byTarget map[string]*health.Monitor

	registry *prometheus.Registry
	metrics  *observe.Metrics
	sockets  *sockmon.Monitor
	admin    *admin.Listener // nil when admin.listen is ""

	serverTLS map[string]*tlsconf.Client // by cluster; absent: plain
	certs     []*tlsconf.Server          // routes' certificates, reloaded on SIGHUP
}

// New builds every component from cfg. Nothing listens until Start.
func New(cfg *config.Config, logger *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: logger, clusters: make(map[string]*cluster.Cluster),
		targets: make(map[*cluster.Server]string), byTarget: make(map[string]*health.Monitor)}
	adm := admission.New(cfg.MaxQueue)
	global := adm.NewLimit("global", cfg.MaxConn)

	var clusters []*cluster.Cluster
	for _, name := range cfg.ClusterNames() {
		cc := cfg.Clusters[name]
		var servers []*cluster.Server
		for _, sc := range cc.Servers {
			role, err := cluster.ParseRole(sc.Role)
			if err != nil {
				return nil, fmt.Errorf("cluster %s server %s: %w", name, sc.Name, err)
			}
			servers = append(servers, cluster.NewServer(name, sc.Name, sc.Address, role, sc.Weight,
				adm.NewLimit("server:"+name+"/"+sc.Name, sc.MaxConn)))
		}
		cl := cluster.NewCluster(name, servers, cc.OnMarkedDown == "keep")
		a.clusters[name] = cl
		clusters = append(clusters, cl)
	}

	if err := a.newServerTLS(); err != nil {
		return nil, err
	}
	a.newObservers(clusters)
	for _, cl := range clusters {
		if m := newMonitor(cfg.Clusters[cl.Name], cl, a); m != nil {
			a.monitors = append(a.monitors, m)
			for _, srv := range cl.Servers() {
				a.byTarget[a.targets[srv]] = m
			}
		}
	}

	var routes []*frontend.Route
	for _, name := range cfg.RouteNames() {
		rc := cfg.Routes[name]
		role, err := cluster.ParseRole(rc.Role)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", name, err)
		}
		policy, err := balance.ParsePolicy(rc.Balance)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", name, err)
		}
		fin := relay.FinAbort
		if rc.OnClientFin == "forward" {
			fin = relay.FinForward
		}
		t := rc.Timeouts
		r := &frontend.Route{
			Name:    name,
			Listen:  rc.Listen,
			Cluster: a.clusters[rc.Cluster],
			Select: cluster.Selector{
				Role:            role,
				MaxLagBytes:     int64(rc.MaxLag.Bytes),
				MaxLagTime:      rc.MaxLag.Time.D(),
				FallbackPrimary: rc.Fallback == "primary",
			},
			Balancer:       balance.New(policy),
			Limit:          adm.NewLimit("route:"+name, rc.MaxConn),
			ConnectRetries: rc.ConnectRetries,
			Startup:        t.Startup.D(),
			Connect:        t.Connect.D(),
			Queue:          t.Queue.D(),
			Relay: relay.Options{
				ClientIdle:        t.ClientIdle.D(),
				IdleInTransaction: t.IdleInTransaction.D(),
				ServerIdle:        t.ServerIdle.D(),
				ClientFin:         t.ClientFin.D(),
				ServerFin:         t.ServerFin.D(),
				OnClientFin:       fin,
			},
			ServerTLS: a.serverTLSFor(rc.Cluster),
		}
		// An SNI entry serves the same listener from another cluster: a copy of the route
		// with that cluster's servers, balancer and server TLS, sharing the route's limit.
		// The copy keeps the route's client TLS (mode, certificates, require) but no SNI map of
		// its own: a name is chosen once.
		sniRoute := func(clusterName string) *frontend.Route {
			vr := *r
			vr.Cluster = a.clusters[clusterName]
			vr.Balancer = balance.New(policy)
			vr.ServerTLS = a.serverTLSFor(clusterName)
			vr.TLS.SNI = nil
			return &vr
		}
		if err := a.routeTLS(rc, r, sniRoute); err != nil {
			return nil, err
		}
		routes = append(routes, r)
	}

	fe, err := frontend.New(frontend.Options{
		Routes:    routes,
		Admission: adm,
		Global:    global,
		KeepAlive: netx.KeepAlive{
			Idle:        cfg.TCP.KeepaliveIdle.D(),
			Interval:    cfg.TCP.KeepaliveInterval.D(),
			Count:       cfg.TCP.KeepaliveCount,
			UserTimeout: cfg.TCP.UserTimeout.D(),
		},
		Logger:        logger,
		OnFence:       a.checkNow,
		OnConnectFail: a.checkNow,
		Events:        a.metrics,
	})
	if err != nil {
		return nil, err
	}
	a.frontend = fe
	a.metrics.SetSessions(fe.SessionInfos, fe.Parked)
	if err := a.newAdmin(); err != nil {
		return nil, err
	}
	return a, nil
}

// Start binds every route and the admin listener, and starts serving.
func (a *App) Start() error {
	a.started = time.Now()
	if err := a.frontend.Listen(); err != nil {
		return err
	}
	if a.admin != nil {
		if err := a.admin.Listen(); err != nil {
			a.frontend.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	for _, name := range a.cfg.RouteNames() {
		if ta, ok := a.frontend.Addr(name).(*net.TCPAddr); ok {
			a.sockets.AddListener(name, ta.AddrPort())
		}
	}
	a.frontend.Serve()
	for _, m := range a.monitors {
		m.Start()
	}
	a.metrics.Start()
	for _, name := range a.cfg.RouteNames() {
		r := a.cfg.Routes[name]
		a.log.Info("route listening", "route", name, "addr", a.frontend.Addr(name).String(),
			"cluster", r.Cluster, "role", r.Role, "balance", r.Balance)
	}
	if a.admin != nil {
		a.admin.Serve()
		a.log.Info("admin listening", "addr", a.admin.Addr().String(), "metrics", "/metrics", "stats", "/",
			"api", "/api/v1/", "tokens", a.tokenSummary())
	}
	return nil
}

// AdminAddr is the admin listener's bound address (nil when it is off).
func (a *App) AdminAddr() net.Addr {
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}

// Registry is the Prometheus registry every collector is registered with.
func (a *App) Registry() *prometheus.Registry { return a.registry }

// Addr is the bound address of a route.
func (a *App) Addr(route string) net.Addr { return a.frontend.Addr(route) }

// Frontend exposes the running frontend (tests and, later, the admin API read it).
func (a *App) Frontend() *frontend.Frontend { return a.frontend }

// Shutdown stops accepting and lets sessions reach an idle point until ctx ends, then ends the
// rest with FATAL 57P01. The admin listener stays up until the sessions are gone, so the drain
// can be watched.
func (a *App) Shutdown(ctx context.Context) {
	a.frontend.Shutdown(ctx)
	a.stopBackground()
}

// Close ends everything at once.
func (a *App) Close() {
	a.frontend.Close()
	a.stopBackground()
}

func (a *App) stopBackground() {
	if a.admin != nil {
		a.admin.Close()
	}
	a.metrics.Stop()
	for _, m := range a.monitors {
		m.Stop()
	}
}

// checkNow asks srv's health monitor for a check at once (a session found it in recovery).
func (a *App) checkNow(srv *cluster.Server) {
	if name, ok := a.targets[srv]; ok {
		a.byTarget[name].CheckNow(name)
	}
}

// Run starts a and serves until the first signal on sigs, then shuts down gracefully within the
// configured grace period; a second signal ends everything at once.
func (a *App) Run(sigs <-chan os.Signal) error {
	if err := a.Start(); err != nil {
		return err
	}
	sig, _ := a.nextStop(sigs, nil)
	grace := a.cfg.Shutdown.Grace.D()
	a.log.Info("shutting down: ending sessions at their next idle point", "signal", sig.String(), "grace", grace,
		"sessions", a.frontend.Sessions())
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() { a.Shutdown(ctx); close(done) }()
	if sig, ok := a.nextStop(sigs, done); ok {
		a.log.Warn("second signal: ending every session now", "signal", sig.String())
		cancel()
		<-done
	}
	a.log.Info("stopped")
	return nil
}

// nextStop waits for a signal that stops pgfront (ok) or for done to close; a SIGHUP on the way
// re-reads the routes' certificate files.
func (a *App) nextStop(sigs <-chan os.Signal, done <-chan struct{}) (sig os.Signal, ok bool) {
	for {
		select {
		case sig = <-sigs:
		case <-done:
			return nil, false
		}
		if sig != syscall.SIGHUP {
			return sig, true
		}
		if err := a.ReloadCertificates(); err != nil {
			a.log.Warn("SIGHUP: certificate reload failed; the certificates in use are kept", "err", err)
		} else {
			a.log.Info("SIGHUP: certificates reloaded", "routes", len(a.certs))
		}
	}
}

// NewLogger builds the slog logger the config asks for.
func NewLogger(format, level string, w io.Writer) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
