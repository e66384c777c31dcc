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
package observe

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/sockmon"
)

// Route names a route and its limit, for the gauges that exist before any session.
type Route struct {
	Name string
	// Clusters the route's sessions may reach: its own, then those its TLS SNI map names.
	Clusters []*cluster.Cluster
	MaxConn  int // 0 = unlimited
}

// Options configure Metrics.
type Options struct {
	Registerer prometheus.Registerer // required
	Routes     []Route
	Clusters   []*cluster.Cluster
	MaxConn    int // global; 0 = unlimited
	// Sockets samples pgfront's sockets; nil turns socket states (and their alerts) off.
	Sockets *sockmon.Monitor
	// Interval is how often sockets are sampled and alerts checked. Default 5s.
	Interval time.Duration
	Alerts   Thresholds
	Logger   *slog.Logger
	// FDs reports open file descriptors and their limit; nil reads /proc/self/fd and
	// RLIMIT_NOFILE. (A seam for tests.)
	FDs func() (open, limit int, err error)
}

// Metrics holds every collector and implements frontend.Events. Its methods are safe for
// concurrent use.
type Metrics struct {
	opts Options
	log  *slog.Logger

	routes    map[string]*routeMetrics
	observers map[observerKey]*sessionObserver

	ended       *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	cancels     *prometheus.CounterVec
	transitions *prometheus.CounterVec
	checks      *prometheus.HistogramVec
	alertActive *prometheus.GaugeVec
	alertRaised *prometheus.CounterVec
	samples     *prometheus.CounterVec

	recent recentList
	alerts alertSet

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

// routeMetrics are one route's pre-labelled collectors, so a session's events cost no label
// lookups.
type routeMetrics struct {
	name      string
	maxConn   int
	accepted  prometheus.Counter
	total     atomic.Uint64
	queued    prometheus.Gauge
	queuedN   atomic.Int64
	queueWait prometheus.Observer
}

type observerKey struct {
	route string
	srv   *cluster.Server
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

// New builds and registers every collector, including the Go runtime and process collectors.
func New(opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.FDs == nil {
		opts.FDs = openFDs
	}
	m := &Metrics{
		opts:        opts,
		log:         opts.Logger,
		routes:      make(map[string]*routeMetrics),
		observers:   make(map[observerKey]*sessionObserver),
		ended:       famSessionsEnded.counterVec(),
		refusals:    famRefusals.counterVec(),
		cancels:     famCancels.counterVec(),
		transitions: famTransitions.counterVec(),
		checks:      famCheckDuration.histogramVec(waitBuckets),
		alertActive: famAlertActive.gaugeVec(),
		alertRaised: famAlertsRaised.counterVec(),
		samples:     famSocketSamples.counterVec(),
	}
	m.recent.init(recentSize)
	accepted := famSessionsTotal.counterVec()
	queued := famQueued.gaugeVec()
	queueWait := famQueueWait.histogramVec(waitBuckets)
	bytes := famBytes.counterVec()
	queries := famQueries.counterVec()
	txs := famTransactions.counterVec()
	queryDur := famQueryDuration.histogramVec(latencyBuckets)
	txDur := famTxDuration.histogramVec(latencyBuckets)
	for _, r := range opts.Routes {
		rm := &routeMetrics{
			name:      r.Name,
			maxConn:   r.MaxConn,
			accepted:  accepted.WithLabelValues(r.Name),
			queued:    queued.WithLabelValues(r.Name),
			queueWait: queueWait.WithLabelValues(r.Name),
		}
		m.routes[r.Name] = rm
		toServer := bytes.WithLabelValues(r.Name, "client_to_server")
		toClient := bytes.WithLabelValues(r.Name, "server_to_client")
		qd, td := queryDur.WithLabelValues(r.Name), txDur.WithLabelValues(r.Name)
		for _, cl := range r.Clusters {
			for _, srv := range cl.Servers() {
				m.observers[observerKey{r.Name, srv}] = &sessionObserver{
					toServer: toServer, toClient: toClient,
					queries:  queries.WithLabelValues(r.Name, srv.Cluster, srv.Name),
					txs:      txs.WithLabelValues(r.Name, srv.Cluster, srv.Name),
					queryDur: qd, txDur: td,
				}
			}
		}
	}
	for _, c := range []string{"forwarded", "unknown_key", "failed"} {
		m.cancels.WithLabelValues(c)
	}
	for _, r := range []string{"ok", "error"} {
		m.samples.WithLabelValues(r)
	}
	m.alerts.init(opts.Alerts)
	for _, a := range m.alerts.list {
		m.alertActive.WithLabelValues(a.name).Set(0)
		m.alertRaised.WithLabelValues(a.name)
	}
	for _, cl := range opts.Clusters {
		for _, srv := range cl.Servers() {
			m.checks.WithLabelValues(srv.Cluster, srv.Name)
		}
		cl.OnChange(m.serverChanged)
	}
	reg := opts.Registerer
	reg.MustRegister(accepted, queued, queueWait, bytes, queries, txs, queryDur, txDur,
		m.ended, m.refusals, m.cancels, m.transitions, m.checks, m.alertActive, m.alertRaised, m.samples,
		&pullCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
	if rm := m.routes[route]; rm != nil {
		rm.accepted.Inc()
		rm.total.Add(1)
	}
}

// SessionEnded implements frontend.Events.
func (m *Metrics) SessionEnded(e frontend.Ended) {
	cause := e.Cause.String()
	m.ended.WithLabelValues(e.Route, cause).Inc()
	if e.Refused {
		m.refusals.WithLabelValues(e.Route, cause).Inc()
	}
	if e.Cause != relay.CauseCancelRequest {
		m.recent.add(e)
	}
}

// QueueChanged implements frontend.Events.
func (m *Metrics) QueueChanged(route string, delta int) {
	if rm := m.routes[route]; rm != nil {
		rm.queued.Add(float64(delta))
		rm.queuedN.Add(int64(delta))
	}
}

// QueueWaited implements frontend.Events.
func (m *Metrics) QueueWaited(route string, d time.Duration) {
	if rm := m.routes[route]; rm != nil {
		rm.queueWait.Observe(d.Seconds())
	}
}

// CancelRequest implements frontend.Events.
func (m *Metrics) CancelRequest(result string) { m.cancels.WithLabelValues(result).Inc() }

// SessionObserver implements frontend.Events.
func (m *Metrics) SessionObserver(route string, srv *cluster.Server) relay.Observer {
	if o := m.observers[observerKey{route, srv}]; o != nil {
		return o
	}
	return nil
}

// ServerConn implements frontend.Events: the connection is tracked for socket states.
func (m *Metrics) ServerConn(route string, srv *cluster.Server, c net.Conn) {
	if m.opts.Sockets == nil {
		return
	}
	local, ok1 := addrPort(c.LocalAddr())
	remote, ok2 := addrPort(c.RemoteAddr())
	if ok1 && ok2 {
		m.opts.Sockets.TrackServerConn(local, remote, route, srv.Cluster, srv.Name)
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return ta.AddrPort(), true
}

// ServerChecked records one health check's duration.
func (m *Metrics) ServerChecked(srv *cluster.Server, d time.Duration) {
	m.checks.WithLabelValues(srv.Cluster, srv.Name).Observe(d.Seconds())
}

// serverChanged counts health and role transitions.
func (m *Metrics) serverChanged(srv *cluster.Server, old, st cluster.State) {
	if old.Up != st.Up {
		to := "down"
		if st.Up {
			to = "up"
		}
		m.transitions.WithLabelValues(srv.Cluster, srv.Name, to).Inc()
	}
	if old.Role != st.Role {
		m.transitions.WithLabelValues(srv.Cluster, srv.Name, st.Role.String()).Inc()
	}
}

// RouteTotal is how many sessions route has accepted since start.
func (m *Metrics) RouteTotal(route string) uint64 {
	if rm := m.routes[route]; rm != nil {
		return rm.total.Load()
	}
	return 0
}

// RouteQueued is how many clients of route wait now.
func (m *Metrics) RouteQueued(route string) int {
	if rm := m.routes[route]; rm != nil {
		return int(rm.queuedN.Load())
	}
	return 0
}

// queuedTotal is how many clients wait now, across routes.
func (m *Metrics) queuedTotal() int {
	n := 0
	for _, rm := range m.routes {
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
