package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/sockmon"
)

// pullCollector computes, at scrape time, the gauges that describe the present: sessions by
// route and state, servers, the latest socket sample, alert thresholds.
type pullCollector struct {
	m *Metrics
}

var pullFamilies = []*Family{
	famRouteSessions, famRouteMaxConn, famMaxConn, famParked, famIdleInTx, famHalfClosed, famHalfClosedAge,
	famServerSessions, famServerUp, famServerRole, famServerAdmin, famServerFenced, famSplitBrain, famServerLagBytes,
	famServerLagSecs, famServerLastCheck, famSockets, famSampleDuration, famSampleTime, famAlertThreshold,
	famConfigLastSuccess, famConfigInfo, famConfigGeneration, famTLSCertExpiry, famPeerProblems, famFleetPeers,
}

var pullDescs = func() map[*Family]*prometheus.Desc {
	out := make(map[*Family]*prometheus.Desc, len(pullFamilies))
	for _, f := range pullFamilies {
		out[f] = f.desc()
	}
	return out
}()

func (c *pullCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range pullDescs {
		ch <- d
	}
}

func (c *pullCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge := func(f *Family, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(pullDescs[f], prometheus.GaugeValue, v, labels...)
	}
	topo := m.topo.Load()
	gauge(famMaxConn, float64(topo.maxConn))
	var pc fleet.Counters
	if m.peers != nil {
		pc = m.peers()
	}
	for _, p := range []struct {
		name string
		n    uint64
	}{{"dropped_sending", pc.DroppedOut}, {"dropped_receiving", pc.DroppedIn}, {"refused", pc.Refused}} {
		ch <- prometheus.MustNewConstMetric(pullDescs[famPeerProblems], prometheus.CounterValue, float64(p.n), p.name)
	}
	bySource := map[string]int{"config": 0}
	if m.peerSet != nil {
		for _, p := range m.peerSet() {
			bySource[p.Source]++
		}
	}
	for src, n := range bySource {
		gauge(famFleetPeers, float64(n), src)
	}
	for _, a := range m.alerts.list {
		gauge(famAlertThreshold, m.alerts.threshold(a.name), a.name)
	}
	if cs := m.config.Load(); cs != nil {
		gauge(famConfigGeneration, float64(cs.generation))
		gauge(famConfigLastSuccess, float64(cs.at.UnixNano())/1e9)
		if cs.hash != "" {
			gauge(famConfigInfo, 1, cs.hash)
		}
	}

	for _, r := range topo.order {
		if r.Certificate == nil {
			continue
		}
		if leaf := r.Certificate.Leaf(); leaf != nil {
			gauge(famTLSCertExpiry, float64(leaf.NotAfter.Unix()), r.Name, r.Certificate.CertFile(), leaf.Subject.String())
		}
	}

	if sum, parked, ok := m.summarize(time.Now()); ok {
		gauge(famParked, float64(parked))
		for _, r := range topo.order {
			rs := sum[r.Name]
			gauge(famRouteSessions, float64(rs.sessions), r.Name)
			gauge(famRouteMaxConn, float64(r.MaxConn), r.Name)
			gauge(famIdleInTx, float64(rs.idleInTx), r.Name)
			gauge(famHalfClosed, float64(rs.halfClosed), r.Name)
			gauge(famHalfClosedAge, rs.oldestHalfClosed.Seconds(), r.Name)
		}
	}

	for _, cl := range topo.clusters {
		gauge(famSplitBrain, boolValue(len(cl.SplitBrain()) > 0), cl.Name)
		for _, srv := range cl.Servers() {
			st := srv.State()
			cn, sn := srv.Cluster, srv.Name
			gauge(famServerSessions, float64(srv.Active()), cn, sn)
			gauge(famServerUp, boolValue(st.Up), cn, sn)
			for _, role := range []cluster.Role{cluster.RolePrimary, cluster.RoleReplica, cluster.RoleUnknown} {
				gauge(famServerRole, boolValue(st.Role == role), cn, sn, role.String())
			}
			for _, a := range []cluster.Admin{cluster.AdminReady, cluster.AdminDrain, cluster.AdminMaint} {
				gauge(famServerAdmin, boolValue(st.Admin == a), cn, sn, a.String())
			}
			gauge(famServerFenced, boolValue(st.Fenced), cn, sn)
			if st.LagBytes >= 0 {
				gauge(famServerLagBytes, float64(st.LagBytes), cn, sn)
			}
			if st.LagSeconds >= 0 {
				gauge(famServerLagSecs, st.LagSeconds, cn, sn)
			}
			if !st.LastCheck.IsZero() {
				gauge(famServerLastCheck, float64(st.LastCheck.UnixNano())/1e9, cn, sn)
			}
		}
	}

	if s := m.latest.Load(); s != nil && !s.sample.At.IsZero() {
		gauge(famSampleDuration, s.sample.Took.Seconds())
		gauge(famSampleTime, float64(s.sample.At.UnixNano())/1e9)
		counts := s.sample.Counts
		for k, n := range counts {
			gauge(famSockets, float64(n), k.Route, k.Side.String(), k.Cluster, k.Server, k.State.String())
		}
		// The states the alerts watch are always present per route, so a dashboard shows 0
		// rather than no data.
		for _, r := range topo.order {
			for _, st := range []netx.TCPState{netx.TCPEstablished, netx.TCPCloseWait, netx.TCPFinWait2} {
				k := sockmon.Key{Route: r.Name, Side: sockmon.SideClient, State: st}
				if _, ok := counts[k]; !ok {
					gauge(famSockets, 0, k.Route, k.Side.String(), "", "", st.String())
				}
			}
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// routeSummary is what the open sessions of one route are doing.
type routeSummary struct {
	sessions, idleInTx, halfClosed int
	oldestHalfClosed               time.Duration
}

// summarize reads the open sessions once; ok is false before SetSessions.
func (m *Metrics) summarize(now time.Time) (map[string]routeSummary, int, bool) {
	src := m.sources.Load()
	if src == nil {
		return nil, 0, false
	}
	m.snap.Lock()
	defer m.snap.Unlock()
	infos := src.sessions(m.snap.buf[:0])
	out := make(map[string]routeSummary, len(m.topo.Load().order))
	for i := range infos {
		in := &infos[i]
		rs := out[in.Route]
		rs.sessions++
		if in.Phase == frontend.PhaseRelaying {
			st := in.Relay
			if !st.Busy && !st.Login && (st.TxStatus == 'T' || st.TxStatus == 'E') {
				rs.idleInTx++
			}
			if !st.HalfClosedSince.IsZero() {
				rs.halfClosed++
				rs.oldestHalfClosed = max(rs.oldestHalfClosed, now.Sub(st.HalfClosedSince))
			}
		}
		out[in.Route] = rs
	}
	clear(infos) // drop the pointers the snapshot held
	m.snap.buf = infos[:0]
	parked := 0
	if src.parked != nil {
		parked = src.parked()
	}
	return out, parked, true
}
