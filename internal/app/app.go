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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/handover"
	"github.com/pgfront/pgfront/internal/memtrim"
	"github.com/pgfront/pgfront/internal/observe"
	"github.com/pgfront/pgfront/internal/sockmon"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// App is one running pgfront.
type App struct {
	log      *slog.Logger
	started  time.Time
	adm      *admission.Controller
	global   *admission.Limit
	frontend *frontend.Frontend
	registry *prometheus.Registry
	metrics  *observe.Metrics
	sockets  *sockmon.Monitor
	// fleet issues the cancel keys clients see and forwards cancels to peer instances.
	fleet *fleet.Fleet

	// reloadMu serializes builds and applies (start, reloads): one generation at a time. The
	// fields below it are owned by whoever holds it.
	reloadMu    sync.Mutex
	gen         *generation
	routeLimits map[string]*admission.Limit
	health      map[*cluster.Cluster]*clusterHealth
	dcs         map[*cluster.Cluster]*clusterDCS // clusters with a DCS role source
	dcsPeers    map[string]*dcsPeers             // fleet discovery, by cluster name
	dnsPeers    *dnsPeers                        // fleet discovery through DNS (nil: none)
	trimmer     *memtrim.Trimmer                 // returns a login burst's memory (from Start)
	admin       *admin.Listener                  // nil when admin.listen is ""
	certs       []*tlsconf.Server
	listening   map[string]netip.AddrPort // routes' bound addresses, for the socket monitor
	running     bool                      // Start ran
	taken       *handover.Taken           // listeners handed over by the previous process, during Start
	closing     sync.WaitGroup            // admin listeners a reload replaced, closing
	// handoverPath is Run's hand-over socket ("" none), set before anything is accepted.
	handoverPath string
	drainingPath atomic.Pointer[string] // this process's socket for relayed cancels, once draining

	// The rebuild loop (servers_from_members): signalled through rebuildCh (buffered), runs
	// from Start until rebuildStop closes, then closes rebuildDone.
	rebuildCh      chan struct{}
	rebuildStop    chan struct{}
	rebuildDone    chan struct{}
	rebuildStarted bool // guarded by reloadMu

	// draining: pgfront takes no new clients (SIGTERM, or a hand-over to a new process); the
	// readiness probe says so.
	draining atomic.Pointer[string]

	// lookupIP resolves fleet.dns_peers names (net.DefaultResolver's; tests replace it).
	lookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// New builds every component from cfg. Nothing listens until Start.
func New(cfg *config.Config, logger *slog.Logger) (*App, error) {
	a := &App{log: logger, adm: admission.New(cfg.MaxQueue), routeLimits: make(map[string]*admission.Limit),
		health: make(map[*cluster.Cluster]*clusterHealth), listening: make(map[string]netip.AddrPort),
		dcs: make(map[*cluster.Cluster]*clusterDCS), dcsPeers: make(map[string]*dcsPeers), rebuildCh: make(chan struct{}, 1),
		rebuildStop: make(chan struct{}), rebuildDone: make(chan struct{})}
	a.lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	a.global = a.adm.NewLimit("global", cfg.MaxConn)
	a.registry = prometheus.NewRegistry()
	a.sockets = sockmon.New(sockmon.Options{})
	a.fleet = fleet.New(fleet.Options{Logger: logger})
	a.metrics = observe.New(observe.Options{
		Registerer:   a.registry,
		MaxConn:      cfg.MaxConn,
		Sockets:      a.sockets,
		Interval:     cfg.Alerts.SampleInterval.D(),
		Logger:       logger,
		ConfigHash:   configHash(cfg),
		PeerCounters: a.fleet.Counters,
		PeerStatuses: a.fleet.PeerStatuses,
	})
	fe, err := frontend.New(frontend.Options{
		Admission:     a.adm,
		Global:        a.global,
		Logger:        logger,
		Listen:        func(route, addr string) (net.Listener, error) { return a.claim("route", route, addr), nil },
		OnFence:       a.checkNow,
		OnConnectFail: a.checkNow,
		Events:        a.metrics,
		ForwardCancel: a.forwardCancel,
		PeerCancel:    a.fleet.Forward,
		IssueKey:      a.fleet.Issue,
	})
	if err != nil {
		return nil, err
	}
	a.frontend = fe
	a.metrics.SetSessions(fe.SessionInfos, fe.Parked)
	g, err := a.build(cfg)
	if err != nil {
		fe.Close()
		return nil, err
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if _, err := a.apply(g, false); err != nil {
		fe.Close()
		return nil, err
	}
	return a, nil
}

// Config is the running configuration.
func (a *App) Config() *config.Config {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.gen.cfg
}

// Start binds every route and the admin listener, and starts serving.
func (a *App) Start() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.started = time.Now()
	cfg := a.gen.cfg
	if err := a.frontend.Listen(); err != nil {
		return err
	}
	if a.admin != nil {
		if err := a.listenAdmin(a.admin, cfg.Admin.Listen); err != nil {
			a.frontend.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	a.trackListeners(nil, a.gen)
	a.running = true
	a.frontend.Serve()
	for _, h := range a.health {
		if h.mon != nil {
			h.mon.Start()
		}
	}
	a.startDCS()
	a.metrics.Start()
	a.trimmer = memtrim.Start(memtrim.Options{})
	for _, name := range cfg.RouteNames() {
		r := cfg.Routes[name]
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

// listenAdmin binds the admin listener on addr, or adopts the one handed over for it.
func (a *App) listenAdmin(l *admin.Listener, addr string) error {
	if ln := a.claim("admin", "", addr); ln != nil {
		return l.Adopt(ln)
	}
	return l.Listen()
}

// Reload re-reads the config file and applies it. An invalid file (or a listen address that
// cannot be bound) changes nothing; the error says why, one file:line problem per line.
func (a *App) Reload() ([]string, error) {
	start := time.Now()
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	changes, err := a.reloadLocked()
	if err != nil {
		a.metrics.ConfigReloadFailed()
		a.log.Error("config reload failed; the running config is unchanged", "file", a.gen.cfg.Path, "err", err.Error())
		return nil, err
	}
	a.log.Info("config reloaded", "file", a.gen.cfg.Path, "generation", a.gen.n, "hash", a.gen.hash,
		"changes", len(changes), "took", time.Since(start))
	for _, c := range changes {
		a.log.Info("config change", "change", c)
	}
	return changes, nil
}

func (a *App) reloadLocked() ([]string, error) {
	path := a.gen.cfg.Path
	if path == "" {
		return nil, errors.New("the running config was not loaded from a file: nothing to re-read")
	}
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		a.log.Warn("config: " + w.String())
	}
	g, err := a.build(cfg)
	if err != nil {
		return nil, err
	}
	return a.apply(g, a.running)
}

// AdminAddr is the admin listener's bound address (nil when it is off).
func (a *App) AdminAddr() net.Addr {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}

// Registry is the Prometheus registry every collector is registered with.
func (a *App) Registry() *prometheus.Registry { return a.registry }

// Addr is the bound address of a route.
func (a *App) Addr(route string) net.Addr { return a.frontend.Addr(route) }

// Fleet is this instance's fleet: its cancel keys and peers (a discovery feeds SetPeers).
func (a *App) Fleet() *fleet.Fleet { return a.fleet }

// Frontend exposes the running frontend (tests and, later, the admin API read it).
func (a *App) Frontend() *frontend.Frontend { return a.frontend }

// Shutdown stops accepting and lets sessions reach an idle point until ctx ends, then ends the
// rest with FATAL 57P01. Health checks go on until the last session is gone (a failover during
// the drain still ends sessions on a demoted primary); the admin listener stays up too, so the
// drain can be watched, and its readiness probe answers 503.
func (a *App) Shutdown(ctx context.Context) {
	a.setDraining("shutting down")
	a.frontend.Shutdown(ctx)
	a.stopBackground()
}

// Close ends everything at once.
func (a *App) Close() {
	a.setDraining("closing")
	a.frontend.Close()
	a.stopBackground()
}

func (a *App) setDraining(why string) { a.draining.CompareAndSwap(nil, &why) }

func (a *App) stopBackground() {
	a.reloadMu.Lock()
	adm := a.admin
	a.admin = nil
	a.reloadMu.Unlock()
	if adm != nil {
		adm.Close() // outside the lock: a reload request it waits for takes the lock
	}
	a.closing.Wait()
	a.stopAllDCS()
	a.reloadMu.Lock()
	trimmer := a.trimmer
	a.trimmer = nil
	a.reloadMu.Unlock()
	if trimmer != nil {
		trimmer.Stop()
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.metrics.Stop()
	for cl := range a.health {
		a.stopHealth(cl)
	}
}

// checkNow asks srv's health monitor for a check at once (a session found it in recovery, or
// could not connect).
func (a *App) checkNow(srv *cluster.Server) {
	a.reloadMu.Lock()
	plan := a.gen.clusters[srv.Cluster]
	var h *clusterHealth
	if plan != nil {
		h = a.health[plan.cl]
	}
	a.reloadMu.Unlock()
	if h != nil && h.mon != nil {
		h.mon.CheckNow(targetName(srv.Cluster, srv.Name))
	}
}
