// Package observe owns what pgfront tells about itself: every Prometheus collector (one
// struct, registered against an injected registry), the periodic sample of the kernel's TCP
// states of pgfront's own sockets, the built-in alerts on them, and the list of recently ended
// sessions the stats page shows.
//
//	m := observe.New(observe.Options{Registerer: reg, Routes: routes, Clusters: clusters, ...})
//	fe, _ := frontend.New(frontend.Options{Events: m, ...})
//	m.SetSessions(fe.SessionInfos, fe.Parked)
//	m.Start()      // samples sockets and checks alerts every Options.Interval
//	defer m.Stop()
//
// A config reload goes through the methods New itself uses, so start and reload are one path:
//
//	m.SetTopology(routes, clusters, maxConn)      // after cluster.SetServers
//	m.SetAlerts(thresholds, interval)             // effective at the next sample
//	m.ConfigApplied(generation, hash, time.Now()) // or m.ConfigReloadFailed()
package observe

import (
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/sockmon"
	"github.com/pgfront/pgfront/internal/version"
)

// Route names a route and its limit, for the gauges that exist before any session.
type Route struct {
	Name string
	// Clusters the route's sessions may reach: its own, then those its TLS SNI map names.
	Clusters []*cluster.Cluster
	MaxConn  int // 0 = unlimited
	// Certificate is what the route shows TLS clients (tls.mode terminate); nil: none. Its
	// expiry is read at scrape time, so a reloaded certificate shows at once.
	Certificate Certificate
}

// Certificate is a certificate a route serves (tlsconf.Server).
type Certificate interface {
	Leaf() *x509.Certificate
	CertFile() string
}

// Options configure Metrics.
type Options struct {
	Registerer prometheus.Registerer // required
	// Routes, Clusters and MaxConn are the topology pgfront starts with; SetTopology changes
	// them.
	Routes   []Route
	Clusters []*cluster.Cluster
	MaxConn  int // global; 0 = unlimited
	// Sockets samples pgfront's sockets; nil turns socket states (and their alerts) off.
	Sockets *sockmon.Monitor
	// Interval is how often sockets are sampled and alerts checked. Default 5s. Alerts and
	// Interval are what pgfront starts with; SetAlerts changes them.
	Interval time.Duration
	Alerts   Thresholds
	// ConfigHash names the config pgfront starts with, for pgfront_config_info (generation 1);
	// "" leaves pgfront_config_info out until ConfigApplied names one.
	ConfigHash string
	Logger     *slog.Logger
	// FDs reports open file descriptors and their limit; nil reads /proc/self/fd and
	// RLIMIT_NOFILE. (A seam for tests.)
	FDs func() (open, limit int, err error)
	// PeerCounters reads the fleet's peer channel counters; nil: none (all zero).
	PeerCounters func() fleet.Counters
	// PeerStatuses reads the fleet's peers; nil: none.
	PeerStatuses func() []fleet.PeerStatus
}

// defaultInterval is the sample interval when none is given.
const defaultInterval = 5 * time.Second

// Metrics holds every collector and implements frontend.Events. Its methods are safe for
// concurrent use.
type Metrics struct {
	log     *slog.Logger
	sockets *sockmon.Monitor
	fds     func() (open, limit int, err error)
	peers   func() fleet.Counters
	peerSet func() []fleet.PeerStatus

	// topo is the current routes and servers with their pre-labelled collectors. The hot path
	// reads it with one atomic load; SetTopology replaces it (copy-on-write), never modifies it.
	topo atomic.Pointer[topology]
	// topoMu serialises SetTopology and guards the cluster subscriptions it keeps.
	topoMu struct {
		sync.Mutex
		unsubscribe map[*cluster.Cluster]func()
	}

	// Vectors with a route or server label: SetTopology adds and deletes their series.
	accepted  *prometheus.CounterVec
	acceptErr *prometheus.CounterVec
	queued    *prometheus.GaugeVec
	queueWait *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	queries   *prometheus.CounterVec
	txs       *prometheus.CounterVec
	queryDur  *prometheus.HistogramVec
	txDur     *prometheus.HistogramVec

	ended         *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	cancels       *prometheus.CounterVec
	transitions   *prometheus.CounterVec
	checks        *prometheus.HistogramVec
	alertActive   *prometheus.GaugeVec
	alertRaised   *prometheus.CounterVec
	samples       *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	tlsHandshakes *prometheus.CounterVec
	dcs           dcsMetrics

	recent recentList
	alerts alertSet
	// interval is the sample interval in nanoseconds (SetAlerts); intervalChanged wakes the
	// sampling loop to restart its ticker (buffered: SetAlerts never waits for the loop).
	interval        atomic.Int64
	intervalChanged chan struct{}
	config          atomic.Pointer[configState]

	// sessions and parked read the frontend at scrape and alert time (SetSessions).
	sources atomic.Pointer[sources]
	latest  atomic.Pointer[socketSample]
	// snap is one session-snapshot buffer reused by scrapes and alert checks.
	snap struct {
		sync.Mutex
		buf []frontend.SessionInfo
	}

	loop struct {
		sync.Mutex
		stop chan struct{}
		done chan struct{}
	}
}

type sources struct {
	sessions func([]frontend.SessionInfo) []frontend.SessionInfo
	parked   func() int
}

// socketSample is the latest kernel sample and what it cost.
type socketSample struct {
	sample sockmon.Sample
	err    error
}

// sessionObserver is the relay.Observer of every session of one route on one server.
type sessionObserver struct {
	toServer, toClient prometheus.Counter
	queries, txs       prometheus.Counter
	queryDur, txDur    prometheus.Observer
}

var _ relay.Observer = (*sessionObserver)(nil)

func (o *sessionObserver) Relayed(toServer bool, n int) {
	if toServer {
		o.toServer.Add(float64(n))
	} else {
		o.toClient.Add(float64(n))
	}
}

func (o *sessionObserver) QueryDone(d time.Duration) {
	o.queries.Inc()
	o.queryDur.Observe(d.Seconds())
}

func (o *sessionObserver) TransactionDone(d time.Duration) {
	o.txs.Inc()
	o.txDur.Observe(d.Seconds())
}

// New builds and registers every collector, including the Go runtime and process collectors,
// then applies the starting topology, alerts and config as a reload would (SetTopology,
// SetAlerts, ConfigApplied), so start and reload are one path.
func New(opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FDs == nil {
		opts.FDs = openFDs
	}
	m := &Metrics{
		log:             opts.Logger,
		sockets:         opts.Sockets,
		fds:             opts.FDs,
		peers:           opts.PeerCounters,
		peerSet:         opts.PeerStatuses,
		accepted:        famSessionsTotal.counterVec(),
		acceptErr:       famAcceptErrors.counterVec(),
		queued:          famQueued.gaugeVec(),
		queueWait:       famQueueWait.histogramVec(waitBuckets),
		bytes:           famBytes.counterVec(),
		queries:         famQueries.counterVec(),
		txs:             famTransactions.counterVec(),
		queryDur:        famQueryDuration.histogramVec(latencyBuckets),
		txDur:           famTxDuration.histogramVec(latencyBuckets),
		ended:           famSessionsEnded.counterVec(),
		refusals:        famRefusals.counterVec(),
		cancels:         famCancels.counterVec(),
		transitions:     famTransitions.counterVec(),
		checks:          famCheckDuration.histogramVec(waitBuckets),
		alertActive:     famAlertActive.gaugeVec(),
		alertRaised:     famAlertsRaised.counterVec(),
		samples:         famSocketSamples.counterVec(),
		reloads:         famConfigReloads.counterVec(),
		tlsHandshakes:   famTLSHandshakes.counterVec(),
		dcs:             newDCSMetrics(),
		intervalChanged: make(chan struct{}, 1),
	}
	m.recent.init(recentSize)
	m.topo.Store(&topology{})
	m.topoMu.unsubscribe = make(map[*cluster.Cluster]func())
	for _, r := range []string{"ok", "error"} {
		m.samples.WithLabelValues(r)
	}
	for _, r := range []string{reloadSuccess, reloadFailure} {
		m.reloads.WithLabelValues(r)
	}
	m.alerts.init()
	for _, a := range m.alerts.list {
		m.alertActive.WithLabelValues(a.name).Set(0)
		m.alertRaised.WithLabelValues(a.name)
	}
	build := famBuildInfo.gaugeVec()
	v := version.Get()
	build.WithLabelValues(v.Version, v.Revision, v.GoVersion).Set(1)
	reg := opts.Registerer
	reg.MustRegister(m.dcs.collectors()...)
	reg.MustRegister(build, m.accepted, m.acceptErr, m.queued, m.queueWait, m.bytes, m.queries, m.txs, m.queryDur, m.txDur,
		m.ended, m.refusals, m.cancels, m.transitions, m.checks, m.alertActive, m.alertRaised, m.samples,
		m.reloads, m.tlsHandshakes,
		&pullCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.SetTopology(opts.Routes, opts.Clusters, opts.MaxConn)
	m.SetAlerts(opts.Alerts, opts.Interval)
	m.config.Store(&configState{generation: 1, hash: opts.ConfigHash, at: time.Now()}) // not a reload: not counted
	return m
}

// SetSessions gives the metrics their view of the open sessions (read at scrape and alert
// time). Until it is called, session gauges are absent.
func (m *Metrics) SetSessions(sessions func([]frontend.SessionInfo) []frontend.SessionInfo, parked func() int) {
	m.sources.Store(&sources{sessions: sessions, parked: parked})
}

var _ frontend.Events = (*Metrics)(nil)

// SessionAccepted implements frontend.Events.
func (m *Metrics) SessionAccepted(route string) {
	if rm := m.topo.Load().routes[route]; rm != nil {
		rm.accepted.Inc()
		rm.total.Add(1)
	}
}

// AcceptFailed implements frontend.Events.
func (m *Metrics) AcceptFailed(route string) {
	if rm := m.topo.Load().routes[route]; rm != nil {
		rm.acceptErr.Inc()
	}
}

// SessionEnded implements frontend.Events. The session is listed in Recent whatever its route;
// it is counted only when its route is in the topology, so a session that drains after a
// reload removed its route brings back no series.
func (m *Metrics) SessionEnded(e frontend.Ended) {
	if e.Cause != relay.CauseCancelRequest {
		m.recent.add(e)
	}
	m.countEnded(m.topo.Load(), e)
}

// countEnded counts e against t, the topology SessionEnded loaded (which a reload may have
// replaced since).
func (m *Metrics) countEnded(t *topology, e frontend.Ended) {
	rm := t.routes[e.Route]
	if rm == nil {
		return
	}
	cause := e.Cause.String()
	m.ended.WithLabelValues(e.Route, cause).Inc()
	if e.Refused {
		m.refusals.WithLabelValues(e.Route, cause).Inc()
	}
	// SetTopology marks a removed route before deleting its series. Seen here, the route went
	// while this event was counted, and WithLabelValues may have created a series after the
	// delete: remove it again. Not seen, the delete comes after our increment.
	if rm.removed.Load() {
		m.ended.DeleteLabelValues(e.Route, cause)
		m.refusals.DeleteLabelValues(e.Route, cause)
	}
}

// QueueChanged implements frontend.Events.
func (m *Metrics) QueueChanged(route string, delta int) {
	if rm := m.topo.Load().routes[route]; rm != nil {
		rm.queued.Add(float64(delta))
		rm.queuedN.Add(int64(delta))
	}
}

// QueueWaited implements frontend.Events.
func (m *Metrics) QueueWaited(route string, d time.Duration) {
	if rm := m.topo.Load().routes[route]; rm != nil {
		rm.queueWait.Observe(d.Seconds())
	}
}

// CancelRequest implements frontend.Events.
// Like SessionEnded, a request on a route no longer in the topology is not counted.
func (m *Metrics) CancelRequest(route, result string) {
	rm := m.topo.Load().routes[route]
	if rm == nil {
		return
	}
	m.cancels.WithLabelValues(route, result).Inc()
	if rm.removed.Load() {
		m.cancels.DeleteLabelValues(route, result)
	}
}

// TLSHandshake implements frontend.Events. Like SessionEnded, a handshake on a route no longer
// in the topology is not counted.
func (m *Metrics) TLSHandshake(route, result string) {
	rm := m.topo.Load().routes[route]
	if rm == nil {
		return
	}
	m.tlsHandshakes.WithLabelValues(route, result).Inc()
	if rm.removed.Load() { // removed meanwhile: as in countEnded
		m.tlsHandshakes.DeleteLabelValues(route, result)
	}
}

// SessionObserver implements frontend.Events. The observer stays valid for the session's
// life, even when a reload removes its route or server (it then counts into series no longer
// exported). A server the topology does not know yet (a cluster's servers changed and
// SetTopology has not run) gets the route's observer without per-server query counts; an
// unknown route gets none.
func (m *Metrics) SessionObserver(route string, srv *cluster.Server) relay.Observer {
	t := m.topo.Load()
	if o := t.observers[observerKey{route, srv}]; o != nil {
		return o
	}
	if rm := t.routes[route]; rm != nil {
		return rm.fallback
	}
	return nil
}

// ServerConn implements frontend.Events: the connection is tracked for socket states.
func (m *Metrics) ServerConn(route string, srv *cluster.Server, c net.Conn) {
	if m.sockets == nil {
		return
	}
	local, ok1 := addrPort(c.LocalAddr())
	remote, ok2 := addrPort(c.RemoteAddr())
	if ok1 && ok2 {
		m.sockets.TrackServerConn(local, remote, route, srv.Cluster, srv.Name)
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return ta.AddrPort(), true
}

// ServerChecked records one health check's duration; a server outside the topology (removed
// by a reload, its last check finishing) is not recorded.
func (m *Metrics) ServerChecked(srv *cluster.Server, d time.Duration) {
	if sm := m.topo.Load().servers[serverKey{srv.Cluster, srv.Name}]; sm != nil {
		sm.check.Observe(d.Seconds())
	}
}

// serverChanged counts health and role transitions of the topology's servers.
func (m *Metrics) serverChanged(srv *cluster.Server, old, st cluster.State) {
	m.countTransition(m.topo.Load(), srv, old, st)
}

// countTransition counts against t, as countEnded.
func (m *Metrics) countTransition(t *topology, srv *cluster.Server, old, st cluster.State) {
	sm := t.servers[serverKey{srv.Cluster, srv.Name}]
	if sm == nil {
		return
	}
	count := func(to string) {
		m.transitions.WithLabelValues(srv.Cluster, srv.Name, to).Inc()
		if sm.removed.Load() { // removed meanwhile: as in countEnded
			m.transitions.DeleteLabelValues(srv.Cluster, srv.Name, to)
		}
	}
	if old.Up != st.Up {
		to := "down"
		if st.Up {
			to = "up"
		}
		count(to)
	}
	if old.Role != st.Role {
		count(st.Role.String())
	}
}

// RouteTotal is how many sessions route has accepted since start (or since a reload added it).
func (m *Metrics) RouteTotal(route string) uint64 {
	if rm := m.topo.Load().routes[route]; rm != nil {
		return rm.total.Load()
	}
	return 0
}

// RouteQueued is how many clients of route wait now.
func (m *Metrics) RouteQueued(route string) int {
	if rm := m.topo.Load().routes[route]; rm != nil {
		return int(rm.queuedN.Load())
	}
	return 0
}

// queuedTotal is how many clients wait now, across routes.
func (m *Metrics) queuedTotal() int {
	n := 0
	for _, rm := range m.topo.Load().routes {
		n += int(rm.queuedN.Load())
	}
	return n
}

// Recent returns the latest ended sessions, newest first, and the count of every ended session
// by cause since start.
func (m *Metrics) Recent() ([]frontend.Ended, map[string]uint64) { return m.recent.list() }

// Sockets returns the latest kernel sample (zero At: none yet) and its error.
func (m *Metrics) Sockets() (sockmon.Sample, error) {
	if s := m.latest.Load(); s != nil {
		return s.sample, s.err
	}
	return sockmon.Sample{}, nil
}
