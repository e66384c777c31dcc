package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Answers of Patroni's GET /patroni, as Patroni 3.0 and 4.0 give them.
const (
	patroniMaster = `{"state": "running", "postmaster_start_time": "2023-05-01 10:00:00.000000+00:00",
		"role": "master", "server_version": 150002, "xlog": {"location": 67109208}, "timeline": 1,
		"replication": [{"usename": "replicator", "application_name": "pg2", "client_addr": "10.0.0.2",
		"state": "streaming", "sync_state": "async", "sync_priority": 0}], "dcs_last_seen": 1682935200,
		"database_system_identifier": "7228103467426189347", "patroni": {"version": "3.0.2", "scope": "demo"}}`
	patroniPrimary = `{"state": "running", "role": "primary", "server_version": 160002,
		"xlog": {"location": 100663296}, "timeline": 2, "patroni": {"version": "4.0.0", "scope": "demo", "name": "pg1"}}`
	patroniReplica = `{"state": "running", "role": "replica", "server_version": 150002,
		"xlog": {"received_location": 67109208, "replayed_location": 67109208, "replayed_timestamp": null, "paused": false},
		"timeline": 1, "replication_state": "streaming", "patroni": {"version": "3.0.2", "scope": "demo"}}`
	patroniReplicaBehind = `{"state": "running", "role": "replica",
		"xlog": {"received_location": 200, "replayed_location": 100, "replayed_timestamp": "2023-05-01 10:00:00+00:00", "paused": true},
		"replication_state": "streaming"}`
	patroniStandbyLeader = `{"state": "running", "role": "standby_leader", "xlog": {"received_location": 5, "replayed_location": 5}}`
	patroniStopped       = `{"state": "stopped", "role": "replica", "patroni": {"version": "3.0.2", "scope": "demo"}}`
	patroniStarting      = `{"state": "starting", "role": "replica"}`
	patroniDemoted       = `{"state": "running", "role": "demoted"}`
)

// patroniNow is the checkers' clock in these tests: 90s after the replayed_timestamp of
// patroniReplicaBehind.
var patroniNow = time.Date(2023, 5, 1, 10, 1, 30, 0, time.UTC)

// More answers: Patroni details routes use.
const (
	// A replica tagged noloadbalance (a JSON true) that is a synchronous standby (3.x form),
	// 2.5s behind (Python's str() of a datetime in another time zone).
	patroniSyncNoLB = `{"state": "running", "role": "replica", "sync_standby": true,
		"xlog": {"received_location": 300, "replayed_location": 200, "replayed_timestamp": "2023-05-01 12:01:27.500000+02:00", "paused": false},
		"tags": {"noloadbalance": true, "nofailover": false}}`
	// The role form of a synchronous standby, the tag as a string, and an ISO 8601 timestamp
	// that is ahead of pgfront's clock (skew): lag 0, never negative.
	patroniSyncRole = `{"state": "running", "role": "sync_standby", "tags": {"noloadbalance": "on"},
		"xlog": {"received_location": 300, "replayed_location": 200, "replayed_timestamp": "2023-05-01T10:02:00Z"}}`
	// Tags that do not say noloadbalance.
	patroniTagsOff = `{"state": "running", "role": "replica", "tags": {"noloadbalance": "false", "clonefrom": true},
		"xlog": {"received_location": 5, "replayed_location": 5}}`
	// An unparsable timestamp: lag unknown.
	patroniBadTimestamp = `{"state": "running", "role": "replica", "tags": {"noloadbalance": {"x": 1}},
		"xlog": {"received_location": 300, "replayed_location": 200, "replayed_timestamp": "yesterday"}}`
)

type answer struct {
	code int
	body string
}

// fakePatroni serves fixed answers per path and records the requests.
type fakePatroni struct {
	answers map[string]answer
	handler map[string]http.HandlerFunc

	mu       sync.Mutex
	paths    []string
	keptOpen bool // a request did not ask to close its connection
}

func (f *fakePatroni) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.URL.Path)
	if !r.Close {
		f.keptOpen = true
	}
	f.mu.Unlock()
	if h := f.handler[r.URL.Path]; h != nil {
		h(w, r)
		return
	}
	a, ok := f.answers[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.code)
	_, _ = w.Write([]byte(a.body))
}

func (f *fakePatroni) requested() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.paths...)
}

func startPatroni(t *testing.T, f *fakePatroni) *PatroniChecker {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := NewPatroni(PatroniOptions{URL: srv.URL + "/", Now: func() time.Time { return patroniNow }})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func checkWithin(c Checker, d time.Duration) Observation {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Check(ctx)
}

func TestPatroni(t *testing.T) {
	ok200 := func(body string) answer { return answer{200, body} }
	tests := []struct {
		name    string
		answers map[string]answer
		want    Observation // Err and Duration not compared
		wantErr string
		paths   []string // requested, in order
	}{
		{"master (3.0)", map[string]answer{"/patroni": ok200(patroniMaster)},
			Observation{OK: true, Role: RolePrimary, LSN: 67109208}, "", []string{"/patroni"}},
		{"primary (4.0)", map[string]answer{"/patroni": ok200(patroniPrimary)},
			Observation{OK: true, Role: RolePrimary, LSN: 100663296}, "", []string{"/patroni"}},
		{"replica", map[string]answer{"/patroni": ok200(patroniReplica)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 67109208}, "", []string{"/patroni"}},
		{"replica behind: lag from replayed_timestamp", map[string]answer{"/patroni": ok200(patroniReplicaBehind)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 100, LagSeconds: 90}, "", []string{"/patroni"}},
		{"sync standby tagged noloadbalance", map[string]answer{"/patroni": ok200(patroniSyncNoLB)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 200, LagSeconds: 2.5, NoLoadBalance: true, SyncStandby: true}, "", []string{"/patroni"}},
		{"sync_standby role, string tag, clock skew", map[string]answer{"/patroni": ok200(patroniSyncRole)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 200, LagSeconds: 0, NoLoadBalance: true, SyncStandby: true}, "", []string{"/patroni"}},
		{"tags without noloadbalance", map[string]answer{"/patroni": ok200(patroniTagsOff)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 5}, "", []string{"/patroni"}},
		{"unparsable timestamp and odd tag", map[string]answer{"/patroni": ok200(patroniBadTimestamp)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 200, LagSeconds: -1}, "", []string{"/patroni"}},
		{"standby leader", map[string]answer{"/patroni": ok200(patroniStandbyLeader)},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 5}, "", []string{"/patroni"}},
		{"demoted", map[string]answer{"/patroni": ok200(patroniDemoted)},
			Observation{OK: true, Role: RoleUnknown, LagSeconds: -1}, "", []string{"/patroni"}},
		{"stopped", map[string]answer{"/patroni": {503, patroniStopped}},
			Observation{LagSeconds: -1}, `state "stopped"`, []string{"/patroni"}},
		{"starting", map[string]answer{"/patroni": {503, patroniStarting}},
			Observation{LagSeconds: -1}, `state "starting"`, []string{"/patroni"}},
		{"not JSON: fallback to /primary", map[string]answer{"/patroni": ok200("<html>hello</html>"), "/primary": ok200("")},
			Observation{OK: true, Role: RolePrimary}, "", []string{"/patroni", "/primary"}},
		{"no state: fallback to /replica", map[string]answer{"/patroni": ok200(`{"role": "master"}`), "/primary": {503, ""}, "/replica": ok200("")},
			Observation{OK: true, Role: RoleReplica, InRecovery: true, LagSeconds: -1}, "", []string{"/patroni", "/primary", "/replica"}},
		{"not found: fallback fails", map[string]answer{"/primary": {503, ""}, "/replica": {503, ""}},
			Observation{LagSeconds: -1}, "/patroni answered 404", []string{"/patroni", "/primary", "/replica"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakePatroni{answers: tt.answers}
			obs := checkWithin(startPatroni(t, f), 10*time.Second)
			if obs.Duration <= 0 {
				t.Errorf("Duration %v", obs.Duration)
			}
			gotErr := obs.Err
			obs.Err, obs.Duration = nil, 0
			if obs != tt.want {
				t.Errorf("got %+v, want %+v (err %v)", obs, tt.want, gotErr)
			}
			switch {
			case tt.wantErr == "" && gotErr != nil:
				t.Errorf("error %v", gotErr)
			case tt.wantErr != "" && (gotErr == nil || !strings.Contains(gotErr.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", gotErr, tt.wantErr)
			}
			if got := f.requested(); strings.Join(got, " ") != strings.Join(tt.paths, " ") {
				t.Errorf("requested %v, want %v", got, tt.paths)
			}
			if f.keptOpen {
				t.Error("a request did not ask to close its connection (keep-alive)")
			}
		})
	}
}

// TestPatroniNoRedirect: a redirect is an unusable answer, not followed.
func TestPatroniNoRedirect(t *testing.T) {
	f := &fakePatroni{
		answers: map[string]answer{"/elsewhere": {200, patroniReplica}, "/primary": {200, ""}},
		handler: map[string]http.HandlerFunc{"/patroni": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}},
	}
	obs := checkWithin(startPatroni(t, f), 10*time.Second)
	if !obs.OK || obs.Role != RolePrimary {
		t.Errorf("got %+v, want primary from the /primary fallback", obs)
	}
	if got := f.requested(); strings.Join(got, " ") != "/patroni /primary" {
		t.Errorf("requested %v, want /patroni /primary (no redirect followed)", got)
	}
}

// TestPatroniSlow: a node that does not answer is bounded by the check's context.
func TestPatroniSlow(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := &fakePatroni{handler: map[string]http.HandlerFunc{"/patroni": func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}}}
	c := startPatroni(t, f)
	start := time.Now()
	obs := checkWithin(c, 200*time.Millisecond)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("check took %v with a 200ms deadline", took)
	}
	if obs.OK || !errors.Is(obs.Err, context.DeadlineExceeded) {
		t.Errorf("got %+v, want a deadline failure", obs)
	}
}

// TestPatroniHugeBody: an endless answer is cut at 64 KB and counts as unusable.
func TestPatroniHugeBody(t *testing.T) {
	f := &fakePatroni{
		answers: map[string]answer{"/primary": {200, ""}},
		handler: map[string]http.HandlerFunc{"/patroni": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			if _, err := w.Write([]byte(`{"state": "running", "role": "replica", "pad": "`)); err != nil {
				return
			}
			chunk := []byte(strings.Repeat("x", 4096))
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}},
	}
	c := startPatroni(t, f)
	obs := checkWithin(c, 20*time.Second)
	if !obs.OK || obs.Role != RolePrimary {
		t.Errorf("got %+v, want primary from the fallback after the cut body", obs)
	}
	if obs.Duration > 10*time.Second {
		t.Errorf("check took %v", obs.Duration)
	}
}

func FuzzParsePatroni(f *testing.F) {
	for _, s := range []string{patroniMaster, patroniPrimary, patroniReplica, patroniReplicaBehind, patroniSyncNoLB, patroniSyncRole,
		patroniStandbyLeader, patroniStopped, patroniStarting, patroniDemoted, "", "{}", `{"state": 1}`,
		`{"state": "running", "role": "primary", "xlog": {"location": -1}}`,
		`{"state": "running", "role": "replica", "xlog": {"replayed_location": 18446744073709551615}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := parsePatroni(body)
		if err != nil {
			return
		}
		obs, err := st.observation(patroniNow)
		if (err == nil) != (st.State == "running") || obs.OK != (err == nil) {
			t.Fatalf("state %q: obs %+v err %v", st.State, obs, err)
		}
		if obs.OK && obs.Role == RolePrimary && obs.LagSeconds != 0 {
			t.Fatalf("primary with lag %v", obs.LagSeconds)
		}
		if obs.LagSeconds < 0 && obs.LagSeconds != -1 {
			t.Fatalf("negative lag %v", obs.LagSeconds)
		}
	})
}
