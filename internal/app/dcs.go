package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/dcs"
	"github.com/pgfront/pgfront/internal/health"
	"github.com/pgfront/pgfront/internal/observe"
)

// The DCS role source: a dcs.Watcher per cluster with a dcs section, whose views become
// server states at once (leader key → Leader, member role → Role), while the node checks go
// on for up/down and lag and the in-band fence still confirms a primary at login. With
// servers_from_members the members also supply servers, applied through a rebuild of the
// running config, the path a reload takes.

// dcsPlan is what a generation builds for one cluster's dcs section: the watcher's options
// (secrets and TLS files read) and what they were built from.
type dcsPlan struct {
	key         string // the section as configured: a change means a new watcher
	opts        dcs.Options
	fromMembers bool
}

// buildDCS reads what cc's dcs section names (password, TLS files); nil without one.
func buildDCS(cc *config.Cluster) (*dcsPlan, error) {
	d := cc.DCS
	if d == nil {
		return nil, nil
	}
	e := d.Etcd
	key, _ := json.Marshal(e)
	p := &dcsPlan{key: string(key), fromMembers: d.ServersFromMembers, opts: dcs.Options{
		Endpoints: slices.Clone(e.Hosts), Namespace: e.Namespace, Scope: e.Scope, Username: e.Username,
	}}
	fail := func(err error) (*dcsPlan, error) { return nil, fmt.Errorf("cluster %s dcs: %w", cc.Name, err) }
	switch {
	case e.PasswordFile != "":
		b, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return fail(fmt.Errorf("password_file: %w", err))
		}
		p.opts.Password = strings.TrimRight(string(b), "\r\n")
	case e.PasswordEnv != "":
		v, ok := os.LookupEnv(e.PasswordEnv)
		if !ok {
			return fail(fmt.Errorf("password_env: environment variable %s is not set", e.PasswordEnv))
		}
		p.opts.Password = v
	}
	if e.TLSOn() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if e.TLS.CAFile != "" {
			b, err := os.ReadFile(e.TLS.CAFile)
			if err != nil {
				return fail(fmt.Errorf("tls.ca_file: %w", err))
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return fail(fmt.Errorf("tls.ca_file %s: no PEM certificate", e.TLS.CAFile))
			}
			tc.RootCAs = pool
		}
		if e.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(e.TLS.CertFile, e.TLS.KeyFile)
			if err != nil {
				return fail(fmt.Errorf("tls client certificate: %w", err))
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		p.opts.TLS = tc
		// Plain host:port endpoints talk TLS too: the client picks TLS by its config.
	}
	return p, nil
}

// clusterDCS is the running DCS role source of one cluster.
type clusterDCS struct {
	key     string
	w       *dcs.Watcher
	src     *dcsSource
	started bool // guarded by reloadMu
}

// start starts the watcher and the confirmation loop.
func (d *clusterDCS) start() {
	d.started = true
	go d.src.confirmLoop()
	d.w.Start()
}

// stop stops them; the watcher's callback is not called after it returns.
func (d *clusterDCS) stop() {
	d.w.Stop()
	close(d.src.stop)
	if d.started {
		<-d.src.confirmDone
	}
}

// dcsSource turns one cluster's DCS views into server states. onView runs on the watcher's
// goroutine and never blocks: it takes only the cluster's state lock (Modify, SetLeader) and
// its own, wakes health loops (CheckNow never blocks) and signals a rebuild through a
// buffered channel.
type dcsSource struct {
	cl      *cluster.Cluster
	log     *slog.Logger
	metrics *observe.Metrics
	monitor atomic.Pointer[health.Monitor] // the cluster's node checks; nil for check: none
	// fromMembers is servers_from_members; rebuild is told (never blocking) when the
	// members' servers change.
	fromMembers atomic.Bool
	rebuild     func()

	// confirm is told (never blocking) the server that newly holds the leader key while its
	// member key does not say primary yet; confirmLoop checks it until a check does.
	confirm     chan string
	stop        chan struct{} // closed by stopDCS: confirmLoop returns
	confirmDone chan struct{}

	// applyMu serialises applying views: the watcher's and reapply's.
	applyMu sync.Mutex
	mu      struct {
		sync.Mutex
		view      dcs.View  // the latest view (Known false: none)
		since     time.Time // of the latest change of Known
		changes   uint64    // leader changes seen
		leader    string    // holder of the leader key in the last known view
		hadLeader bool      // a known view was seen
		primary   string    // server set primary by the DCS (leader with role primary), for the fence rule
		members   string    // the members' servers at the last rebuild signal
	}
}

// onView is the watcher's OnView.
func (s *dcsSource) onView(v dcs.View) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.apply(v)
}

// reapply applies the latest view again, to servers a rebuild added.
func (s *dcsSource) reapply() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	v := s.mu.view
	known := !s.mu.since.IsZero()
	s.mu.Unlock()
	if known {
		s.apply(v)
	}
}

// apply applies a view to the cluster's servers. applyMu is held.
func (s *dcsSource) apply(v dcs.View) {
	name := s.cl.Name
	now := time.Now()
	s.mu.Lock()
	if s.mu.view.Known != v.Known || s.mu.since.IsZero() {
		s.mu.since = now
	}
	s.mu.view = v
	leaderChanged := v.Known && (!s.mu.hadLeader || s.mu.leader != v.Leader)
	if leaderChanged && s.mu.hadLeader {
		s.mu.changes++
	}
	prevLeader, hadLeader := s.mu.leader, s.mu.hadLeader
	if v.Known {
		s.mu.leader, s.mu.hadLeader = v.Leader, true
	}
	s.mu.Unlock()

	s.metrics.DCSUp(name, v.Known)
	if !v.Known {
		s.cl.SetLeader("", false) // node checks alone decide until the view is back
		s.setPrimary("")
		return
	}
	if leaderChanged && hadLeader {
		s.metrics.DCSLeaderChanged(name)
		s.log.Info("dcs: leader changed", "from", prevLeader, "to", v.Leader, "revision", v.Revision)
	}
	servers := s.cl.Servers()
	members := matchMembers(servers, v.Members)
	leaderServer := v.Leader // a member that is none of the servers: every server LeaderNo
	for srv, m := range members {
		if m.Name == v.Leader && v.Leader != "" {
			leaderServer = srv.Name
		}
	}
	if v.Leader == "" {
		leaderServer = ""
	}
	s.cl.SetLeader(leaderServer, true)
	newPrimary := ""
	for _, srv := range servers {
		m, ok := members[srv]
		if !ok {
			continue
		}
		isLeader := srv.Name == leaderServer && leaderServer != ""
		// The sync key names standbys of the leader it names: after a failover it is stale
		// until Patroni rewrites it (Patroni's own sync.leader_matches check).
		sync := v.Sync.Leader == v.Leader && slices.Contains(v.Sync.SyncStandbys, m.Name)
		var role cluster.Role
		switch {
		case isLeader && m.Primary():
			role = cluster.RolePrimary
			newPrimary = srv.Name
		case !isLeader && m.Replica():
			role = cluster.RoleReplica
		}
		unfence := role == cluster.RolePrimary && s.primary() != srv.Name
		s.cl.Modify(srv, func(st *cluster.State) {
			if role != cluster.RoleUnknown {
				st.Role = role
			}
			if unfence {
				st.Fenced = false // the DCS newly says so: as a check would
			}
			st.NoLoadBalance = m.Tags.NoLoadBalance
			st.SyncStandby = sync
		})
	}
	s.setPrimary(newPrimary)
	if leaderChanged && leaderServer != "" && newPrimary != leaderServer {
		s.confirmLeader(leaderServer)
	}
	if mon := s.monitor.Load(); mon != nil && leaderChanged {
		// The node checks confirm (and learn lag) at once rather than at their interval, and
		// at the fast interval while the failover settles.
		mon.Hurry(hurryFor)
		for _, srv := range servers {
			mon.CheckNow(targetName(name, srv.Name))
		}
	}
	if s.fromMembers.Load() {
		sig := membersSignature(v.Members)
		s.mu.Lock()
		changed := sig != s.mu.members
		s.mu.members = sig
		s.mu.Unlock()
		if changed && s.rebuild != nil {
			s.rebuild()
		}
	}
}

// Confirmation of a new leader: Patroni takes the leader key, then promotes, and rewrites its
// member key (role master) only at its next loop (loop_wait later). Meanwhile the new leader's
// node check is asked again every confirmEvery, for at most confirmFor, until it reports the
// server a primary: pgfront's share of the write gap stays within a check's duration.
const (
	confirmEvery = 20 * time.Millisecond
	confirmFor   = 30 * time.Second
)

// confirmLoop is the source's goroutine from start to stopDCS: it asks for checks of a new
// leader until one says primary, the key moves on, or confirmFor passes.
func (s *dcsSource) confirmLoop() {
	defer close(s.confirmDone)
	var target string
	var until time.Time
	t := time.NewTicker(confirmEvery)
	defer t.Stop()
	for {
		var tick <-chan time.Time
		if target != "" {
			tick = t.C
		}
		select {
		case <-s.stop:
			return
		case name := <-s.confirm:
			target, until = name, time.Now().Add(confirmFor)
			t.Reset(confirmEvery)
		case now := <-tick:
			srv := s.cl.Server(target)
			if srv == nil || now.After(until) {
				target = ""
				continue
			}
			st := srv.State()
			if st.Leader != cluster.LeaderYes || st.Role == cluster.RolePrimary && !st.Fenced {
				target = ""
				continue
			}
			if mon := s.monitor.Load(); mon != nil {
				mon.CheckNow(targetName(s.cl.Name, target))
			}
		}
	}
}

// confirmLeader hands name to confirmLoop without blocking; a name still pending is replaced.
func (s *dcsSource) confirmLeader(name string) {
	for {
		select {
		case s.confirm <- name:
			return
		default:
		}
		select {
		case <-s.confirm:
		default:
		}
	}
}

func (s *dcsSource) primary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.primary
}

func (s *dcsSource) setPrimary(name string) {
	s.mu.Lock()
	s.mu.primary = name
	s.mu.Unlock()
}

// status is the source's state for the admin API.
func (s *dcsSource) status(prefix string) admin.DCS {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := admin.DCS{Cluster: s.cl.Name, Prefix: prefix, Up: s.mu.view.Known, Leader: s.mu.view.Leader,
		LeaderChanges: s.mu.changes, Since: s.mu.since}
	if s.mu.view.Err != nil {
		st.LastError = s.mu.view.Err.Error()
	}
	for _, m := range s.mu.view.Members {
		st.Members = append(st.Members, m.Name)
	}
	return st
}

// members returns the members of the latest known view.
func (s *dcsSource) members() []dcs.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mu.view.Members)
}

// matchMembers pairs servers with members: by name (member name = server name), else by
// conn_url host:port = server address.
func matchMembers(servers []*cluster.Server, members []dcs.Member) map[*cluster.Server]dcs.Member {
	out := make(map[*cluster.Server]dcs.Member, len(servers))
	for _, srv := range servers {
		i := slices.IndexFunc(members, func(m dcs.Member) bool { return m.Name == srv.Name })
		if i < 0 {
			i = slices.IndexFunc(members, func(m dcs.Member) bool { return m.Addr() != "" && m.Addr() == srv.Addr })
		}
		if i >= 0 {
			out[srv] = members[i]
		}
	}
	return out
}

// membersSignature is what servers_from_members builds from: names and addresses.
func membersSignature(ms []dcs.Member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s\x00%s\x00%s\n", m.Name, m.Addr(), m.APIAddr())
	}
	return b.String()
}

// withMembers returns cc with a server for every DCS member it does not list
// (servers_from_members), from the running source's latest view; cc itself otherwise.
// reloadMu is held.
func (a *App) withMembers(name string, cc *config.Cluster) *config.Cluster {
	if cc.DCS == nil || !cc.DCS.ServersFromMembers || a.gen == nil || a.gen.clusters[name] == nil {
		return cc
	}
	d := a.dcs[a.gen.clusters[name].cl]
	if d == nil {
		return cc
	}
	out := *cc
	out.Servers = slices.Clone(cc.Servers)
	for _, m := range d.src.members() {
		addr := m.Addr()
		if addr == "" || !validServerName(m.Name) || slices.ContainsFunc(cc.Servers, func(sc *config.Server) bool {
			return sc.Name == m.Name || sc.Address == addr
		}) {
			continue
		}
		out.Servers = append(out.Servers, &config.Server{Name: m.Name, Address: addr, Patroni: m.APIAddr(), Weight: 1})
	}
	return &out
}

// validServerName: member names become server names, metric labels and log fields.
func validServerName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// applyDCS brings a cluster's DCS role source in line with plan: started, replaced when its
// section changed, stopped when it left. reloadMu is held.
func (a *App) applyDCS(plan *clusterPlan, note func(string, ...any)) {
	cur := a.dcs[plan.cl]
	p := plan.dcs
	if cur != nil && (p == nil || p.key != cur.key) {
		a.stopDCS(plan.cl)
		if p == nil {
			note("cluster %s: dcs role source off (node checks decide)", plan.cl.Name)
		}
		cur = nil
	}
	var mon *health.Monitor
	if ch := a.health[plan.cl]; ch != nil {
		mon = ch.mon
	}
	if cur != nil {
		cur.src.monitor.Store(mon)
		cur.src.fromMembers.Store(p.fromMembers)
		if plan.serversChanged {
			cur.src.reapply()
		}
		return
	}
	if p == nil {
		return
	}
	src := &dcsSource{cl: plan.cl, log: a.log.With("cluster", plan.cl.Name), metrics: a.metrics, rebuild: a.signalRebuild,
		confirm: make(chan string, 1), stop: make(chan struct{}), confirmDone: make(chan struct{})}
	src.monitor.Store(mon)
	src.fromMembers.Store(p.fromMembers)
	opts := p.opts
	opts.Logger = src.log
	opts.OnView = src.onView
	w, err := dcs.New(opts)
	if err != nil { // config validation rules these out
		a.log.Error("dcs role source not started", "cluster", plan.cl.Name, "err", err)
		return
	}
	a.dcs[plan.cl] = &clusterDCS{key: p.key, w: w, src: src}
	a.metrics.DCSUp(plan.cl.Name, false)
	if a.running {
		a.dcs[plan.cl].start()
	}
	if a.gen != nil {
		note("cluster %s: dcs role source on %s", plan.cl.Name, w.Prefix())
	}
}

// stopDCS stops a cluster's DCS role source; node checks alone decide its roles again.
// reloadMu is held (the watcher's callback never takes it).
func (a *App) stopDCS(cl *cluster.Cluster) {
	d := a.dcs[cl]
	if d == nil {
		return
	}
	d.stop()
	delete(a.dcs, cl)
	cl.SetLeader("", false)
	a.metrics.DCSRemoved(cl.Name)
}

// signalRebuild asks the rebuild loop to apply the running config again (servers from
// members changed). It never blocks: one pending signal covers any number of changes.
func (a *App) signalRebuild() {
	select {
	case a.rebuildCh <- struct{}{}:
	default:
	}
}

// rebuildLoop applies the running config again whenever DCS members change the servers. It
// runs from Start until stopBackground closes rebuildStop.
func (a *App) rebuildLoop() {
	defer close(a.rebuildDone)
	for {
		select {
		case <-a.rebuildStop:
			return
		case <-a.rebuildCh:
		}
		a.reloadMu.Lock()
		g, err := a.build(a.gen.cfg)
		var changes []string
		if err == nil {
			changes, err = a.apply(g, a.running)
		}
		a.reloadMu.Unlock()
		if err != nil {
			a.log.Error("dcs: servers from members not applied", "err", err)
			continue
		}
		for _, c := range changes {
			a.log.Info("dcs: servers from members", "change", c)
		}
	}
}

// startDCS starts every DCS watcher and the rebuild loop (Start). reloadMu is held.
func (a *App) startDCS() {
	for _, d := range a.dcs {
		d.start()
	}
	a.applyDCSPeers(a.gen, func(string, ...any) {})
	a.applyDNSPeers(a.gen, func(string, ...any) {})
	a.rebuildStarted = true
	go a.rebuildLoop()
}

// stopAllDCS ends the rebuild loop and every watcher (stopBackground). It takes reloadMu
// itself, after the rebuild loop (which takes it) has ended.
func (a *App) stopAllDCS() {
	{
		select {
		case <-a.rebuildStop:
		default:
			close(a.rebuildStop)
			a.reloadMu.Lock()
			started := a.rebuildStarted
			a.reloadMu.Unlock()
			if started {
				<-a.rebuildDone
			}
		}
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.stopAllDCSPeers()
	a.stopDNSPeers()
	for cl := range a.dcs {
		a.stopDCS(cl)
	}
}

// dcsStatus is every DCS role source's state, for the admin API, in cluster order.
func (a *App) dcsStatus() []admin.DCS {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	var out []admin.DCS
	for _, name := range a.gen.cfg.ClusterNames() {
		if plan := a.gen.clusters[name]; plan != nil {
			if d := a.dcs[plan.cl]; d != nil {
				out = append(out, d.src.status(d.w.Prefix()))
			}
		}
	}
	return out
}
