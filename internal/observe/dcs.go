package observe

import "github.com/prometheus/client_golang/prometheus"

// The DCS role source's families (see DCSUp and DCSLeaderChanged).
var (
	famDCSUp            = family("pgfront_dcs_up", "gauge", "1 while pgfront has a current view of the cluster's Patroni DCS (etcd) leader key; 0 when the watch broke or etcd does not answer and node checks alone decide roles.", "cluster")
	famDCSLeaderChanges = family("pgfront_dcs_leader_changes_total", "counter", "Changes of the holder of the Patroni leader key seen from the DCS watch (an election with no holder counts as one).", "cluster")
)

// dcsMetrics are the collectors of the DCS role source.
type dcsMetrics struct {
	up      *prometheus.GaugeVec
	changes *prometheus.CounterVec
}

func newDCSMetrics() dcsMetrics {
	return dcsMetrics{up: famDCSUp.gaugeVec(), changes: famDCSLeaderChanges.counterVec()}
}

func (d dcsMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.up, d.changes}
}

// DCSUp records whether the cluster's DCS view is current.
func (m *Metrics) DCSUp(cluster string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.dcs.up.WithLabelValues(cluster).Set(v)
	m.dcs.changes.WithLabelValues(cluster)
}

// DCSLeaderChanged counts a change of the cluster's leader key holder.
func (m *Metrics) DCSLeaderChanged(cluster string) {
	if m == nil {
		return
	}
	m.dcs.changes.WithLabelValues(cluster).Inc()
}

// DCSRemoved deletes the cluster's DCS series (its role source left the config).
func (m *Metrics) DCSRemoved(cluster string) {
	if m == nil {
		return
	}
	m.dcs.up.DeleteLabelValues(cluster)
	m.dcs.changes.DeleteLabelValues(cluster)
}
