package app_test

// Metrics asserted against real scenarios: real PostgreSQL, real pgfront, real sockets, the
// kernel's own view of them.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgfront/pgfront/internal/pgtest"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// metric returns the value of the one sample of family name whose labels include the given
// name=value pairs: a counter's or gauge's value, a histogram's sample count. ok is false when
// no sample matches.
func (e *env) metric(name string, labels ...string) (float64, bool) {
	e.t.Helper()
	fams, err := e.app.Registry().Gather()
	if err != nil {
		e.t.Fatalf("gathering metrics: %v", err)
	}
	return findMetric(fams, name, labels...)
}

func findMetric(fams []*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
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

// value is metric with a missing sample read as 0.
func (e *env) value(name string, labels ...string) float64 {
	e.t.Helper()
	v, _ := e.metric(name, labels...)
	return v
}

// waitMetric waits until the metric has the wanted value.
func (e *env) waitMetric(within time.Duration, want float64, name string, labels ...string) {
	e.t.Helper()
	waitFor(e.t, within, fmt.Sprintf("%s%v = %g (now %g)", name, labels, want, e.value(name, labels...)), func() bool {
		return e.value(name, labels...) == want
	})
}

// fastAlerts samples sockets and checks alerts every 100ms, with CLOSE_WAIT and FIN_WAIT2
// alerts at one socket.
const fastAlerts = `
alerts:
  sample_interval: 100ms
  close_wait: 1
  fin_wait2: 1
  half_closed_age: 1s
`

func TestMetricsFollowSessions(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_fin: 3s\n", fastAlerts))
	rw := []string{"route", "rw"}
	onPG := []string{"route", "rw", "cluster", "c", "server", "pg"}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.connect("rw")
	for i := range 3 {
		var n int
		if err := c.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	if got := e.value("pgfront_sessions_total", rw...); got != 1 {
		t.Errorf("pgfront_sessions_total = %g, want 1", got)
	}
	if got := e.value("pgfront_route_sessions", rw...); got != 1 {
		t.Errorf("pgfront_route_sessions = %g, want 1", got)
	}
	if got := e.value("pgfront_server_sessions", "cluster", "c", "server", "pg"); got != 1 {
		t.Errorf("pgfront_server_sessions = %g, want 1", got)
	}
	queries := e.value("pgfront_queries_total", onPG...)
	if queries < 3 {
		t.Errorf("pgfront_queries_total = %g after 3 queries", queries)
	}
	if got := e.value("pgfront_query_duration_seconds", rw...); got != queries {
		t.Errorf("query duration samples = %g, queries = %g", got, queries)
	}
	for _, dir := range []string{"client_to_server", "server_to_client"} {
		if got := e.value("pgfront_bytes_total", "route", "rw", "direction", dir); got <= 0 {
			t.Errorf("pgfront_bytes_total %s = %g", dir, got)
		}
	}
	if e.value("pgfront_server_up", "cluster", "c", "server", "pg") != 1 ||
		e.value("pgfront_server_role", "cluster", "c", "server", "pg", "role", "primary") != 1 {
		t.Errorf("server pg not reported up and primary")
	}

	// A transaction: idle inside it shows; its end counts once, with its duration.
	txBefore := e.value("pgfront_transactions_total", onPG...)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.waitMetric(5*time.Second, 1, "pgfront_idle_in_transaction_sessions", rw...)
	if got := e.value("pgfront_transactions_total", onPG...); got != txBefore {
		t.Errorf("transactions counted before COMMIT: %g -> %g", txBefore, got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitMetric(5*time.Second, 0, "pgfront_idle_in_transaction_sessions", rw...)
	if got := e.value("pgfront_transactions_total", onPG...); got != txBefore+1 {
		t.Errorf("pgfront_transactions_total = %g after one transaction, want %g", got, txBefore+1)
	}
	if got := e.value("pgfront_transaction_duration_seconds", rw...); got != txBefore+1 {
		t.Errorf("transaction duration samples = %g, want %g", got, txBefore+1)
	}

	closeConn(c)
	e.waitMetric(5*time.Second, 1, "pgfront_sessions_ended_total", "route", "rw", "cause", "client_terminate")
	e.waitMetric(5*time.Second, 0, "pgfront_route_sessions", rw...)

	// Half-close: the server ends the session and the client neither reads nor closes. The
	// session shows as half-closed, pgfront's server side sits in CLOSE_WAIT and its client
	// side in FIN_WAIT2 (both seen by the kernel), the alerts fire; after client_fin it is all
	// gone and the alerts clear.
	hc := hcDial(t, e, "rw")
	hcTerminateBackend(t, p, hc.pid)
	serverSide := []string{"route", "rw", "side", "server", "cluster", "c", "server", "pg"}
	e.waitMetric(5*time.Second, 1, "pgfront_half_closed_sessions", rw...)
	e.waitMetric(5*time.Second, 1, "pgfront_sockets", append(serverSide, "state", "CLOSE_WAIT")...)
	e.waitMetric(5*time.Second, 1, "pgfront_sockets", "route", "rw", "side", "client", "state", "FIN_WAIT2")
	e.waitMetric(5*time.Second, 1, "pgfront_alert_active", "alert", "close_wait")
	e.waitMetric(5*time.Second, 1, "pgfront_alert_active", "alert", "half_closed_age")
	if age := e.value("pgfront_half_closed_oldest_seconds", rw...); age < 1 {
		t.Errorf("pgfront_half_closed_oldest_seconds = %g while the half_closed_age alert (1s) is active", age)
	}
	if !strings.Contains(e.logs.String(), `msg="alert raised" alert=close_wait value=1 threshold=1`) {
		t.Errorf("no alert log line for close_wait:\n%s", e.logs.String())
	}

	e.waitMetric(10*time.Second, 1, "pgfront_sessions_ended_total", "route", "rw", "cause", "client_fin_timeout")
	e.waitMetric(5*time.Second, 0, "pgfront_half_closed_sessions", rw...)
	e.waitMetric(5*time.Second, 0, "pgfront_sockets", append(serverSide, "state", "CLOSE_WAIT")...)
	e.waitMetric(5*time.Second, 0, "pgfront_alert_active", "alert", "close_wait")
	waitFor(t, 5*time.Second, "the alert cleared log line", func() bool {
		return strings.Contains(e.logs.String(), `msg="alert cleared" alert=close_wait`)
	})
	if got := e.value("pgfront_alerts_raised_total", "alert", "close_wait"); got != 1 {
		t.Errorf("close_wait raised %g times for one episode", got)
	}
	// pgfront closed its client side after client_fin; that socket is the kernel's orphan now
	// (FIN_WAIT2 until the client closes or tcp_fin_timeout). The client closes: gone.
	_ = hc.conn.Close()
	e.waitMetric(5*time.Second, 0, "pgfront_sockets", "route", "rw", "side", "client", "state", "FIN_WAIT2")
}

func TestMetricsQueueRefusalsAndCancels(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "maxconn: 1\ntimeouts:\n  queue: 10s\n", ""))
	rw := []string{"route", "rw"}

	a := e.connect("rw")
	type result struct {
		c   *pgx.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.dsn("rw"))
		done <- result{c, err}
	}()
	e.waitMetric(5*time.Second, 1, "pgfront_queued_sessions", rw...)
	closeConn(a)
	r := <-done
	if r.err != nil {
		t.Fatalf("queued client: %v", r.err)
	}
	defer closeConn(r.c)
	e.waitMetric(5*time.Second, 0, "pgfront_queued_sessions", rw...)
	if got := e.value("pgfront_queue_wait_seconds", rw...); got != 1 {
		t.Errorf("queue wait samples = %g, want 1", got)
	}

	// A client that speaks garbage is refused with a FATAL: a refusal by reason.
	conn, err := net.Dial("tcp", e.addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_, _ = io.ReadAll(conn)
	conn.Close()
	e.waitMetric(5*time.Second, 1, "pgfront_refusals_total", "route", "rw", "reason", "protocol_error")

	// A CancelRequest for a key nobody holds: sent on to the route's server (the fallback).
	conn, err = net.Dial("tcp", e.addr("rw").String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write(pgwire.EncodeCancelRequest(pgwire.CancelKey{ProcessID: 1, Secret: "\x01\x02\x03\x04"}))
	_, _ = io.ReadAll(conn)
	conn.Close()
	e.waitMetric(5*time.Second, 1, "pgfront_cancel_requests_total", "route", "rw", "result", "fallback")
	// The request is counted before its connection's end is: wait for the end too.
	e.waitMetric(5*time.Second, 1, "pgfront_sessions_ended_total", "route", "rw", "cause", "cancel_request")

	// Health checks are timed per server.
	waitFor(t, 15*time.Second, "a health check observed", func() bool {
		return e.value("pgfront_server_check_duration_seconds", "cluster", "c", "server", "pg") > 0
	})
}

// TestMetricsEndpoint scrapes /metrics over HTTP like Prometheus does and parses it.
func TestMetricsEndpoint(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "", fastAlerts))
	e.connect("rw")
	e.waitMetric(5*time.Second, 1, "pgfront_sockets", "route", "rw", "side", "server", "server", "pg", "state", "ESTABLISHED")
	// A socket sample is a netlink dump taken while the machine runs: one may miss a socket
	// that another one sees, so the scrape is repeated (bounded) until it shows them all.
	var missing []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing = scrapeMissing(t, e)
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range missing {
		t.Error(m)
	}
}

// scrapeMissing GETs /metrics and lists what TestMetricsEndpoint wants and did not find.
func scrapeMissing(t *testing.T, e *env) []string {
	t.Helper()
	resp, err := http.Get("http://" + e.app.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].GetName() < list[j].GetName() })
	var missing []string
	for _, want := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"pgfront_route_sessions", []string{"route", "rw"}, 1},
		{"pgfront_sockets", []string{"route", "rw", "side", "client", "state", "ESTABLISHED"}, 1},
		{"pgfront_sockets", []string{"route", "rw", "side", "server", "server", "pg", "state", "ESTABLISHED"}, 1},
		{"pgfront_alert_threshold", []string{"alert", "close_wait"}, 1},
		{"go_goroutines", nil, 1},
		{"process_open_fds", nil, 1},
		{"process_max_fds", nil, 1},
	} {
		v, ok := findMetric(list, want.name, want.labels...)
		if !ok || v < want.min {
			missing = append(missing, fmt.Sprintf("/metrics %s%v = %g (present %v), want >= %g", want.name, want.labels, v, ok, want.min))
		}
	}
	return missing
}
