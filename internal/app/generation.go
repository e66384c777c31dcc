package app

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/balance"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/observe"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/tlsconf"
)

// A generation is what one config compiles to, built in full before anything running changes:
// the routes new clients get (each a fresh, immutable frontend.Route), the clusters and servers
// they reach (the running ones where the config keeps them, so health state, load counts and
// limits carry over), TLS material and admin tokens read from their files. Start and reload
// are the same two steps: build a generation from a config (which can fail, changing nothing),
// then apply it to what runs (which cannot fail, except binding new listen addresses, done
// first).
type generation struct {
	cfg    *config.Config
	n      uint64 // 1 at start, +1 per applied reload
	hash   string // of the config's content, for metrics and ctl config
	routes []*frontend.Route
	// clusters by name: the running *cluster.Cluster kept or a new one, with the servers the
	// config lists (kept ones by identity: same name and address).
	clusters   map[string]*clusterPlan
	routeLimit map[string]*admission.Limit
	serverTLS  map[string]*tlsconf.Client // by cluster; absent: plain
	certs      []*tlsconf.Server          // routes' certificates, reloaded on SIGHUP
	routeCerts map[string]*tlsconf.Server // the same, by route (metrics)
	readToken  []byte
	adminToken []byte
	// The fleet: the shared secret (nil: none), this instance's name and the static peers.
	fleetSecret []byte
	fleetName   string
	advertise   string // fleet.advertise as configured ("" = derived from the admin listener)
	peers       []fleet.Peer
	dnsPeers    []string // fleet.dns_peers: names whose every address is a peer
	// retired: servers of the running generation the config no longer lists (or moved).
	retired map[*cluster.Server]bool
}

// clusterPlan is one cluster of a generation.
type clusterPlan struct {
	cl      *cluster.Cluster
	cfg     *config.Cluster
	servers []*cluster.Server // in file order, lined up with cfg.Servers
	isNew   bool
	dcs     *dcsPlan // nil: no DCS role source
	// serversChanged: the cluster's server list differs from the running one.
	serversChanged bool
}

// configHash identifies a config's content (secrets included in the digest, never shown).
func configHash(cfg *config.Config) string {
	c := *cfg
	c.Path = ""
	b, _ := json.Marshal(&c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// build compiles cfg into a generation against what runs now (a.gen, nil at start). It reads
// every file the config names and parses every choice; nothing running is touched.
func (a *App) build(cfg *config.Config) (*generation, error) {
	g := &generation{cfg: cfg, n: 1, hash: configHash(cfg), clusters: make(map[string]*clusterPlan),
		routeLimit: make(map[string]*admission.Limit), retired: make(map[*cluster.Server]bool)}
	old := a.gen
	if old != nil {
		g.n = old.n + 1
	}
	var err error
	if g.serverTLS, err = newServerTLS(cfg); err != nil {
		return nil, err
	}
	if g.readToken, err = readToken("admin.read_token", cfg.Admin.ReadTokenFile, cfg.Admin.ReadTokenEnv); err != nil {
		return nil, err
	}
	if g.adminToken, err = readToken("admin.admin_token", cfg.Admin.AdminTokenFile, cfg.Admin.AdminTokenEnv); err != nil {
		return nil, err
	}
	if err := buildFleet(g, cfg.Fleet); err != nil {
		return nil, err
	}

	for _, name := range cfg.ClusterNames() {
		cc := a.withMembers(name, cfg.Clusters[name]) // servers_from_members: the DCS adds servers
		plan := &clusterPlan{cfg: cc}
		if plan.dcs, err = buildDCS(cc); err != nil {
			return nil, err
		}
		var running []*cluster.Server
		if old != nil && old.clusters[name] != nil {
			plan.cl = old.clusters[name].cl
			running = plan.cl.Servers()
		}
		for _, sc := range cc.Servers {
			role, err := cluster.ParseRole(sc.Role)
			if err != nil {
				return nil, fmt.Errorf("cluster %s server %s: %w", name, sc.Name, err)
			}
			// A server is the same server while its name and address are: it keeps its
			// health state, its sessions and its limit's count.
			i := slices.IndexFunc(running, func(s *cluster.Server) bool { return s.Name == sc.Name && s.Addr == sc.Address })
			if i >= 0 {
				plan.servers = append(plan.servers, running[i])
				continue
			}
			plan.servers = append(plan.servers, cluster.NewServer(name, sc.Name, sc.Address, role, sc.Weight,
				a.adm.NewLimit("server:"+name+"/"+sc.Name, sc.MaxConn)))
		}
		if plan.cl == nil {
			plan.isNew = true
			plan.cl = cluster.NewCluster(name, plan.servers, cc.OnMarkedDown == "keep")
		}
		for _, s := range running {
			if !slices.Contains(plan.servers, s) {
				g.retired[s] = true
			}
		}
		g.clusters[name] = plan
	}
	if old != nil {
		for name, plan := range old.clusters {
			if g.clusters[name] == nil {
				for _, s := range plan.cl.Servers() {
					g.retired[s] = true
				}
			}
		}
	}

	for _, name := range cfg.RouteNames() {
		r, err := a.buildRoute(g, cfg.Routes[name])
		if err != nil {
			return nil, err
		}
		g.routes = append(g.routes, r)
	}
	return g, nil
}

// buildRoute compiles one route of g.
func (a *App) buildRoute(g *generation, rc *config.Route) (*frontend.Route, error) {
	name := rc.Name
	role, err := cluster.ParseRole(rc.Role)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", name, err)
	}
	policy, err := balance.ParsePolicy(rc.Balance)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", name, err)
	}
	limit := a.routeLimits[name]
	if limit == nil {
		limit = a.adm.NewLimit("route:"+name, rc.MaxConn)
	}
	g.routeLimit[name] = limit
	fin := relay.FinAbort
	if rc.OnClientFin == "forward" {
		fin = relay.FinForward
	}
	t := rc.Timeouts
	r := &frontend.Route{
		Name:    name,
		Listen:  rc.Listen,
		Cluster: g.clusters[rc.Cluster].cl,
		Select: cluster.Selector{
			Role:            role,
			MaxLagBytes:     int64(rc.MaxLag.Bytes),
			MaxLagTime:      rc.MaxLag.Time.D(),
			FallbackPrimary: rc.Fallback == "primary",
			SyncStandbyOnly: rc.SyncStandbyOnly,
		},
		Balancer:       balance.New(policy),
		Limit:          limit,
		ConnectRetries: rc.ConnectRetries,
		Startup:        t.Startup.D(),
		Connect:        t.Connect.D(),
		Queue:          t.Queue.D(),
		FailoverWait:   t.FailoverWait.D(),
		ClientTCP:      keepAlive(rc.TCP.Client),
		ServerTCP:      keepAlive(rc.TCP.Server),
		Relay: relay.Options{
			ClientIdle:        t.ClientIdle.D(),
			IdleInTransaction: t.IdleInTransaction.D(),
			ServerIdle:        t.ServerIdle.D(),
			ClientFin:         t.ClientFin.D(),
			ServerFin:         t.ServerFin.D(),
			OnClientFin:       fin,
		},
		ServerTLS:           serverTLSFor(g.serverTLS, rc.Cluster),
		CancelFallbackRate:  g.cfg.Fleet.CancelFallbackRate,
		CancelFallbackBurst: g.cfg.Fleet.CancelFallbackBurst,
	}
	if pp := rc.ProxyProtocol; pp != nil {
		r.ProxyProtocol = &frontend.ProxyProtocol{Trusted: slices.Clone(pp.Trusted)}
	}
	// An SNI entry serves the same listener from another cluster: a copy of the route with
	// that cluster's servers, balancer and server TLS, sharing the route's limit. The copy
	// keeps the route's client TLS (mode, certificates, require) but no SNI map of its own: a
	// name is chosen once.
	sniRoute := func(clusterName string) *frontend.Route {
		vr := *r
		vr.Cluster = g.clusters[clusterName].cl
		vr.Balancer = balance.New(policy)
		vr.ServerTLS = serverTLSFor(g.serverTLS, clusterName)
		return &vr
	}
	if err := a.routeTLS(g, rc, r, sniRoute); err != nil {
		return nil, err
	}
	return r, nil
}

// apply makes g the running generation. Listeners for new addresses are bound first (bind is
// false only in New, whose Start binds them): if that fails nothing has changed. The rest
// cannot fail. It returns one line per change, for the log and ctl reload.
func (a *App) apply(g *generation, bind bool) ([]string, error) {
	old := a.gen
	var changes []string
	note := func(format string, args ...any) { changes = append(changes, fmt.Sprintf(format, args...)) }

	var adm *admin.Listener
	if ac := g.cfg.Admin; ac.Listen != "" && (old == nil || old.cfg.Admin.Listen != ac.Listen) {
		var err error
		if adm, err = a.newAdmin(ac.Listen, g); err != nil {
			return nil, err
		}
		if bind {
			if err := a.listenAdmin(adm, ac.Listen); err != nil {
				adm.Close()
				return nil, fmt.Errorf("admin listener: %w", err)
			}
		}
	}
	var removedRoutes []string
	if bind {
		var err error
		if removedRoutes, err = a.frontend.Apply(g.routes); err != nil {
			if adm != nil {
				adm.Close()
			}
			return nil, err
		}
	} else {
		a.frontend.SetRoutes(g.routes)
	}

	// From here on nothing fails.
	a.adm.SetMaxQueue(g.cfg.MaxQueue)
	a.adm.SetMax(a.global, g.cfg.MaxConn)
	for name, l := range g.routeLimit {
		a.adm.SetMax(l, g.cfg.Routes[name].MaxConn)
	}
	a.routeLimits = g.routeLimit
	a.fleet.Configure(g.fleetSecret, g.fleetName)
	a.fleet.SetPeers("config", g.peers)
	if ls, ok := a.log.Handler().(*logSwitch); ok {
		ls.set(g.cfg.Log.Format, g.cfg.Log.Level)
	}

	for _, name := range slices.Sorted(maps.Keys(g.clusters)) {
		plan := g.clusters[name]
		for i, srv := range plan.servers {
			sc := plan.cfg.Servers[i]
			srv.SetWeight(sc.Weight)
			a.adm.SetMax(srv.Limit, sc.MaxConn)
		}
		plan.cl.SetKeepSessions(plan.cfg.OnMarkedDown == "keep")
		plan.cl.SetStaticRoles(plan.cfg.Health.StaticRoles())
		if plan.isNew {
			if old != nil {
				note("cluster %s: added (%d servers)", name, len(plan.servers))
			}
		} else if !slices.Equal(plan.cl.Servers(), plan.servers) {
			plan.cl.SetServers(plan.servers)
			plan.serversChanged = true
		}
		a.applyHealth(old, g, plan, note)
		a.applyDCS(plan, note)
	}
	if old != nil {
		for name, plan := range old.clusters {
			if g.clusters[name] == nil {
				a.stopHealth(plan.cl)
				a.stopDCS(plan.cl)
				note("cluster %s: removed", name)
			}
		}
	}
	a.metrics.SetTopology(observeRoutes(g), observeClusters(g), g.cfg.MaxConn)
	al := g.cfg.Alerts
	a.metrics.SetAlerts(observe.Thresholds{
		CloseWait:     al.CloseWait,
		FinWait2:      al.FinWait2,
		HalfClosedAge: al.HalfClosedAge.D(),
		Queue:         al.Queue,
		FDUsage:       al.FDUsage,
	}, al.SampleInterval.D())
	if bind {
		a.trackListeners(old, g)
	}

	// Sessions whose route or server left the config end at their next transaction boundary,
	// within shutdown.grace.
	if len(removedRoutes) > 0 || len(g.retired) > 0 {
		gone := make(map[string]bool, len(removedRoutes))
		for _, n := range removedRoutes {
			gone[n] = true
		}
		n := a.frontend.Retire(func(route string, srv *cluster.Server) bool { return gone[route] || g.retired[srv] },
			relay.CauseRemoved, g.cfg.Shutdown.Grace.D())
		for s := range g.retired {
			note("server %s/%s (%s): removed", s.Cluster, s.Name, s.Addr)
		}
		if n > 0 {
			note("%d sessions of removed routes or servers end at their next transaction boundary", n)
		}
	}

	if old != nil {
		routeChanges(old.cfg, g.cfg, note)
		settingChanges(old.cfg, g.cfg, note)
	}
	// The admin listener: a new address replaces the listener; tokens apply at once.
	switch {
	case adm != nil:
		prev := a.admin
		a.admin = adm
		if a.running && bind {
			adm.Serve()
		}
		if prev != nil {
			a.closeAdminLater(prev)
		}
	case g.cfg.Admin.Listen == "" && a.admin != nil:
		a.closeAdminLater(a.admin)
		a.admin = nil
		note("admin listener: closed")
	case a.admin != nil:
		a.admin.SetTokens(g.readToken, g.adminToken)
	}
	a.certs = g.certs
	a.gen = g
	a.applyDCSPeers(g, note)
	a.applyDNSPeers(g, note)
	if old != nil { // the start's generation went to observe.New
		a.metrics.ConfigApplied(g.n, g.hash, time.Now())
	}
	return changes, nil
}

// closeAdminLater closes a replaced admin listener on a goroutine of its own: the reload may
// have come through it (POST /api/v1/reload), and Close waits for that very request.
// stopBackground waits for it.
func (a *App) closeAdminLater(l *admin.Listener) {
	a.closing.Add(1)
	go func() {
		defer a.closing.Done()
		l.Close()
	}()
}

// trackListeners tells the socket monitor which addresses are the routes' listeners.
func (a *App) trackListeners(old, g *generation) {
	if old != nil {
		for _, r := range old.routes {
			if ap, ok := a.listening[r.Name]; ok && g.cfg.Routes[r.Name] == nil {
				a.sockets.RemoveListener(ap)
				delete(a.listening, r.Name)
			}
		}
	}
	for _, r := range g.routes {
		ta, ok := a.frontend.Addr(r.Name).(*net.TCPAddr)
		if !ok {
			continue
		}
		ap := ta.AddrPort()
		if prev, ok := a.listening[r.Name]; ok && prev != ap {
			a.sockets.RemoveListener(prev)
		}
		a.listening[r.Name] = ap
		a.sockets.AddListener(r.Name, ap)
	}
}

// keepAlive is one side of a route's tcp settings as socket options.
func keepAlive(s config.TCPSide) netx.KeepAlive {
	return netx.KeepAlive{
		Idle:        s.KeepaliveIdle.D(),
		Interval:    s.KeepaliveInterval.D(),
		Count:       s.KeepaliveCount,
		UserTimeout: s.UserTimeout.D(),
	}
}

// observeRoutes are the routes of g as the metrics know them.
func observeRoutes(g *generation) []observe.Route {
	var routes []observe.Route
	for _, name := range g.cfg.RouteNames() {
		rc := g.cfg.Routes[name]
		r := observe.Route{Name: name, Clusters: []*cluster.Cluster{g.clusters[rc.Cluster].cl}, MaxConn: rc.MaxConn}
		if c := g.routeCerts[name]; c != nil {
			r.Certificate = c
		}
		for _, cl := range slices.Sorted(maps.Values(rc.TLS.SNI)) {
			if c := g.clusters[cl].cl; !slices.Contains(r.Clusters, c) {
				r.Clusters = append(r.Clusters, c)
			}
		}
		routes = append(routes, r)
	}
	return routes
}

func observeClusters(g *generation) []*cluster.Cluster {
	var out []*cluster.Cluster
	for _, name := range g.cfg.ClusterNames() {
		out = append(out, g.clusters[name].cl)
	}
	return out
}

// routeChanges notes routes added, removed and changed between two configs.
func routeChanges(old, cfg *config.Config, note func(string, ...any)) {
	for _, name := range cfg.RouteNames() {
		o, ok := old.Routes[name]
		switch {
		case !ok:
			note("route %s: added on %s", name, cfg.Routes[name].Listen)
		case !sameJSON(o, cfg.Routes[name]):
			what := "changed (new sessions use the new settings)"
			if o.Listen != cfg.Routes[name].Listen {
				what = fmt.Sprintf("moved from %s to %s", o.Listen, cfg.Routes[name].Listen)
			}
			note("route %s: %s", name, what)
		}
	}
	for _, name := range old.RouteNames() {
		if _, ok := cfg.Routes[name]; !ok {
			note("route %s: removed (listener on %s closed)", name, old.Routes[name].Listen)
		}
	}
}

// settingChanges notes the global settings that changed.
func settingChanges(old, cfg *config.Config, note func(string, ...any)) {
	pairs := []struct {
		name   string
		before any
		after  any
	}{
		{"log", old.Log, cfg.Log},
		{"maxconn", old.MaxConn, cfg.MaxConn},
		{"max_queue", old.MaxQueue, cfg.MaxQueue},
		{"shutdown", old.Shutdown, cfg.Shutdown},
		{"tcp", old.TCP, cfg.TCP},
		{"timeouts", old.Timeouts, cfg.Timeouts},
		{"admin", old.Admin, cfg.Admin},
		{"alerts", old.Alerts, cfg.Alerts},
		{"fleet", old.Fleet, cfg.Fleet},
	}
	for _, p := range pairs {
		if !sameJSON(p.before, p.after) {
			note("%s: changed", p.name)
		}
	}
	for _, name := range cfg.ClusterNames() {
		if o, ok := old.Clusters[name]; ok && !sameJSON(o, cfg.Clusters[name]) {
			note("cluster %s: changed", name)
		}
	}
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
