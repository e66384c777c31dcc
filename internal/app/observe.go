package app

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
)

// newAdmin builds an admin listener on listen (not bound yet) with g's tokens.
func (a *App) newAdmin(listen string, g *generation) (*admin.Listener, error) {
	srv, err := admin.New(admin.Options{
		Listen:     listen,
		ReadToken:  g.readToken,
		AdminToken: g.adminToken,
		Backend:    &adminBackend{a: a},
		Gatherer:   a.registry,
		Logger:     a.log,
		PeerCancel: a.fleet.Handler(a.peerCancel),
	})
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	return srv, nil
}

// readToken reads a bearer token from a file or an environment variable (nil when neither
// is set); surrounding white space is not part of it.
func readToken(what, file, env string) ([]byte, error) {
	var raw string
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s_file: %w", what, err)
		}
		raw = string(b)
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("%s_env: environment variable %s is not set", what, env)
		}
		raw = v
	default:
		return nil, nil
	}
	tok := strings.TrimSpace(raw)
	if tok == "" {
		return nil, fmt.Errorf("%s: the token is empty", what)
	}
	return []byte(tok), nil
}

func (a *App) tokenSummary() string {
	ac := a.gen.cfg.Admin
	var scopes []string
	if ac.ReadTokenFile != "" || ac.ReadTokenEnv != "" {
		scopes = append(scopes, "read")
	}
	if ac.AdminTokenFile != "" || ac.AdminTokenEnv != "" {
		scopes = append(scopes, "admin")
	}
	if len(scopes) == 0 {
		return "none (loopback only)"
	}
	return strings.Join(scopes, ",")
}

// adminBackend serves the admin API from the running App.
type adminBackend struct{ a *App }

var _ admin.Backend = (*adminBackend)(nil)

// Limits on what one overview carries, so the stats page stays light with 10,000 sessions.
const (
	overviewSessions = 200
)

func (b *adminBackend) Overview() admin.Overview {
	a := b.a
	now := time.Now()
	infos := a.frontend.SessionInfos(nil)
	slices.SortFunc(infos, func(x, y frontend.SessionInfo) int { return y.Started.Compare(x.Started) })
	ov := admin.Overview{
		Now:          now,
		Started:      a.started,
		SessionsOpen: len(infos),
		MaxConn:      a.Config().MaxConn,
		Routes:       b.routes(infos),
		Servers:      b.Servers(),
		DCS:          a.dcsStatus(),
		Fleet:        a.fleetStatus(),
		Sockets:      b.sockets(infos, now),
		Alerts:       b.Alerts(),
	}
	for _, r := range ov.Routes {
		ov.Queued += r.Queued
	}
	for _, in := range infos[:min(len(infos), overviewSessions)] {
		ov.LiveSessions = append(ov.LiveSessions, sessionView(in, now))
	}
	recent, byCause := a.metrics.Recent()
	for _, e := range recent {
		ov.Recent = append(ov.Recent, admin.EndedSession{
			ID: e.ID, Route: e.Route, Server: serverName(e.Server), Client: e.Client, User: e.User,
			Database: e.Database, ApplicationName: e.ApplicationName, Cause: e.Cause.String(), Refused: e.Refused,
			Ended: e.Started.Add(e.Duration), DurationSeconds: e.Duration.Seconds(), QueuedSeconds: e.Queued.Seconds(),
			TLS: e.TLS, TLSResult: e.TLSResult, Fallback: e.Fallback, Cancels: e.Cancels, SQLState: e.SQLState, Error: e.Err,
		})
	}
	ov.EndedByCause = byCause
	return ov
}

func (b *adminBackend) Routes() []admin.Route { return b.routes(b.a.frontend.SessionInfos(nil)) }

func (b *adminBackend) routes(infos []frontend.SessionInfo) []admin.Route {
	a := b.a
	cfg := a.Config()
	open := make(map[string]int)
	for _, in := range infos {
		open[in.Route]++
	}
	var out []admin.Route
	for _, name := range cfg.RouteNames() {
		rc := cfg.Routes[name]
		listen := rc.Listen
		if addr := a.frontend.Addr(name); addr != nil {
			listen = addr.String()
		}
		out = append(out, admin.Route{
			Name: name, Listen: listen, Cluster: rc.Cluster, Role: rc.Role, Balance: rc.Balance,
			Sessions: open[name], MaxConn: rc.MaxConn, Queued: a.metrics.RouteQueued(name),
			Total: a.metrics.RouteTotal(name),
		})
	}
	return out
}

func (b *adminBackend) Servers() []admin.Server {
	var out []admin.Server
	for _, cl := range b.clusters() {
		for _, srv := range cl.Servers() {
			st := srv.State()
			out = append(out, admin.Server{
				Cluster: srv.Cluster, Name: srv.Name, Address: srv.Addr, Role: st.Role.String(), Up: st.Up,
				Admin: st.Admin.String(), Fenced: st.Fenced, SplitBrain: st.SplitBrain, Leader: st.Leader.String(),
				NoLoadBalance: st.NoLoadBalance, SyncStandby: st.SyncStandby, LagBytes: st.LagBytes, LagSeconds: st.LagSeconds,
				Sessions: srv.Active(), MaxConn: srv.Limit.Max(), LastCheck: st.LastCheck,
				CheckMillis: float64(st.CheckDuration.Microseconds()) / 1000, LastError: st.LastErr,
			})
		}
	}
	return out
}

func (b *adminBackend) Sessions() []admin.Session {
	now := time.Now()
	infos := b.a.frontend.SessionInfos(nil)
	slices.SortFunc(infos, func(x, y frontend.SessionInfo) int { return x.Started.Compare(y.Started) })
	out := make([]admin.Session, 0, len(infos))
	for _, in := range infos {
		out = append(out, sessionView(in, now))
	}
	return out
}

func (b *adminBackend) Sockets() admin.Sockets {
	return b.sockets(b.a.frontend.SessionInfos(nil), time.Now())
}

func (b *adminBackend) sockets(infos []frontend.SessionInfo, now time.Time) admin.Sockets {
	sample, err := b.a.metrics.Sockets()
	out := admin.Sockets{SampledAt: sample.At, Source: sample.Source, SampleMillis: float64(sample.Took.Microseconds()) / 1000}
	if err != nil {
		out.Error = err.Error()
	}
	for k, n := range sample.Counts {
		out.Counts = append(out.Counts, admin.SocketCount{Route: k.Route, Side: k.Side.String(), Cluster: k.Cluster,
			Server: k.Server, State: k.State.String(), Count: n})
	}
	slices.SortFunc(out.Counts, func(x, y admin.SocketCount) int {
		return strings.Compare(x.Route+"\x00"+x.Side+"\x00"+x.Cluster+"\x00"+x.Server+"\x00"+x.State,
			y.Route+"\x00"+y.Side+"\x00"+y.Cluster+"\x00"+y.Server+"\x00"+y.State)
	})
	for _, in := range infos {
		if hc := in.Relay.HalfClosedSince; in.Phase == frontend.PhaseRelaying && !hc.IsZero() {
			out.HalfClosed++
			out.OldestHalfClosedSeconds = max(out.OldestHalfClosedSeconds, now.Sub(hc).Seconds())
		}
	}
	return out
}

func (b *adminBackend) Alerts() []admin.Alert {
	var out []admin.Alert
	for _, st := range b.a.metrics.Alerts() {
		out = append(out, admin.Alert{Name: st.Name, Active: st.Active, Since: st.Since, Value: st.Value,
			Threshold: st.Threshold, Message: st.Message})
	}
	return out
}

// clusters are the running clusters, in name order.
func (b *adminBackend) clusters() []*cluster.Cluster {
	a := b.a
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return observeClusters(a.gen)
}

// Config is the running config (secrets redacted) with its generation and hash.
func (b *adminBackend) Config() any {
	a := b.a
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return runningConfig{Generation: a.gen.n, Hash: a.gen.hash, Config: a.gen.cfg.Redacted()}
}

// runningConfig is GET /api/v1/config: the config in force and which one it is.
type runningConfig struct {
	Generation uint64 `json:"generation"`
	Hash       string `json:"hash"`
	*config.Config
}

func (b *adminBackend) Reload(who string) (admin.ReloadResult, error) {
	b.a.log.Info("config reload requested", "by", who)
	changes, err := b.a.Reload()
	if err != nil {
		return admin.ReloadResult{}, err
	}
	a := b.a
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return admin.ReloadResult{Generation: a.gen.n, Hash: a.gen.hash, Changes: changes}, nil
}

func (b *adminBackend) NotReady() string {
	if why := b.a.draining.Load(); why != nil {
		return *why
	}
	return ""
}

func (b *adminBackend) KillSession(id uint64, who string) error {
	if !b.a.frontend.Kill(id) {
		return fmt.Errorf("session %d: %w", id, admin.ErrNotFound)
	}
	return nil
}

func (b *adminBackend) SetServerState(clusterName, server, state, who string) error {
	var ad cluster.Admin
	switch state {
	case "ready":
		ad = cluster.AdminReady
	case "drain":
		ad = cluster.AdminDrain
	case "maint":
		ad = cluster.AdminMaint
	default:
		return admin.ErrBadState
	}
	var cl *cluster.Cluster
	for _, c := range b.clusters() {
		if c.Name == clusterName {
			cl = c
		}
	}
	if cl == nil {
		return fmt.Errorf("cluster %q: %w", clusterName, admin.ErrNotFound)
	}
	for _, srv := range cl.Servers() {
		if srv.Name == server {
			cl.Modify(srv, func(st *cluster.State) { st.Admin = ad })
			return nil
		}
	}
	return fmt.Errorf("server %q of cluster %q: %w", server, clusterName, admin.ErrNotFound)
}

func serverName(srv *cluster.Server) string {
	if srv == nil {
		return ""
	}
	return srv.FullName()
}

// sessionView turns a frontend snapshot into the API's session.
func sessionView(in frontend.SessionInfo, now time.Time) admin.Session {
	s := admin.Session{
		ID: in.ID, Route: in.Route, Client: in.Client, Server: serverName(in.Server), User: in.User,
		Database: in.Database, ApplicationName: in.ApplicationName, State: in.Phase.String(), Started: in.Started, TLS: in.TLS,
		AgeSeconds: now.Sub(in.Started).Seconds(), BytesFromClient: in.FromClient, BytesFromServer: in.FromServer,
	}
	if in.Phase != frontend.PhaseRelaying {
		return s
	}
	st := in.Relay
	s.Parked = st.Parked
	if !st.Login && st.TxStatus != 0 {
		s.TxStatus = string(st.TxStatus)
	}
	if !st.IdleSince.IsZero() {
		s.IdleSeconds = now.Sub(st.IdleSince).Seconds()
	}
	if !st.HalfClosedSince.IsZero() {
		s.HalfClosedSeconds = now.Sub(st.HalfClosedSince).Seconds()
	}
	switch {
	case st.Blind:
		s.State = "passthrough"
		if !st.HalfClosedSince.IsZero() {
			s.State = "half_closed"
		}
	case st.Login:
		s.State = "login"
	case !st.HalfClosedSince.IsZero():
		s.State = "half_closed"
	case st.Busy:
		s.State = "active"
	case st.TxStatus == 'T':
		s.State = "idle_in_transaction"
	case st.TxStatus == 'E':
		s.State = "idle_in_failed_transaction"
	default:
		s.State = "idle"
	}
	return s
}
