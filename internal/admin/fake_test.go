package admin

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// fakeBackend is a Backend over plain data; tests change it under its lock.
type fakeBackend struct {
	mu       sync.Mutex
	overview Overview
	config   any
	// kills and states record the actions with their who.
	kills  []string
	states []string
	// reloads records reload callers; reloadErr is what Reload returns; notReady NotReady's.
	reloads   []string
	reloadErr error
	notReady  string
	// block, when set, makes Overview wait for it to close (entered is signalled first).
	block   chan struct{}
	entered chan struct{}
}

var _ Backend = (*fakeBackend)(nil)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		overview: Overview{
			Now:          t0,
			Started:      t0.Add(-90 * time.Minute),
			SessionsOpen: 1,
			MaxConn:      100,
			Routes: []Route{{Name: "rw", Listen: "127.0.0.1:6432", Cluster: "main", Role: "primary",
				Balance: "first", Sessions: 1, MaxConn: 50, Total: 12}},
			Servers: []Server{
				{Cluster: "main", Name: "pg1", Address: "10.0.0.1:5432", Role: "primary", Up: true,
					Admin: "ready", Leader: "leader", LagBytes: 0, LagSeconds: 0, Sessions: 1, LastCheck: t0.Add(-2 * time.Second), CheckMillis: 1.5},
				{Cluster: "main", Name: "pg2", Address: "10.0.0.2:5432", Role: "unknown", Up: false,
					Admin: "maint", Leader: "not_leader", LagBytes: -1, LagSeconds: -1, LastError: "dial tcp: connection refused <b>x</b>"},
			},
			DCS: []DCS{{Cluster: "main", Prefix: "/service/main/", Up: true, Since: t0.Add(-time.Hour), Leader: "pg1",
				Members: []string{"pg1", "pg2"}, LeaderChanges: 2}},
			Fleet: Fleet{Name: "pgfront-a", Tag: 17, Secret: true, Refused: 1,
				Peers: []Peer{{Addr: "10.0.0.12:9187", Name: "pgfront-b", Source: "dcs/main", Tag: 200}, {Addr: "10.0.0.13:9187", Source: "dns", Tag: -1}}},
			Sockets: Sockets{SampledAt: t0.Add(-time.Second), Source: "sock_diag", SampleMillis: 0.8,
				Counts: []SocketCount{
					{Route: "rw", Side: "client", State: "ESTABLISHED", Count: 1},
					{Route: "rw", Side: "server", Cluster: "main", Server: "pg1", State: "ESTABLISHED", Count: 1},
				}},
			Alerts: []Alert{
				{Name: "close_wait", Threshold: 10, Message: "sockets stuck in CLOSE_WAIT"},
				{Name: "queue", Threshold: 5, Message: "clients waiting for a slot"},
			},
			LiveSessions: []Session{{ID: 7, Route: "rw", Client: "127.0.0.1:50000", Server: "main/pg1",
				User: "app", Database: "appdb", State: "idle", TxStatus: "I", Started: t0.Add(-time.Minute),
				AgeSeconds: 60, IdleSeconds: 3, BytesFromClient: 1234, BytesFromServer: 567890}},
			Recent: []EndedSession{{ID: 3, Route: "rw", Server: "main/pg1", Client: "127.0.0.1:49000",
				User: "app", Database: "appdb", Cause: "client_terminate", Ended: t0.Add(-time.Minute), DurationSeconds: 4}},
			EndedByCause: map[string]uint64{"client_terminate": 1},
		},
		config: map[string]any{"routes": []any{map[string]any{"name": "rw"}}, "password": "<redacted>"},
	}
}

func (f *fakeBackend) Overview() Overview {
	f.mu.Lock()
	block, entered := f.block, f.entered
	o := f.snapshot()
	f.mu.Unlock()
	if block != nil {
		entered <- struct{}{}
		<-block
	}
	return o
}

func (f *fakeBackend) Routes() []Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.overview.Routes)
}

func (f *fakeBackend) Servers() []Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.overview.Servers)
}

func (f *fakeBackend) Sessions() []Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.overview.LiveSessions)
}

func (f *fakeBackend) Sockets() Sockets {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshot().Sockets
}

func (f *fakeBackend) Alerts() []Alert {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.overview.Alerts)
}

func (f *fakeBackend) Config() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config
}

func (f *fakeBackend) KillSession(id uint64, who string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, fmt.Sprintf("%d %s", id, who))
	i := slices.IndexFunc(f.overview.LiveSessions, func(s Session) bool { return s.ID == id })
	if i < 0 {
		return ErrNotFound
	}
	f.overview.LiveSessions = slices.Delete(f.overview.LiveSessions, i, i+1)
	return nil
}

func (f *fakeBackend) SetServerState(cluster, server, state, who string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, fmt.Sprintf("%s/%s %s %s", cluster, server, state, who))
	switch state {
	case "ready", "drain", "maint":
	default:
		return ErrBadState
	}
	for i := range f.overview.Servers {
		s := &f.overview.Servers[i]
		if s.Cluster == cluster && s.Name == server {
			s.Admin = state
			return nil
		}
	}
	return ErrNotFound
}

// snapshot copies the overview so handlers encode it outside the lock while tests change it.
func (f *fakeBackend) snapshot() Overview {
	o := f.overview
	o.Routes = slices.Clone(o.Routes)
	o.Servers = slices.Clone(o.Servers)
	o.Sockets.Counts = slices.Clone(o.Sockets.Counts)
	o.Alerts = slices.Clone(o.Alerts)
	o.LiveSessions = slices.Clone(o.LiveSessions)
	o.Recent = slices.Clone(o.Recent)
	o.EndedByCause = maps.Clone(o.EndedByCause)
	return o
}

// update changes the data under the lock.
func (f *fakeBackend) update(change func(o *Overview)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.overview)
}

func (f *fakeBackend) actions() (kills, states []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.kills), slices.Clone(f.states)
}

func (f *fakeBackend) Reload(who string) (ReloadResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads = append(f.reloads, who)
	if f.reloadErr != nil {
		return ReloadResult{}, f.reloadErr
	}
	return ReloadResult{Generation: uint64(len(f.reloads) + 1), Hash: "abc", Changes: []string{"route rw: changed"}}, nil
}

func (f *fakeBackend) NotReady() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notReady
}
