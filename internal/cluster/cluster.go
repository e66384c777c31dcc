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
	// staticRoles: the roles come from the config, not from the servers (tcp or no checks), so
	// two primaries are the operator's word, not a split brain. Guarded by w.mu for writes.
	staticRoles atomic.Bool

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
	c.w.mu.Lock()
	var changes []change
	for _, srv := range c.Servers() { // a server that leaves is in no split brain
		if st := stateOf(srv); st.SplitBrain && !slices.Contains(servers, srv) {
			next := st
			next.SplitBrain = false
			srv.state.Store(&next)
			changes = append(changes, change{srv, st, next})
		}
	}
	c.servers.Store(&servers)
	changes = c.markSplitBrainLocked(changes) // a server that left may have been one of two primaries
	close(c.w.mu.changed)
	c.w.mu.changed = make(chan struct{})
	c.notifyLocked(changes) // closes again when a split brain changed: harmless
}

// SetStaticRoles says whether the servers' roles come from the config rather than from checks
// that ask the servers; only roles the servers claim themselves can be a split brain. Setting it
// recomputes the split brain at once.
func (c *Cluster) SetStaticRoles(static bool) {
	c.w.mu.Lock()
	c.staticRoles.Store(static)
	changes := c.markSplitBrainLocked(nil)
	c.notifyLocked(changes)
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
//
// All servers change under one lock: a leader moving from A to B is never seen with both
// holding the key (which would make both writable) or with neither decided.
func (c *Cluster) SetLeader(name string, known bool) {
	c.w.mu.Lock()
	var changes []change
	for _, srv := range c.Servers() {
		l := LeaderUnknown
		if known {
			l = LeaderNo
			if srv.Name == name {
				l = LeaderYes
			}
		}
		prev := stateOf(srv)
		if prev.Leader == l {
			continue
		}
		st := prev
		st.Leader = l
		srv.state.Store(&st)
		changes = append(changes, change{srv, prev, st})
	}
	changes = c.markSplitBrainLocked(changes)
	c.notifyLocked(changes)
}

// Update replaces srv's state with st; see Modify.
func (c *Cluster) Update(srv *Server, st State) { c.Modify(srv, func(cur *State) { *cur = st }) }

// Modify applies fn to a copy of srv's current state and stores the result, computing a
// replica's byte lag against the cluster's latest primary position. The read-modify-write is
// atomic, so the health monitor and an administrator never lose each other's changes. If
// anything a route decides on changed, the waiters and callbacks are told (callbacks outside
// the lock). Under the same lock it recomputes the split brain over all servers (see
// State.SplitBrain): a change there is told for each server it affects, on this goroutine.
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
	// SplitBrain is computed below over all servers, never set by fn; a server no longer in
	// the list (a reload removed it) is in no split brain.
	st.SplitBrain = stateOf(srv).SplitBrain && slices.Contains(c.Servers(), srv)
	prev := srv.state.Swap(&st)
	changes := []change{{srv, *prev, st}}
	if !routingChanged(*prev, st) {
		changes = changes[:0]
	}
	changes = c.markSplitBrainLocked(changes)
	c.notifyLocked(changes)
}

// stateOf returns srv's current state.
func stateOf(srv *Server) State { return *srv.state.Load() }

// change is one server's state change, told to the callbacks outside the lock.
type change struct {
	srv      *Server
	old, new State
}

// routingChanged reports whether anything a route or a log line decides on differs.
func routingChanged(old, st State) bool {
	return old.Up != st.Up || old.Role != st.Role || old.Admin != st.Admin || old.Fenced != st.Fenced ||
		old.Leader != st.Leader || old.SplitBrain != st.SplitBrain || old.NoLoadBalance != st.NoLoadBalance ||
		old.SyncStandby != st.SyncStandby ||
		old.LagBytes != st.LagBytes || old.LagSeconds != st.LagSeconds
}

// notifyLocked wakes the waiters when anything changed and calls the callbacks, after
// unlocking c.w.mu (which the caller holds).
func (c *Cluster) notifyLocked(changes []change) {
	var callbacks []callback
	if len(changes) > 0 {
		close(c.w.mu.changed)
		c.w.mu.changed = make(chan struct{})
		callbacks = c.w.mu.callbacks
	}
	c.w.mu.Unlock()
	for _, ch := range changes {
		for _, cb := range callbacks {
			cb.fn(ch.srv, ch.old, ch.new)
		}
	}
}

// claimsPrimary reports whether a server in state st takes part in deciding a split brain:
// it is up, a check says it is a primary, no session found it in recovery, an administrator
// has not put it in maintenance (maint ends its sessions: an operator resolves a split brain
// that way; a drained server's sessions still write until their boundary, so it still
// claims) and no authoritative role source says it lost the leader key.
func (st State) claimsPrimary() bool {
	return st.Up && st.Role == RolePrimary && !st.Fenced && st.Admin != AdminMaint && st.Leader != LeaderNo
}

// markSplitBrainLocked sets SplitBrain on every server that claims to be primary while
// another one does too and no authoritative role source decides (none of them holds the
// leader key), and clears it everywhere else (and everywhere with static roles). The changes it makes are appended to changes.
// c.w.mu is held: Modify is the only writer of server states.
func (c *Cluster) markSplitBrainLocked(changes []change) []change {
	servers := c.Servers()
	claims, decided := 0, false
	for _, srv := range servers {
		if st := stateOf(srv); st.claimsPrimary() {
			claims++
			decided = decided || st.Leader == LeaderYes
		}
	}
	split := claims > 1 && !decided && !c.staticRoles.Load()
	for _, srv := range servers {
		cur := stateOf(srv)
		want := split && cur.claimsPrimary()
		if cur.SplitBrain == want {
			continue
		}
		st := cur
		st.SplitBrain = want
		srv.state.Store(&st)
		if i := slices.IndexFunc(changes, func(ch change) bool { return ch.srv == srv }); i >= 0 {
			changes[i].new = st
		} else {
			changes = append(changes, change{srv, cur, st})
		}
	}
	return changes
}

// SplitBrain returns the servers now in a split brain (see State.SplitBrain), in cluster
// order; none when there is none.
func (c *Cluster) SplitBrain() []*Server {
	var out []*Server
	for _, srv := range c.Servers() {
		if srv.State().SplitBrain {
			out = append(out, srv)
		}
	}
	return out
}
