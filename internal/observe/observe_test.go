package observe

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/admission"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/logtest"
	"github.com/pgfront/pgfront/internal/netx"
	"github.com/pgfront/pgfront/internal/relay"
	"github.com/pgfront/pgfront/internal/sockmon"
	"github.com/pgfront/pgfront/internal/version"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type lockedBuffer = logtest.Buffer

// fixture is Metrics over one route "rw" on cluster "c" with server "pg", a scripted kernel
// socket table and a scripted descriptor count.
type fixture struct {
	m        *Metrics
	reg      *prometheus.Registry
	srv      *cluster.Server
	cl       *cluster.Cluster
	logs     *lockedBuffer
	mu       sync.Mutex
	socks    []netx.Socket
	sessions []frontend.SessionInfo
	fds      [2]int
	cert     *fakeCert // route rw's TLS certificate
}

// fakeCert is a route certificate whose leaf a test replaces (a reload).
type fakeCert struct {
	file string
	leaf atomic.Pointer[x509.Certificate]
}

func (c *fakeCert) set(cn string, notAfter time.Time) {
	c.leaf.Store(&x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotAfter: notAfter})
}

func (c *fakeCert) Leaf() *x509.Certificate { return c.leaf.Load() }
func (c *fakeCert) CertFile() string        { return c.file }

var (
	routeAddr = netip.MustParseAddrPort("127.0.0.1:6432")
	pgAddr    = netip.MustParseAddrPort("127.0.0.1:5432")
)

func newFixture(t *testing.T, th Thresholds) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), logs: &lockedBuffer{}, fds: [2]int{10, 1000}, cert: &fakeCert{file: "/etc/pgfront/rw.crt"}}
	f.cert.set("pgfront-rw", time.Unix(1_900_000_000, 0))
	f.srv = newServer("c", "pg")
	f.cl = cluster.NewCluster("c", []*cluster.Server{f.srv}, false)
	mon := sockmon.New(sockmon.Options{Read: func(dst []netx.Socket) ([]netx.Socket, string, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return append(dst, f.socks...), "test", nil
	}})
	mon.AddListener("rw", routeAddr)
	f.m = New(Options{
		Registerer: f.reg,
		Routes:     []Route{{Name: "rw", Clusters: []*cluster.Cluster{f.cl}, MaxConn: 7, Certificate: f.cert}},
		Clusters:   []*cluster.Cluster{f.cl},
		MaxConn:    100,
		Sockets:    mon,
		Alerts:     th,
		ConfigHash: "h1",
		Logger:     slog.New(slog.NewTextHandler(f.logs, nil)),
		FDs: func() (int, int, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.fds[0], f.fds[1], nil
		},
	})
	f.m.SetSessions(func(dst []frontend.SessionInfo) []frontend.SessionInfo {
		f.mu.Lock()
		defer f.mu.Unlock()
		return append(dst, f.sessions...)
	}, func() int { return 3 })
	return f
}

func (f *fixture) setSockets(socks ...netx.Socket) {
	f.mu.Lock()
	f.socks = socks
	f.mu.Unlock()
}

// closeWait is a client-side socket of route rw in CLOSE_WAIT, peer port p.
func closeWait(p uint16) netx.Socket {
	return netx.Socket{Local: routeAddr, Remote: netip.AddrPortFrom(routeAddr.Addr(), p), State: netx.TCPCloseWait, Inode: uint64(p)}
}

func newServer(clusterName, name string) *cluster.Server {
	return cluster.NewServer(clusterName, name, pgAddr.String(), cluster.RolePrimary, 1, admission.New(0).NewLimit(name, 0))
}

func value(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	v, ok := lookup(t, reg, name, labels...)
	if !ok {
		t.Fatalf("no sample of %s%v", name, labels)
	}
	return v
}

// lookup is value, reporting a missing series rather than failing.
func lookup(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, fam := range fams {
		if fam.GetName() != name {
			continue
		}
	next:
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// TestFamiliesMatchRegistry: every family in the table is exported once the proxy has done
// something, and nothing pgfront_* is exported that the table does not list (so the rules and
// dashboard checks in deploy/ see the truth).
func TestFamiliesMatchRegistry(t *testing.T) {
	f := newFixture(t, Thresholds{CloseWait: 1})
	m := f.m
	m.SessionAccepted("rw")
	m.QueueChanged("rw", 1)
	m.QueueWaited("rw", time.Millisecond)
	m.SessionEnded(frontend.Ended{Route: "rw", Cause: relay.CauseMaxConn, Refused: true})
	m.CancelRequest("rw", "forwarded")
	m.TLSHandshake("rw", frontend.TLSResultOK)
	o := m.SessionObserver("rw", f.srv)
	o.Relayed(true, 10)
	o.Relayed(false, 20)
	o.QueryDone(time.Millisecond)
	o.TransactionDone(time.Millisecond)
	m.ServerChecked(f.srv, time.Millisecond)
	f.cl.Modify(f.srv, func(st *cluster.State) {
		st.Role, st.LagSeconds, st.LastCheck = cluster.RoleReplica, 0.5, time.Now()
		st.LSN = 1 // byte lag needs a primary position; none here: lag bytes stay unknown
	})
	f.setSockets(closeWait(40000))
	m.check()

	fams, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, fam := range fams {
		exported[fam.GetName()] = true
	}
	listed := map[string]bool{}
	for _, fam := range Families() {
		listed[fam.Name] = true
		// Series that exist only with a DCS role source: DCSUp is tested in dcs_test.go.
		dcsOnly := fam.Name == famDCSUp.Name || fam.Name == famDCSLeaderChanges.Name
		if !exported[fam.Name] && fam.Name != famServerLagBytes.Name && !dcsOnly {
			t.Errorf("family %s is listed but not exported", fam.Name)
		}
	}
	for name := range exported {
		if strings.HasPrefix(name, "pgfront_") && !listed[name] {
			t.Errorf("family %s is exported but not listed in Families()", name)
		}
	}
	for _, want := range []string{"go_goroutines", "process_open_fds"} {
		if !exported[want] {
			t.Errorf("%s not exported: Go and process collectors missing", want)
		}
	}
	// Labels as the table says.
	for _, fam := range fams {
		for _, def := range Families() {
			if def.Name != fam.GetName() {
				continue
			}
			for _, mm := range fam.GetMetric() {
				if got := labelNames(mm); strings.Join(got, ",") != strings.Join(sortedCopy(def.Labels), ",") {
					t.Errorf("%s has labels %v, table says %v", def.Name, got, def.Labels)
				}
			}
		}
	}
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName())
	}
	return out // the client library sorts them
}

func sortedCopy(xs []string) []string {
	out := append([]string(nil), xs...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestEventsCount(t *testing.T) {
	f := newFixture(t, Thresholds{})
	m, reg := f.m, f.reg
	m.SessionAccepted("rw")
	m.SessionAccepted("rw")
	m.SessionAccepted("nope") // unknown routes are ignored, never a new label value
	m.AcceptFailed("rw")
	m.AcceptFailed("nope")
	m.SessionEnded(frontend.Ended{ID: 1, Route: "rw", Server: f.srv, Cause: relay.CauseClientTerminate})
	m.SessionEnded(frontend.Ended{ID: 2, Route: "rw", Cause: relay.CauseQueueTimeout, Refused: true})
	m.SessionEnded(frontend.Ended{ID: 3, Route: "rw", Cause: relay.CauseCancelRequest})
	o := m.SessionObserver("rw", f.srv)
	for range 3 {
		o.QueryDone(2 * time.Millisecond)
	}
	o.TransactionDone(5 * time.Millisecond)
	o.Relayed(true, 100)
	o.Relayed(false, 250)

	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfront_sessions_total", []string{"route", "rw"}, 2},
		{"pgfront_accept_errors_total", []string{"route", "rw"}, 1},
		{"pgfront_sessions_ended_total", []string{"route", "rw", "cause", "client_terminate"}, 1},
		{"pgfront_sessions_ended_total", []string{"route", "rw", "cause", "queue_timeout"}, 1},
		{"pgfront_refusals_total", []string{"route", "rw", "reason", "queue_timeout"}, 1},
		{"pgfront_queries_total", []string{"route", "rw", "server", "pg"}, 3},
		{"pgfront_query_duration_seconds", []string{"route", "rw"}, 3},
		{"pgfront_transactions_total", []string{"route", "rw", "server", "pg"}, 1},
		{"pgfront_bytes_total", []string{"route", "rw", "direction", "client_to_server"}, 100},
		{"pgfront_bytes_total", []string{"route", "rw", "direction", "server_to_client"}, 250},
		{"pgfront_route_maxconn", []string{"route", "rw"}, 7},
		{"pgfront_maxconn", nil, 100},
		{"pgfront_parked_sessions", nil, 3},
	}
	for _, c := range checks {
		if got := value(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.ended); n != 3 {
		t.Errorf("ended series = %d, want 3 (no series for unknown routes)", n)
	}
	if m.RouteTotal("rw") != 2 {
		t.Errorf("RouteTotal = %d", m.RouteTotal("rw"))
	}
	recent, byCause := m.Recent()
	if len(recent) != 2 || recent[0].ID != 2 || recent[1].ID != 1 {
		t.Errorf("recent = %+v, want sessions 2, 1 (cancel requests are not sessions)", recent)
	}
	if byCause["client_terminate"] != 1 || byCause["queue_timeout"] != 1 || byCause["cancel_request"] != 0 {
		t.Errorf("by cause = %v", byCause)
	}
}

func TestRecentKeepsTheNewest(t *testing.T) {
	var r recentList
	r.init(recentSize)
	for i := 1; i <= 250; i++ {
		r.add(frontend.Ended{ID: uint64(i), Cause: relay.CauseClientEOF})
	}
	list, counts := r.list()
	if len(list) != recentSize || list[0].ID != 250 || list[recentSize-1].ID != 151 {
		t.Fatalf("ring holds %d, first %d last %d", len(list), list[0].ID, list[len(list)-1].ID)
	}
	if counts["client_eof"] != 250 {
		t.Fatalf("counts = %v", counts)
	}
}

// TestAlertsOncePerEpisode: an alert is raised once while its value stays over the threshold,
// logged once each way, and shows in the gauges and in Alerts.
func TestAlertsOncePerEpisode(t *testing.T) {
	f := newFixture(t, Thresholds{CloseWait: 2, HalfClosedAge: time.Second, Queue: 1, FDUsage: 0.5})
	m, reg := f.m, f.reg
	if got := value(t, reg, "pgfront_alert_threshold", "alert", "fin_wait2"); got != 0 {
		t.Errorf("fin_wait2 threshold = %g, want 0 (off)", got)
	}
	f.setSockets(closeWait(40001))
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 0 {
		t.Fatalf("close_wait active at 1 socket with threshold 2")
	}
	f.setSockets(closeWait(40001), closeWait(40002))
	m.check()
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 1 {
		t.Fatalf("close_wait not active at 2 sockets")
	}
	if got := value(t, reg, "pgfront_sockets", "route", "rw", "side", "client", "state", "CLOSE_WAIT"); got != 2 {
		t.Fatalf("pgfront_sockets CLOSE_WAIT = %g", got)
	}
	if n := strings.Count(f.logs.String(), `msg="alert raised" alert=close_wait value=2 threshold=2`); n != 1 {
		t.Fatalf("raised logged %d times:\n%s", n, f.logs.String())
	}
	var st AlertState
	for _, a := range m.Alerts() {
		if a.Name == AlertCloseWait {
			st = a
		}
	}
	if !st.Active || st.Value != 2 || st.Threshold != 2 || st.Since.IsZero() || st.Message == "" {
		t.Fatalf("close_wait state: %+v", st)
	}
	if len(m.Alerts()) != 4 {
		t.Errorf("Alerts lists %d, want the 4 enabled ones", len(m.Alerts()))
	}

	f.setSockets()
	m.check()
	if got := value(t, reg, "pgfront_alert_active", "alert", "close_wait"); got != 0 {
		t.Fatal("close_wait still active")
	}
	if n := strings.Count(f.logs.String(), `msg="alert cleared" alert=close_wait`); n != 1 {
		t.Fatalf("cleared logged %d times:\n%s", n, f.logs.String())
	}
	if got := value(t, reg, "pgfront_alerts_raised_total", "alert", "close_wait"); got != 1 {
		t.Fatalf("raised counted %g times", got)
	}

	// The other alerts: a half-closed session older than 1s, a queued client, fd usage.
	f.mu.Lock()
	f.sessions = []frontend.SessionInfo{{Route: "rw", Phase: frontend.PhaseRelaying,
		Relay: relay.State{TxStatus: 'I', HalfClosedSince: time.Now().Add(-3 * time.Second)}}}
	f.fds = [2]int{600, 1000}
	f.mu.Unlock()
	m.QueueChanged("rw", 1)
	m.check()
	for _, name := range []string{AlertHalfClosedAge, AlertQueue, AlertFDUsage} {
		if got := value(t, reg, "pgfront_alert_active", "alert", name); got != 1 {
			t.Errorf("%s not active", name)
		}
	}
	if got := value(t, reg, "pgfront_half_closed_sessions", "route", "rw"); got != 1 {
		t.Errorf("half-closed sessions = %g", got)
	}
	if got := value(t, reg, "pgfront_half_closed_oldest_seconds", "route", "rw"); got < 3 {
		t.Errorf("oldest half-closed = %g s", got)
	}
	if !strings.Contains(f.logs.String(), `alert=fd_usage value=60.0% threshold=50.0%`) {
		t.Errorf("fd_usage log line:\n%s", f.logs.String())
	}
}

func TestStartStop(t *testing.T) {
	f := newFixture(t, Thresholds{CloseWait: 1})
	f.m.SetAlerts(Thresholds{CloseWait: 1}, time.Millisecond)
	f.setSockets(closeWait(40003))
	f.m.Start()
	f.m.Start() // a second Start is a no-op
	deadline := time.Now().Add(5 * time.Second)
	for value(t, f.reg, "pgfront_socket_samples_total", "result", "ok") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not sample")
		}
		time.Sleep(time.Millisecond)
	}
	f.m.Stop()
	f.m.Stop()
}

// TestBuildInfo: pgfront_build_info is one series, 1, labelled with what `pgfront version`
// says.
func TestBuildInfo(t *testing.T) {
	f := newFixture(t, Thresholds{})
	v := version.Get()
	if got := value(t, f.reg, "pgfront_build_info", "version", v.Version, "revision", v.Revision, "goversion", v.GoVersion); got != 1 {
		t.Errorf("pgfront_build_info = %v, want 1", got)
	}
	fams, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() == "pgfront_build_info" && len(fam.GetMetric()) != 1 {
			t.Errorf("pgfront_build_info has %d series, want 1", len(fam.GetMetric()))
		}
	}
}

// TestTLSMetrics: handshakes count by route and result, every result is there from the start,
// an unknown route brings no series, and the certificate's expiry follows a reload.
func TestTLSMetrics(t *testing.T) {
	f := newFixture(t, Thresholds{})
	m, reg := f.m, f.reg
	for _, r := range frontend.TLSResults() {
		if got := value(t, reg, "pgfront_tls_handshakes_total", "route", "rw", "result", r); got != 0 {
			t.Errorf("result %s starts at %g", r, got)
		}
	}
	m.TLSHandshake("rw", frontend.TLSResultOK)
	m.TLSHandshake("rw", frontend.TLSResultClientRejectedCertificate)
	m.TLSHandshake("rw", frontend.TLSResultClientRejectedCertificate)
	m.TLSHandshake("gone", frontend.TLSResultOK)
	if got := value(t, reg, "pgfront_tls_handshakes_total", "route", "rw", "result", "client_rejected_certificate"); got != 2 {
		t.Errorf("client_rejected_certificate = %g, want 2", got)
	}
	if n := testutil.CollectAndCount(m.tlsHandshakes); n != len(frontend.TLSResults()) {
		t.Errorf("%d handshake series, want one per result of route rw", n)
	}
	expiry := func() float64 {
		return value(t, reg, "pgfront_tls_certificate_expiry_timestamp_seconds", "route", "rw", "file", "/etc/pgfront/rw.crt")
	}
	if got := expiry(); got != 1_900_000_000 {
		t.Errorf("expiry %g, want the certificate's NotAfter", got)
	}
	f.cert.set("pgfront-rw-renewed", time.Unix(1_950_000_000, 0))
	if got := expiry(); got != 1_950_000_000 {
		t.Errorf("expiry after the reload %g, want the new certificate's", got)
	}
	if _, ok := lookup(t, reg, "pgfront_tls_certificate_expiry_timestamp_seconds", "subject", "CN=pgfront-rw"); ok {
		t.Error("the replaced certificate's series is still exported")
	}
	m.SetTopology(nil, nil, 0) // the route goes: its series with it
	if n := testutil.CollectAndCount(m.tlsHandshakes); n != 0 {
		t.Errorf("%d handshake series after the route was removed", n)
	}
	if _, ok := lookup(t, reg, "pgfront_tls_certificate_expiry_timestamp_seconds"); ok {
		t.Error("expiry exported for a removed route")
	}
}
