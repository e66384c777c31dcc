// Package cluster owns the runtime picture of the PostgreSQL servers behind pgfront: each
// server's address, role and load, the clusters they form, and the registry of live sessions
// that cancel requests, shutdown and administrators act on.
package cluster

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/pgfront/pgfront/internal/admission"
)

// Role is what a server does in its cluster, and what a route asks for.
type Role uint8

// Roles. RoleAny is only meaningful for routes; RoleUnknown is a server whose role no check
// has reported yet.
const (
	RoleUnknown Role = iota
	RolePrimary
	RoleReplica
	RoleAny
)

// ParseRole parses "primary", "replica" or "any"; "" is RoleUnknown.
func ParseRole(s string) (Role, error) {
	switch s {
	case "":
		return RoleUnknown, nil
	case "primary":
		return RolePrimary, nil
	case "replica":
		return RoleReplica, nil
	case "any":
		return RoleAny, nil
	}
	return 0, fmt.Errorf("unknown role %q", s)
}

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	case RoleAny:
		return "any"
	}
	return "unknown"
}

// Server is one PostgreSQL endpoint. Its identity (cluster, name, address) is fixed for its
// life: a config reload that changes a server's address replaces the server. Its weight (see
// Weight), limit and load counters may change while it runs and are safe for concurrent use.
type Server struct {
	Cluster string
	Name    string
	Addr    string           // host:port
	Limit   *admission.Limit // the server's maxconn; a reload changes its maximum in place

	weight atomic.Int32
	active atomic.Int64 // sessions relayed to this server now
	state  atomic.Pointer[State]
}

// NewServer returns a server in its initial state: up (until a check says otherwise) with the
// given role (RoleUnknown when health checks will learn it).
func NewServer(cluster, name, addr string, role Role, weight int, limit *admission.Limit) *Server {
	s := &Server{Cluster: cluster, Name: name, Addr: addr, Limit: limit}
	s.weight.Store(int32(weight))
	s.state.Store(&State{Up: true, Role: role, LagBytes: -1, LagSeconds: -1})
	return s
}

// FullName is how logs, the admin API and error messages name the server: "cluster/name".
func (s *Server) FullName() string { return s.Cluster + "/" + s.Name }

// Weight is the server's balance weight.
func (s *Server) Weight() int { return int(s.weight.Load()) }

// SetWeight changes the balance weight of later choices (a config reload).
func (s *Server) SetWeight(w int) { s.weight.Store(int32(w)) }

// State returns the server's current state.
func (s *Server) State() State { return *s.state.Load() }

// Active is the number of sessions on the server now.
func (s *Server) Active() int { return int(s.active.Load()) }

// SessionStarted and SessionEnded keep Active up to date.
func (s *Server) SessionStarted() { s.active.Add(1) }

// SessionEnded is the counterpart of SessionStarted.
func (s *Server) SessionEnded() { s.active.Add(-1) }

// Cluster is a named set of servers and the notifications of their state changes. A config
// reload may replace its server list (SetServers) and on_marked_down (SetKeepSessions) while
// sessions run; readers take a snapshot with Servers.
type Cluster struct {
	Name string

	servers atomic.Pointer[[]*Server] // never mutated after Store: a reload stores a new slice
	// keepSessions is on_marked_down: keep. False (the default) ends a route's sessions on a
	// server that leaves the route's role.
	keepSessions atomic.Bool

	w watchers
}

// NewCluster returns a cluster of servers.
func NewCluster(name string, servers []*Server, keepSessions bool) *Cluster {
	c := &Cluster{Name: name}
	c.servers.Store(&servers)
	c.keepSessions.Store(keepSessions)
	c.w.mu.changed = make(chan struct{})
	return c
}

// Servers returns the cluster's servers now. The slice is shared: do not modify it.
func (c *Cluster) Servers() []*Server { return *c.servers.Load() }

// Server returns the server named name, or nil.
func (c *Cluster) Server(name string) *Server {
	for _, s := range c.Servers() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// SetServers replaces the server list (a config reload) and tells waiters, so a client queued
// for a server of the cluster looks again. Servers left out are the caller's to drain.
func (c *Cluster) SetServers(servers []*Server) {
	servers = slices.Clone(servers)
	c.servers.Store(&servers)
	c.w.mu.Lock()
	close(c.w.mu.changed)
	c.w.mu.changed = make(chan struct{})
	c.w.mu.Unlock()
}

// KeepSessions reports on_marked_down: keep.
func (c *Cluster) KeepSessions() bool { return c.keepSessions.Load() }

// SetKeepSessions changes on_marked_down for later state changes (a config reload).
func (c *Cluster) SetKeepSessions(keep bool) { c.keepSessions.Store(keep) }

// States appends the servers' current states, in the order of servers, to dst; servers is
// a snapshot taken with Servers, so states and servers line up.
func (c *Cluster) States(dst []State, servers []*Server) []State {
	for _, s := range servers {
		dst = append(dst, s.State())
	}
	return dst
}

// Changed returns a channel closed at the next state change of any server.
func (c *Cluster) Changed() <-chan struct{} {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.mu.changed
}

// OnChange registers fn to be told about every server state change, until the returned
// function is called.
func (c *Cluster) OnChange(fn ChangeFunc) (unsubscribe func()) {
	c.w.mu.Lock()
	id := c.w.mu.nextID
	c.w.mu.nextID++
	c.w.mu.callbacks = append(slices.Clone(c.w.mu.callbacks), callback{id: id, fn: fn})
	c.w.mu.Unlock()
	return func() {
		c.w.mu.Lock()
		c.w.mu.callbacks = slices.DeleteFunc(slices.Clone(c.w.mu.callbacks), func(cb callback) bool { return cb.id == id })
		c.w.mu.Unlock()
	}
}

// SetLeader records what an authoritative role source (Patroni's DCS) says: the server named
// name holds the leader key ("" = no server does: an election is in progress). known false
// means there is no such source or it lost its view (a broken watch): every server goes back
// to LeaderUnknown and node checks alone decide.
func (c *Cluster) SetLeader(name string, known bool) {
	for _, srv := range c.Servers() {
		l := LeaderUnknown
		if known {
			l = LeaderNo
			if srv.Name == name {
				l = LeaderYes
			}
		}
		c.Modify(srv, func(st *State) { st.Leader = l })
	}
}

// Update replaces srv's state with st; see Modify.
func (c *Cluster) Update(srv *Server, st State) { c.Modify(srv, func(cur *State) { *cur = st }) }

// Modify applies fn to a copy of srv's current state and stores the result, computing a
// replica's byte lag against the cluster's latest primary position. The read-modify-write is
// atomic, so the health monitor and an administrator never lose each other's changes. If
// anything a route decides on changed, the waiters and callbacks are told (callbacks outside
// the lock).
func (c *Cluster) Modify(srv *Server, fn func(*State)) {
	c.w.mu.Lock()
	st := *srv.state.Load()
	fn(&st)
	switch {
	case st.Role == RolePrimary:
		if st.LSN > 0 {
			c.w.mu.primary = st.LSN
		}
		st.LagBytes = 0
	case st.Role == RoleReplica && st.LSN > 0 && c.w.mu.primary > 0:
		st.LagBytes = max(int64(c.w.mu.primary)-int64(st.LSN), 0)
	default:
		st.LagBytes = -1
	}
	old := srv.state.Swap(&st)
	changed := old.Up != st.Up || old.Role != st.Role || old.Admin != st.Admin || old.Fenced != st.Fenced ||
		old.Leader != st.Leader || old.SplitBrain != st.SplitBrain || old.NoLoadBalance != st.NoLoadBalance ||
		old.SyncStandby != st.SyncStandby ||
		old.LagBytes != st.LagBytes || old.LagSeconds != st.LagSeconds
	var callbacks []callback
	if changed {
		close(c.w.mu.changed)
		c.w.mu.changed = make(chan struct{})
		callbacks = c.w.mu.callbacks
	}
	c.w.mu.Unlock()
	for _, cb := range callbacks {
		cb.fn(srv, *old, st)
	}
}
