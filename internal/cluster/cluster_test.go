package cluster

import (
	"slices"
	"sync"
	"testing"
)

// recorder collects the change callbacks of a cluster.
type recorder struct {
	mu   sync.Mutex
	seen []string // "server:old->new" of SplitBrain
}

func (r *recorder) fn(srv *Server, old, st State) {
	if old.SplitBrain == st.SplitBrain {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, srv.Name+":"+map[bool]string{false: "off", true: "on"}[st.SplitBrain])
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	slices.Sort(out)
	return out
}

func names(servers []*Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, s.Name)
	}
	return out
}

func newTestCluster(t *testing.T, n ...string) (*Cluster, *recorder) {
	t.Helper()
	var servers []*Server
	for _, name := range n {
		servers = append(servers, NewServer("c", name, name+":5432", RoleUnknown, 1, nil))
	}
	cl := NewCluster("c", servers, false)
	rec := &recorder{}
	t.Cleanup(cl.OnChange(rec.fn))
	return cl, rec
}

func setRole(cl *Cluster, name string, role Role) {
	cl.Modify(cl.Server(name), func(st *State) { st.Role = role })
}

func TestSplitBrainMarkedAndCleared(t *testing.T) {
	cl, rec := newTestCluster(t, "a", "b", "c")
	setRole(cl, "a", RolePrimary)
	setRole(cl, "c", RoleReplica)
	if got := rec.take(); len(got) != 0 || len(cl.SplitBrain()) != 0 {
		t.Fatalf("one primary: split brain %v, callbacks %v", names(cl.SplitBrain()), got)
	}
	changed := cl.Changed()
	setRole(cl, "b", RolePrimary)
	if got, want := rec.take(), []string{"a:on", "b:on"}; !slices.Equal(got, want) {
		t.Errorf("second primary: callbacks %v, want %v", got, want)
	}
	if got := names(cl.SplitBrain()); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("SplitBrain() = %v, want [a b]", got)
	}
	select {
	case <-changed:
	default:
		t.Error("waiters not told of the split brain")
	}
	if (Selector{Role: RolePrimary}).Eligible(cl.Server("a").State()) {
		t.Error("a primary in a split brain is eligible for a primary route")
	}
	// A fn cannot set or clear the flag: it is computed.
	cl.Modify(cl.Server("a"), func(st *State) { st.SplitBrain = false })
	if !cl.Server("a").State().SplitBrain {
		t.Error("Modify let fn clear SplitBrain")
	}
	cl.Modify(cl.Server("c"), func(st *State) { st.SplitBrain = true })
	if cl.Server("c").State().SplitBrain {
		t.Error("Modify let fn set SplitBrain on a replica")
	}
	rec.take()

	// One goes down: the other is the only primary again.
	cl.Modify(cl.Server("b"), func(st *State) { st.Up = false })
	if got, want := rec.take(), []string{"a:off", "b:off"}; !slices.Equal(got, want) {
		t.Errorf("one primary down: callbacks %v, want %v", got, want)
	}
	if len(cl.SplitBrain()) != 0 || !(Selector{Role: RolePrimary}).Eligible(cl.Server("a").State()) {
		t.Errorf("after one primary left: split brain %v, a eligible %v", names(cl.SplitBrain()),
			(Selector{Role: RolePrimary}).Eligible(cl.Server("a").State()))
	}
}

func TestSplitBrainEndsByFenceAdminAndRemoval(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(cl *Cluster)
	}{
		{"fenced", func(cl *Cluster) { cl.Modify(cl.Server("b"), func(st *State) { st.Fenced = true }) }},
		{"maint", func(cl *Cluster) { cl.Modify(cl.Server("b"), func(st *State) { st.Admin = AdminMaint }) }},
		{"demoted", func(cl *Cluster) { setRole(cl, "b", RoleReplica) }},
		{"removed by a reload", func(cl *Cluster) { cl.SetServers([]*Server{cl.Server("a")}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, rec := newTestCluster(t, "a", "b")
			setRole(cl, "a", RolePrimary)
			setRole(cl, "b", RolePrimary)
			b := cl.Server("b")
			rec.take()
			tc.end(cl)
			if got, want := rec.take(), []string{"a:off", "b:off"}; !slices.Equal(got, want) {
				t.Errorf("callbacks %v, want %v", got, want)
			}
			if cl.Server("a").State().SplitBrain || b.State().SplitBrain {
				t.Error("split brain still marked")
			}
			// A removed server that still reports is in no split brain.
			cl.Modify(b, func(st *State) { st.Up = true })
			if b.State().SplitBrain || cl.Server("a").State().SplitBrain {
				t.Error("split brain marked again")
			}
		})
	}
}

// TestSplitBrainDrainedStillClaims: a drained primary's sessions go on writing until their
// transaction boundary, so draining one of two primaries does not end the split brain (maint
// does, above).
func TestSplitBrainDrainedStillClaims(t *testing.T) {
	cl, _ := newTestCluster(t, "a", "b")
	setRole(cl, "a", RolePrimary)
	setRole(cl, "b", RolePrimary)
	cl.Modify(cl.Server("b"), func(st *State) { st.Admin = AdminDrain })
	if got := names(cl.SplitBrain()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after draining b: split brain %v, want a and b", got)
	}
}

// TestSetLeaderAtomic: callbacks told of a leader move never see two servers holding the key.
func TestSetLeaderAtomic(t *testing.T) {
	cl, _ := newTestCluster(t, "b", "a") // the new leader first in the list
	setRole(cl, "a", RolePrimary)
	setRole(cl, "b", RolePrimary)
	cl.SetLeader("a", true)
	var both bool
	cl.OnChange(func(*Server, State, State) {
		both = both || (cl.Server("a").State().Leader == LeaderYes && cl.Server("b").State().Leader == LeaderYes)
	})
	cl.SetLeader("b", true)
	if both {
		t.Fatal("a callback saw a and b both holding the leader key")
	}
	if cl.Server("b").State().Leader != LeaderYes || cl.Server("a").State().Leader != LeaderNo {
		t.Fatalf("after the move: a %v, b %v", cl.Server("a").State().Leader, cl.Server("b").State().Leader)
	}
}

func TestSplitBrainLeaderDecides(t *testing.T) {
	cl, rec := newTestCluster(t, "a", "b")
	cl.SetLeader("b", true)
	setRole(cl, "a", RolePrimary)
	setRole(cl, "b", RolePrimary)
	if got := rec.take(); len(got) != 0 || len(cl.SplitBrain()) != 0 {
		t.Fatalf("with b the DCS leader: split brain %v, callbacks %v", names(cl.SplitBrain()), got)
	}
	sel := Selector{Role: RolePrimary}
	if sel.Eligible(cl.Server("a").State()) || !sel.Eligible(cl.Server("b").State()) {
		t.Error("the primary route does not follow the DCS leader")
	}
	// The DCS view is lost: both claim, nothing decides.
	cl.SetLeader("", false)
	if got, want := rec.take(), []string{"a:on", "b:on"}; !slices.Equal(got, want) {
		t.Errorf("DCS view lost: callbacks %v, want %v", got, want)
	}
	// An election (no leader): nobody may take writes, and no split brain is raised either.
	cl.SetLeader("", true)
	if got, want := rec.take(), []string{"a:off", "b:off"}; !slices.Equal(got, want) {
		t.Errorf("election: callbacks %v, want %v", got, want)
	}
	if sel.Eligible(cl.Server("a").State()) || sel.Eligible(cl.Server("b").State()) {
		t.Error("a primary is eligible during an election")
	}
}

// TestSplitBrainNotWithStaticRoles: roles from the config (tcp checks) are the operator's word,
// so two configured primaries are no split brain.
func TestSplitBrainNotWithStaticRoles(t *testing.T) {
	cl, rec := newTestCluster(t, "a", "b")
	setRole(cl, "a", RolePrimary)
	setRole(cl, "b", RolePrimary)
	rec.take()
	cl.SetStaticRoles(true)
	if got, want := rec.take(), []string{"a:off", "b:off"}; !slices.Equal(got, want) {
		t.Errorf("static roles: callbacks %v, want %v", got, want)
	}
	cl.Modify(cl.Server("a"), func(st *State) { st.Up = true })
	if len(cl.SplitBrain()) != 0 {
		t.Errorf("static roles: split brain %v", names(cl.SplitBrain()))
	}
	cl.SetStaticRoles(false)
	if got, want := rec.take(), []string{"a:on", "b:on"}; !slices.Equal(got, want) {
		t.Errorf("roles learned again: callbacks %v, want %v", got, want)
	}
}
