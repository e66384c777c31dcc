package cluster

import (
	"sync"
	"time"
)

// Admin is an operator's setting for a server.
type Admin uint8

// Admin states.
const (
	AdminReady Admin = iota // normal
	AdminDrain              // no new sessions; existing ones end at their next transaction boundary
	AdminMaint              // no new sessions; existing ones end now with a clean error
)

func (a Admin) String() string {
	switch a {
	case AdminDrain:
		return "drain"
	case AdminMaint:
		return "maint"
	}
	return "ready"
}

// State is what pgfront currently believes about a server. It is replaced as a whole, never
// mutated, so a snapshot read with Server.State is consistent.
type State struct {
	Up         bool
	Role       Role    // learned by health checks, or static from the config
	LSN        uint64  // primary: current WAL position; replica: replayed position; 0 unknown
	LagBytes   int64   // replica: bytes behind the cluster's primary; -1 unknown
	LagSeconds float64 // replica: seconds behind; -1 unknown
	Admin      Admin
	Fenced     bool // a session saw in_hot_standby=on: not a primary until a check says so
	// Leader is what an authoritative role source (Patroni's DCS) says of this server;
	// LeaderUnknown when there is none or it is not current (see Cluster.SetLeader).
	Leader Leadership
	// SplitBrain: this server claims to be primary while another one does too and no
	// authoritative role source decides between them (computed by the cluster).
	SplitBrain bool
	// NoLoadBalance is Patroni's noloadbalance tag: the node stays out of replica routes.
	NoLoadBalance bool
	// SyncStandby: Patroni reports the node as a synchronous standby.
	SyncStandby bool

	LastCheck     time.Time
	CheckDuration time.Duration
	LastErr       string
	// TLSVerifyFailed: the last check failed because the server's TLS certificate did not
	// verify (server_tls verify-ca / verify-full), a configuration problem, not an outage.
	TLSVerifyFailed bool
}

// Leadership is an authoritative role source's view of one server.
type Leadership uint8

// Leaderships.
const (
	LeaderUnknown Leadership = iota // no authoritative source, or its view is not current
	LeaderYes                       // the server holds the leader key
	LeaderNo                        // another server, or none (an election), holds it
)

func (l Leadership) String() string {
	switch l {
	case LeaderYes:
		return "leader"
	case LeaderNo:
		return "not_leader"
	}
	return "unknown"
}

// Lagging reports whether a replica's lag exceeds the bounds (0 = no bound). Unknown lag
// counts as lagging only when a bound is set.
func (st State) Lagging(maxBytes int64, maxTime time.Duration) bool {
	if maxBytes > 0 && (st.LagBytes < 0 || st.LagBytes > maxBytes) {
		return true
	}
	if maxTime > 0 && (st.LagSeconds < 0 || st.LagSeconds > maxTime.Seconds()) {
		return true
	}
	return false
}

// Selector says which servers a route may use: a pure description, evaluated over states.
type Selector struct {
	Role            Role
	MaxLagBytes     int64         // replica routes: 0 = no bound
	MaxLagTime      time.Duration // replica routes: 0 = no bound
	FallbackPrimary bool          // replica routes: use the primary when no replica qualifies
	SyncStandbyOnly bool          // replica routes: only replicas Patroni reports as synchronous standbys
}

// Eligible reports whether a server in state st may take new sessions of the route, not
// counting fallback.
func (sel Selector) Eligible(st State) bool {
	if !st.Up || st.Admin != AdminReady {
		return false
	}
	switch sel.Role {
	case RolePrimary:
		return st.writable()
	case RoleReplica:
		return sel.replicaQualifies(st)
	}
	return true
}

// replicaQualifies reports whether a server in state st may serve a replica route: a replica
// within the lag bounds, not tagged noloadbalance in Patroni, and a synchronous standby if the
// route asks for one.
func (sel Selector) replicaQualifies(st State) bool {
	return st.Role == RoleReplica && !st.Lagging(sel.MaxLagBytes, sel.MaxLagTime) && !st.NoLoadBalance &&
		(!sel.SyncStandbyOnly || st.SyncStandby)
}

// writable reports whether a primary route may send writes to a server in state st: it is a
// primary no session found in recovery, that no authoritative role source says has lost the
// leader key, and that does not share the primary role with another server undecided.
func (st State) writable() bool {
	return st.Role == RolePrimary && !st.Fenced && st.Leader != LeaderNo && !st.SplitBrain
}

// Keeps reports whether a session of the route may stay on a server now in state st; a
// session that started there under fallback stays while the server is a healthy primary.
func (sel Selector) Keeps(st State, fallback bool) bool {
	if fallback {
		return st.Up && st.Admin != AdminMaint && st.writable()
	}
	if !st.Up || st.Admin == AdminMaint {
		return false
	}
	switch sel.Role {
	case RolePrimary:
		return st.writable()
	case RoleReplica:
		return sel.replicaQualifies(st)
	}
	return true
}

// Select appends to dst the indexes of servers (given by their states, in cluster order) that
// a route may use for a new session, and reports whether they are fallback primaries.
func (sel Selector) Select(dst []int, states []State) ([]int, bool) {
	for i, st := range states {
		if sel.Eligible(st) {
			dst = append(dst, i)
		}
	}
	if len(dst) > 0 || sel.Role != RoleReplica || !sel.FallbackPrimary {
		return dst, false
	}
	prim := Selector{Role: RolePrimary}
	for i, st := range states {
		if prim.Eligible(st) {
			dst = append(dst, i)
		}
	}
	return dst, len(dst) > 0
}

// ChangeFunc is told about a server whose state changed. It runs outside any lock of the
// cluster, on the goroutine that reported the change.
type ChangeFunc func(srv *Server, old, new State)

// watchers holds the cluster's change notification: a channel closed (and replaced) on every
// change, for waiters, and callbacks, for the frontend.
type watchers struct {
	mu struct {
		sync.Mutex
		changed   chan struct{}
		callbacks []callback // replaced, never mutated: Modify calls a snapshot outside the lock
		nextID    uint64
		primary   uint64 // latest LSN reported by a primary, for replicas' byte lag
	}
}

// callback is one OnChange subscription.
type callback struct {
	id uint64
	fn ChangeFunc
}
