package observe

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/relay"
)

// withLabel lists the gathered series that carry any of the given label values
// ("route=ro", "server=pd"), as family{labels}.
func withLabel(t *testing.T, reg *prometheus.Registry, pairs ...string) []string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fam := range fams {
		for _, m := range fam.GetMetric() {
			var labels []string
			hit := false
			for _, lp := range m.GetLabel() {
				l := lp.GetName() + "=" + lp.GetValue()
				labels = append(labels, l)
				for _, p := range pairs {
					hit = hit || l == p
				}
			}
			if hit {
				out = append(out, fam.GetName()+"{"+strings.Join(labels, ",")+"}")
			}
		}
	}
	return out
}

// twoRoutes extends the fixture to route rw on cluster c (servers pg, pg2) and route ro on
// cluster d (server pd).
func twoRoutes(f *fixture) (pg2, pd *cluster.Server, d *cluster.Cluster) {
	pg2 = newServer("c", "pg2")
	f.cl.SetServers([]*cluster.Server{f.srv, pg2})
	pd = newServer("d", "pd")
	d = cluster.NewCluster("d", []*cluster.Server{pd}, false)
	f.m.SetTopology([]Route{
		{Name: "rw", Clusters: []*cluster.Cluster{f.cl}, MaxConn: 7},
		{Name: "ro", Clusters: []*cluster.Cluster{d}, MaxConn: 3},
	}, []*cluster.Cluster{f.cl, d}, 200)
	return pg2, pd, d
}

// TestSetTopologyAddsSeries: a route, a cluster and a server added by a reload get their
// series at 0 as New gives them, and the new cluster's transitions are counted.
func TestSetTopologyAddsSeries(t *testing.T) {
	f := newFixture(t, Thresholds{})
	_, pd, d := twoRoutes(f)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfront_sessions_total", []string{"route", "ro"}, 0},
		{"pgfront_queued_sessions", []string{"route", "ro"}, 0},
		{"pgfront_queue_wait_seconds", []string{"route", "ro"}, 0},
		{"pgfront_bytes_total", []string{"route", "ro", "direction", "client_to_server"}, 0},
		{"pgfront_queries_total", []string{"route", "ro", "cluster", "d", "server", "pd"}, 0},
		{"pgfront_queries_total", []string{"route", "rw", "cluster", "c", "server", "pg2"}, 0},
		{"pgfront_transactions_total", []string{"route", "ro", "server", "pd"}, 0},
		{"pgfront_query_duration_seconds", []string{"route", "ro"}, 0},
		{"pgfront_server_check_duration_seconds", []string{"cluster", "d", "server", "pd"}, 0},
		{"pgfront_server_check_duration_seconds", []string{"cluster", "c", "server", "pg2"}, 0},
		{"pgfront_route_maxconn", []string{"route", "ro"}, 3},
		{"pgfront_route_sessions", []string{"route", "ro"}, 0},
		{"pgfront_server_up", []string{"cluster", "d", "server", "pd"}, 1},
		{"pgfront_maxconn", nil, 200},
	} {
		if got, ok := lookup(t, f.reg, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %g (present %v), want %g", c.name, c.labels, got, ok, c.want)
		}
	}
	f.m.SessionAccepted("ro")
	if got := f.m.RouteTotal("ro"); got != 1 {
		t.Errorf("RouteTotal(ro) = %d", got)
	}
	d.Modify(pd, func(st *cluster.State) { st.Up = false })
	if got := value(t, f.reg, "pgfront_server_transitions_total", "cluster", "d", "server", "pd", "to", "down"); got != 1 {
		t.Errorf("transitions of the added cluster = %g, want 1 (subscribed)", got)
	}
}

// TestSetTopologyRemovesSeries: removing a route, a cluster and a server deletes every series
// naming them; what stays keeps its counts; observers handed out before keep working, and
// events for what went bring nothing back.
func TestSetTopologyRemovesSeries(t *testing.T) {
	f := newFixture(t, Thresholds{})
	m := f.m
	pg2, pd, d := twoRoutes(f)
	m.SessionAccepted("rw")
	m.SessionAccepted("rw")
	m.SessionAccepted("ro")
	m.QueueChanged("ro", 1)
	m.QueueWaited("ro", time.Millisecond)
	oRW, oRW2, oRO := m.SessionObserver("rw", f.srv), m.SessionObserver("rw", pg2), m.SessionObserver("ro", pd)
	for _, o := range []relay.Observer{oRW, oRW2, oRO} {
		o.Relayed(true, 10)
		o.QueryDone(time.Millisecond)
		o.TransactionDone(time.Millisecond)
	}
	m.SessionEnded(frontend.Ended{Route: "rw", Cause: relay.CauseClientTerminate})
	m.SessionEnded(frontend.Ended{Route: "ro", Cause: relay.CauseMaxConn, Refused: true})
	m.ServerChecked(f.srv, time.Millisecond)
	m.ServerChecked(pg2, time.Millisecond)
	m.ServerChecked(pd, time.Millisecond)
	f.cl.Modify(f.srv, func(st *cluster.State) { st.Up = false })
	f.cl.Modify(pg2, func(st *cluster.State) { st.Up = false })
	d.Modify(pd, func(st *cluster.State) { st.Up = false })
	if got := withLabel(t, f.reg, "route=ro", "server=pd", "server=pg2"); len(got) < 15 {
		t.Fatalf("before the removal, %d series of ro, pd, pg2: %v", len(got), got)
	}

	// The reload: route ro and cluster d go, and pg2 leaves cluster c.
	f.cl.SetServers([]*cluster.Server{f.srv})
	m.SetTopology([]Route{{Name: "rw", Clusters: []*cluster.Cluster{f.cl}, MaxConn: 7}}, []*cluster.Cluster{f.cl}, 100)
	if got := withLabel(t, f.reg, "route=ro", "server=pd", "server=pg2", "cluster=d"); len(got) > 0 {
		t.Errorf("series of removed route/servers left: %v", got)
	}

	// Sessions still draining on what went.
	for _, o := range []relay.Observer{oRW2, oRO} {
		o.Relayed(false, 5)
		o.QueryDone(time.Millisecond)
		o.TransactionDone(time.Millisecond)
	}
	m.SessionAccepted("ro")
	m.QueueChanged("ro", -1)
	m.QueueWaited("ro", time.Millisecond)
	m.SessionEnded(frontend.Ended{Route: "ro", Cause: relay.CauseClientTerminate})
	m.ServerChecked(pg2, time.Millisecond)
	m.ServerChecked(pd, time.Millisecond)
	f.cl.Modify(pg2, func(st *cluster.State) { st.Up = true })
	d.Modify(pd, func(st *cluster.State) { st.Up = true })
	if o := m.SessionObserver("ro", pd); o != nil {
		t.Errorf("observer for a removed route: %v", o)
	}
	if got := withLabel(t, f.reg, "route=ro", "server=pd", "server=pg2", "cluster=d"); len(got) > 0 {
		t.Errorf("events of removed route/servers brought series back: %v", got)
	}

	// What stays is unchanged.
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfront_sessions_total", []string{"route", "rw"}, 2},
		{"pgfront_sessions_ended_total", []string{"route", "rw", "cause", "client_terminate"}, 1},
		{"pgfront_queries_total", []string{"route", "rw", "server", "pg"}, 1},
		{"pgfront_bytes_total", []string{"route", "rw", "direction", "client_to_server"}, 20},
		{"pgfront_bytes_total", []string{"route", "rw", "direction", "server_to_client"}, 5}, // pg2's draining session
		{"pgfront_server_check_duration_seconds", []string{"server", "pg"}, 1},
		{"pgfront_server_transitions_total", []string{"server", "pg", "to", "down"}, 1},
		{"pgfront_maxconn", nil, 100},
	} {
		if got := value(t, f.reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if got := m.RouteTotal("rw"); got != 2 {
		t.Errorf("RouteTotal(rw) = %d, want 2", got)
	}
	if m.RouteTotal("ro") != 0 || m.RouteQueued("ro") != 0 {
		t.Errorf("removed route ro still counted")
	}
	if o := m.SessionObserver("rw", f.srv); o != oRW {
		t.Errorf("the kept route/server pair got a new observer")
	}
}

// TestSetTopologyReplacedCluster: a cluster replaced by a new one of the same name (a reload
// rebuilt it) keeps its servers' series; the old cluster is no longer followed, the new one is.
func TestSetTopologyReplacedCluster(t *testing.T) {
	f := newFixture(t, Thresholds{})
	f.m.ServerChecked(f.srv, time.Millisecond)
	f.cl.Modify(f.srv, func(st *cluster.State) { st.Up = false })
	srv := newServer("c", "pg") // same name, new address say
	cl := cluster.NewCluster("c", []*cluster.Server{srv}, false)
	f.m.SetTopology([]Route{{Name: "rw", Clusters: []*cluster.Cluster{cl}, MaxConn: 7}}, []*cluster.Cluster{cl}, 100)

	f.cl.Modify(f.srv, func(st *cluster.State) { st.Up = true }) // the old cluster: unsubscribed
	if got := value(t, f.reg, "pgfront_server_transitions_total", "server", "pg", "to", "down"); got != 1 {
		t.Errorf("down transitions = %g, want 1 kept", got)
	}
	if _, ok := lookup(t, f.reg, "pgfront_server_transitions_total", "server", "pg", "to", "up"); ok {
		t.Errorf("a transition of the replaced cluster was counted")
	}
	cl.Modify(srv, func(st *cluster.State) { st.Up = false })
	if got := value(t, f.reg, "pgfront_server_transitions_total", "server", "pg", "to", "down"); got != 2 {
		t.Errorf("down transitions = %g, want 2 (the new cluster is followed)", got)
	}
	f.m.ServerChecked(srv, time.Millisecond)
	if got := value(t, f.reg, "pgfront_server_check_duration_seconds", "server", "pg"); got != 2 {
		t.Errorf("checks = %g, want 2 (kept across the replacement)", got)
	}
	if f.m.SessionObserver("rw", srv) == nil {
		t.Errorf("no observer for the new server")
	}
}

// TestEventsOfUnknownRouteIgnored: events naming a route the topology does not have create no
// series and do not panic; the ended session is still listed in Recent.
func TestEventsOfUnknownRouteIgnored(t *testing.T) {
	f := newFixture(t, Thresholds{})
	m := f.m
	m.SessionAccepted("nope")
	m.QueueChanged("nope", 1)
	m.QueueWaited("nope", time.Millisecond)
	m.SessionEnded(frontend.Ended{ID: 9, Route: "nope", Cause: relay.CauseMaxConn, Refused: true})
	if o := m.SessionObserver("nope", f.srv); o != nil {
		t.Errorf("observer for an unknown route: %v", o)
	}
	if got := withLabel(t, f.reg, "route=nope"); len(got) > 0 {
		t.Errorf("series of an unknown route: %v", got)
	}
	if m.RouteTotal("nope") != 0 || m.RouteQueued("nope") != 0 {
		t.Errorf("unknown route counted")
	}
	if recent, _ := m.Recent(); len(recent) != 1 || recent[0].ID != 9 {
		t.Errorf("recent = %+v, want session 9", recent)
	}
}

// TestEventRacingRemovalLeavesNoSeries: an event that loaded the topology before a reload
// removed its route or server, and counts after the series were deleted, deletes what it
// recreated.
func TestEventRacingRemovalLeavesNoSeries(t *testing.T) {
	f := newFixture(t, Thresholds{})
	before := f.m.topo.Load()
	f.cl.SetServers(nil)
	f.m.SetTopology(nil, []*cluster.Cluster{f.cl}, 100)
	f.m.countEnded(before, frontend.Ended{Route: "rw", Cause: relay.CauseMaxConn, Refused: true})
	f.m.countTransition(before, f.srv, cluster.State{Up: true}, cluster.State{Up: false})
	if got := withLabel(t, f.reg, "route=rw", "server=pg"); len(got) > 0 {
		t.Errorf("series recreated by a racing event: %v", got)
	}
}

// TestObserverForServerNotYetInTopology: a session on a server a cluster gained before
// SetTopology ran is still observed for its route's series, without per-server counts.
func TestObserverForServerNotYetInTopology(t *testing.T) {
	f := newFixture(t, Thresholds{})
	pg3 := newServer("c", "pg3")
	f.cl.SetServers([]*cluster.Server{f.srv, pg3})
	o := f.m.SessionObserver("rw", pg3)
	if o == nil {
		t.Fatal("no observer")
	}
	o.Relayed(true, 42)
	o.QueryDone(time.Millisecond)
	if got := value(t, f.reg, "pgfront_bytes_total", "route", "rw", "direction", "client_to_server"); got != 42 {
		t.Errorf("bytes = %g, want 42", got)
	}
	if got := value(t, f.reg, "pgfront_query_duration_seconds", "route", "rw"); got != 1 {
		t.Errorf("query durations = %g, want 1", got)
	}
	// (The scrape-time server gauges read the cluster itself, so they show pg3 already.)
	for _, name := range []string{"pgfront_queries_total", "pgfront_server_check_duration_seconds"} {
		if _, ok := lookup(t, f.reg, name, "server", "pg3"); ok {
			t.Errorf("%s has a series of a server SetTopology has not seen", name)
		}
	}
}

// TestSetAlertsThresholds: a lowered threshold raises the alert at the next check (not
// before), and an alert turned off clears at the next check, logged once.
func TestSetAlertsThresholds(t *testing.T) {
	f := newFixture(t, Thresholds{CloseWait: 5})
	m, reg := f.m, f.reg
	f.setSockets(closeWait(40010), closeWait(40011))
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 0 {
		t.Fatal("close_wait active at 2 sockets with threshold 5")
	}
	m.SetAlerts(Thresholds{CloseWait: 2, Queue: 1}, 0)
	if got := value(t, reg, "pgfront_alert_threshold", "alert", "close_wait"); got != 2 {
		t.Errorf("threshold gauge = %g, want 2", got)
	}
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 0 {
		t.Fatal("close_wait active before the next check")
	}
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 1 {
		t.Fatal("close_wait not active at the check after the threshold was lowered")
	}
	if len(m.Alerts()) != 2 {
		t.Errorf("Alerts lists %d, want close_wait and queue", len(m.Alerts()))
	}

	m.SetAlerts(Thresholds{Queue: 1}, 0)
	if len(m.Alerts()) != 2 {
		t.Errorf("Alerts lists %d, want the turned-off close_wait until the next check, and queue", len(m.Alerts()))
	}
	m.check()
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 0 {
		t.Error("close_wait still active after it was turned off")
	}
	if n := strings.Count(f.logs.String(), `msg="alert cleared" alert=close_wait threshold=off`); n != 1 {
		t.Errorf("cleared logged %d times:\n%s", n, f.logs.String())
	}
	if a := m.Alerts(); len(a) != 1 || a[0].Name != AlertQueue {
		t.Errorf("Alerts = %+v, want queue only", a)
	}
	if got := value(t, reg, "pgfront_alert_threshold", "alert", "close_wait"); got != 0 {
		t.Errorf("threshold gauge = %g, want 0 (off)", got)
	}
	if got := value(t, reg, "pgfront_alerts_raised_total", "alert", "close_wait"); got != 1 {
		t.Errorf("raised %g times, want 1", got)
	}
}

// TestSetAlertsRestartsTicker: a shorter interval takes effect while the loop waits on the
// old one.
func TestSetAlertsRestartsTicker(t *testing.T) {
	f := newFixture(t, Thresholds{})
	f.m.SetAlerts(Thresholds{}, time.Hour)
	f.m.Start()
	defer f.m.Stop()
	waitSamples := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for value(t, f.reg, "pgfront_socket_samples_total", "result", "ok") < n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %g samples", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitSamples(1) // the first check runs at once
	f.m.SetAlerts(Thresholds{}, time.Millisecond)
	waitSamples(3)
}

// TestConfigFamilies: the config gauges describe the config started with, then each applied
// reload; failures are counted and change nothing else.
func TestConfigFamilies(t *testing.T) {
	start := time.Now()
	f := newFixture(t, Thresholds{})
	m, reg := f.m, f.reg
	check := func(name string, want float64, labels ...string) {
		t.Helper()
		if got, ok := lookup(t, reg, name, labels...); !ok || got != want {
			t.Errorf("%s%v = %g (present %v), want %g", name, labels, got, ok, want)
		}
	}
	check("pgfront_config_generation", 1)
	check("pgfront_config_info", 1, "hash", "h1")
	check("pgfront_config_reloads_total", 0, "result", "success")
	check("pgfront_config_reloads_total", 0, "result", "failure")
	if ts := value(t, reg, "pgfront_config_last_reload_success_timestamp_seconds"); ts < float64(start.Unix()) {
		t.Errorf("last success %g, want the start time (>= %d)", ts, start.Unix())
	}

	m.ConfigReloadFailed()
	check("pgfront_config_reloads_total", 1, "result", "failure")
	check("pgfront_config_reloads_total", 0, "result", "success")
	check("pgfront_config_generation", 1)

	at := time.Unix(1_900_000_000, 500_000_000)
	m.ConfigApplied(2, "h2", at)
	check("pgfront_config_reloads_total", 1, "result", "success")
	check("pgfront_config_generation", 2)
	check("pgfront_config_last_reload_success_timestamp_seconds", 1_900_000_000.5)
	check("pgfront_config_info", 1, "hash", "h2")
	if got := withLabel(t, reg, "hash=h1"); len(got) > 0 {
		t.Errorf("the old config's info series is left: %v", got)
	}
}
