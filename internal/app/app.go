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

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/health"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/relay"
)

// App is one running pgfront.
type App struct {
	cfg      *config.Config
	log      *slog.Logger
	frontend *frontend.Frontend
	clusters map[string]*cluster.Cluster
	monitors []*health.Monitor
	targets  map[*cluster.Server]string // health target name of each checked server
	byTarget map[string]*health.Monitor
}

// New builds every component from cfg. Nothing listens until Start.
func New(cfg *config.Config, logger *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: logger, clusters: make(map[string]*cluster.Cluster),
		targets: make(map[*cluster.Server]string), byTarget: make(map[string]*health.Monitor)}
	adm := admission.New(cfg.MaxQueue)
	global := adm.NewLimit("global", cfg.MaxConn)

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
		if m := newMonitor(cc, cl, a); m != nil {
			a.monitors = append(a.monitors, m)
			for _, srv := range servers {
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
		routes = append(routes, &frontend.Route{
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
		})
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
	})
	if err != nil {
		return nil, err
	}
	a.frontend = fe
	return a, nil
}

// Start binds every route and starts serving.
func (a *App) Start() error {
	if err := a.frontend.Listen(); err != nil {
		return err
	}
	a.frontend.Serve()
	for _, m := range a.monitors {
		m.Start()
	}
	for _, name := range a.cfg.RouteNames() {
		r := a.cfg.Routes[name]
		a.log.Info("route listening", "route", name, "addr", a.frontend.Addr(name).String(),
			"cluster", r.Cluster, "role", r.Role, "balance", r.Balance)
	}
	return nil
}

// Addr is the bound address of a route.
func (a *App) Addr(route string) net.Addr { return a.frontend.Addr(route) }

// Frontend exposes the running frontend (tests and, later, the admin API read it).
func (a *App) Frontend() *frontend.Frontend { return a.frontend }

// Shutdown stops accepting and lets sessions reach an idle point until ctx ends, then ends the
// rest with FATAL 57P01.
func (a *App) Shutdown(ctx context.Context) {
	a.frontend.Shutdown(ctx)
	a.stopMonitors()
}

// Close ends everything at once.
func (a *App) Close() {
	a.frontend.Close()
	a.stopMonitors()
}

func (a *App) stopMonitors() {
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
	sig := <-sigs
	grace := a.cfg.Shutdown.Grace.D()
	a.log.Info("shutting down: ending sessions at their next idle point", "signal", sig.String(), "grace", grace,
		"sessions", a.frontend.Sessions())
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() { a.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case sig = <-sigs:
		a.log.Warn("second signal: ending every session now", "signal", sig.String())
		cancel()
		<-done
	}
	a.log.Info("stopped")
	return nil
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
