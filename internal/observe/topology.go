package observe

import (
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/frontend"
)

// topology is the routes and servers the metrics know, each with its pre-labelled collectors,
// so a session's events cost no label lookups. Built by SetTopology and never modified after
// it is stored.
type topology struct {
	routes    map[string]*routeMetrics
	order     []Route // name and maxconn, in the caller's order, for the scrape
	observers map[observerKey]*sessionObserver
	servers   map[serverKey]*serverMetrics
	clusters  []*cluster.Cluster
	maxConn   int
}

// routeMetrics are one route's pre-labelled collectors and counts. A route that stays in the
// topology keeps its routeMetrics, so its counts survive a reload.
type routeMetrics struct {
	accepted  prometheus.Counter
	acceptErr prometheus.Counter
	total     atomic.Uint64
	queued    prometheus.Gauge
	queuedN   atomic.Int64
	queueWait prometheus.Observer

	toServer, toClient prometheus.Counter
	queryDur, txDur    prometheus.Observer
	// fallback observes a session on a server the topology does not know yet: the route's
	// series, and no per-server query counts.
	fallback *sessionObserver
	// removed is set when a reload removes the route, before its series are deleted.
	removed atomic.Bool
}

type observerKey struct {
	route string
	srv   *cluster.Server
}

// serverKey is a server as its series name it: a server replaced by a reload under the same
// cluster and name (a new address) keeps its series.
type serverKey struct{ cluster, name string }

type serverMetrics struct {
	check   prometheus.Observer
	removed atomic.Bool // as routeMetrics.removed
}

// pairKey is one pgfront_queries_total / pgfront_transactions_total series.
type pairKey struct{ route, cluster, server string }

// discarded counts what no series shows: the per-server counts of a fallback observer.
var discarded = prometheus.NewCounter(prometheus.CounterOpts{Name: "discarded", Help: "Never registered."})

// SetTopology makes routes, clusters (with their servers now, see cluster.Cluster.Servers) and
// the global maxconn the metrics' topology. Routes and servers it adds get their series at 0;
// those it removes have their series deleted, so a scrape shows none of them, while sessions
// still draining on them keep their observers (counting into series no longer exported) and
// their events are otherwise ignored. Routes and servers that stay keep their counts. A server
// is known by its cluster and name. Call it after changing a cluster's servers
// (cluster.Cluster.SetServers). New calls it with Options.Routes, Clusters and MaxConn.
func (m *Metrics) SetTopology(routes []Route, clusters []*cluster.Cluster, maxConn int) {
	m.topoMu.Lock()
	defer m.topoMu.Unlock()
	old := m.topo.Load()
	t := &topology{
		routes:    make(map[string]*routeMetrics, len(routes)),
		observers: make(map[observerKey]*sessionObserver),
		servers:   make(map[serverKey]*serverMetrics),
		clusters:  slices.Clone(clusters),
		maxConn:   maxConn,
	}
	for _, r := range routes {
		rm := old.routes[r.Name]
		if rm == nil {
			rm = m.newRouteMetrics(r.Name)
		}
		t.routes[r.Name] = rm
		t.order = append(t.order, Route{Name: r.Name, MaxConn: r.MaxConn, Certificate: r.Certificate})
		for _, res := range frontend.CancelResults() {
			m.cancels.WithLabelValues(r.Name, res)
		}
		if r.Certificate != nil {
			for _, res := range frontend.TLSResults() {
				m.tlsHandshakes.WithLabelValues(r.Name, res)
			}
		}
		for _, cl := range r.Clusters {
			for _, srv := range cl.Servers() {
				k := observerKey{r.Name, srv}
				if o := old.observers[k]; o != nil {
					t.observers[k] = o
					continue
				}
				t.observers[k] = &sessionObserver{
					toServer: rm.toServer, toClient: rm.toClient,
					queries:  m.queries.WithLabelValues(r.Name, srv.Cluster, srv.Name),
					txs:      m.txs.WithLabelValues(r.Name, srv.Cluster, srv.Name),
					queryDur: rm.queryDur, txDur: rm.txDur,
				}
			}
		}
	}
	for _, cl := range clusters {
		for _, srv := range cl.Servers() {
			k := serverKey{srv.Cluster, srv.Name}
			sm := old.servers[k]
			if sm == nil {
				sm = &serverMetrics{check: m.checks.WithLabelValues(srv.Cluster, srv.Name)}
			}
			t.servers[k] = sm
		}
	}
	// Store first, then delete: an event that still sees the old topology is undone by the
	// removed flags (see SessionEnded); one that sees the new one ignores what went.
	m.topo.Store(t)
	m.deleteRemoved(old, t)
	m.subscribe(clusters)
}

func (m *Metrics) newRouteMetrics(name string) *routeMetrics {
	rm := &routeMetrics{
		accepted:  m.accepted.WithLabelValues(name),
		acceptErr: m.acceptErr.WithLabelValues(name),
		queued:    m.queued.WithLabelValues(name),
		queueWait: m.queueWait.WithLabelValues(name),
		toServer:  m.bytes.WithLabelValues(name, "client_to_server"),
		toClient:  m.bytes.WithLabelValues(name, "server_to_client"),
		queryDur:  m.queryDur.WithLabelValues(name),
		txDur:     m.txDur.WithLabelValues(name),
	}
	rm.fallback = &sessionObserver{toServer: rm.toServer, toClient: rm.toClient,
		queries: discarded, txs: discarded, queryDur: rm.queryDur, txDur: rm.txDur}
	return rm
}

// partialDeleter is what every vector has.
type partialDeleter interface {
	DeletePartialMatch(prometheus.Labels) int
}

// deleteRemoved deletes the series of what old has and t has not.
func (m *Metrics) deleteRemoved(old, t *topology) {
	for name, rm := range old.routes {
		if t.routes[name] == rm {
			continue
		}
		rm.removed.Store(true)
		for _, v := range []partialDeleter{m.accepted, m.acceptErr, m.queued, m.queueWait, m.bytes, m.queries, m.txs,
			m.queryDur, m.txDur, m.ended, m.refusals, m.tlsHandshakes, m.cancels} {
			v.DeletePartialMatch(prometheus.Labels{"route": name})
		}
	}
	for k, sm := range old.servers {
		if t.servers[k] == sm {
			continue
		}
		sm.removed.Store(true)
		// Queries and transactions go with their (route, server) pairs, below.
		for _, v := range []partialDeleter{m.checks, m.transitions} {
			v.DeletePartialMatch(prometheus.Labels{"cluster": k.cluster, "server": k.name})
		}
	}
	// A route that stays may no longer reach a server that stays (its clusters changed).
	keep := make(map[pairKey]bool, len(t.observers))
	for k := range t.observers {
		keep[pairKey{k.route, k.srv.Cluster, k.srv.Name}] = true
	}
	for k := range old.observers {
		if p := (pairKey{k.route, k.srv.Cluster, k.srv.Name}); !keep[p] {
			m.queries.DeleteLabelValues(p.route, p.cluster, p.server)
			m.txs.DeleteLabelValues(p.route, p.cluster, p.server)
		}
	}
}

// subscribe follows the state changes of clusters, and no longer those of any other cluster.
// Called with topoMu held.
func (m *Metrics) subscribe(clusters []*cluster.Cluster) {
	keep := make(map[*cluster.Cluster]bool, len(clusters))
	for _, cl := range clusters {
		keep[cl] = true
		if m.topoMu.unsubscribe[cl] == nil {
			m.topoMu.unsubscribe[cl] = cl.OnChange(m.serverChanged)
		}
	}
	for cl, unsubscribe := range m.topoMu.unsubscribe {
		if !keep[cl] {
			unsubscribe()
			delete(m.topoMu.unsubscribe, cl)
		}
	}
}
