package cluster

import (
	"slices"
	"testing"
	"time"
)

func TestSelectorSelect(t *testing.T) {
	primary := State{Up: true, Role: RolePrimary, LagBytes: 0}
	replica := State{Up: true, Role: RoleReplica, LagBytes: 100, LagSeconds: 0.5}
	lagging := State{Up: true, Role: RoleReplica, LagBytes: 50 << 20, LagSeconds: 120}
	unknownLag := State{Up: true, Role: RoleReplica, LagBytes: -1, LagSeconds: -1}
	down := State{Up: false, Role: RolePrimary}
	drained := State{Up: true, Role: RoleReplica, Admin: AdminDrain}
	fenced := State{Up: true, Role: RolePrimary, Fenced: true}
	leader := State{Up: true, Role: RolePrimary, Leader: LeaderYes}
	notLeader := State{Up: true, Role: RolePrimary, Leader: LeaderNo}
	split := State{Up: true, Role: RolePrimary, SplitBrain: true}

	tests := []struct {
		name         string
		sel          Selector
		states       []State
		want         []int
		wantFallback bool
	}{
		{"primary route takes the primary only", Selector{Role: RolePrimary}, []State{replica, primary, replica}, []int{1}, false},
		{"no primary during failover", Selector{Role: RolePrimary}, []State{replica, down}, nil, false},
		{"fenced primary excluded", Selector{Role: RolePrimary}, []State{fenced, primary}, []int{1}, false},
		{"the DCS leader, not another primary", Selector{Role: RolePrimary}, []State{notLeader, leader}, []int{1}, false},
		{"no primary while primaries are split", Selector{Role: RolePrimary}, []State{split, split}, nil, false},
		{"no fallback to a primary without the leader key", Selector{Role: RoleReplica, FallbackPrimary: true}, []State{notLeader}, nil, false},
		{"replica route takes replicas", Selector{Role: RoleReplica}, []State{primary, replica, replica}, []int{1, 2}, false},
		{"byte lag bound", Selector{Role: RoleReplica, MaxLagBytes: 1 << 20}, []State{replica, lagging}, []int{0}, false},
		{"time lag bound", Selector{Role: RoleReplica, MaxLagTime: time.Minute}, []State{lagging, replica}, []int{1}, false},
		{"unknown lag fails a bound", Selector{Role: RoleReplica, MaxLagBytes: 1}, []State{unknownLag}, nil, false},
		{"unknown lag without bounds is fine", Selector{Role: RoleReplica}, []State{unknownLag}, []int{0}, false},
		{"fallback to primary", Selector{Role: RoleReplica, MaxLagBytes: 1 << 20, FallbackPrimary: true}, []State{lagging, primary}, []int{1}, true},
		{"no fallback when a replica qualifies", Selector{Role: RoleReplica, FallbackPrimary: true}, []State{primary, replica}, []int{1}, false},
		{"fallback none", Selector{Role: RoleReplica, MaxLagBytes: 1}, []State{lagging, primary}, nil, false},
		{"drain takes no new sessions", Selector{Role: RoleReplica}, []State{drained, replica}, []int{1}, false},
		{"any takes every healthy server", Selector{Role: RoleAny}, []State{primary, down, replica, drained}, []int{0, 2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fb := tt.sel.Select(nil, tt.states)
			if !slices.Equal(got, tt.want) || fb != tt.wantFallback {
				t.Fatalf("Select = %v fallback=%v, want %v fallback=%v", got, fb, tt.want, tt.wantFallback)
			}
		})
	}
}

func TestSelectorKeeps(t *testing.T) {
	prim := Selector{Role: RolePrimary}
	if !prim.Keeps(State{Up: true, Role: RolePrimary, Admin: AdminDrain}, false) {
		t.Fatal("drain must not end sessions at once (they end at a transaction boundary)")
	}
	if prim.Keeps(State{Up: true, Role: RoleReplica}, false) {
		t.Fatal("a demoted primary keeps write sessions")
	}
	if prim.Keeps(State{Up: true, Role: RolePrimary, Admin: AdminMaint}, false) {
		t.Fatal("maintenance keeps sessions")
	}
	if prim.Keeps(State{Up: true, Role: RolePrimary, Leader: LeaderNo}, false) {
		t.Fatal("a primary that lost the leader key keeps write sessions")
	}
	if prim.Keeps(State{Up: true, Role: RolePrimary, SplitBrain: true}, false) {
		t.Fatal("a primary in a split brain keeps write sessions")
	}
	rep := Selector{Role: RoleReplica, MaxLagBytes: 10}
	if rep.Keeps(State{Up: true, Role: RoleReplica, LagBytes: 11}, false) {
		t.Fatal("a replica over the lag bound keeps sessions")
	}
	if !rep.Keeps(State{Up: true, Role: RolePrimary}, true) {
		t.Fatal("a fallback session on a healthy primary is ended")
	}
	if rep.Keeps(State{Up: true, Role: RoleReplica}, true) {
		t.Fatal("a fallback session stays on a server that is no longer the primary")
	}
}

func TestSetLeader(t *testing.T) {
	a := NewServer("c", "a", "x:1", RolePrimary, 1, nil)
	b := NewServer("c", "b", "x:2", RolePrimary, 1, nil)
	c := NewCluster("c", []*Server{a, b}, false)
	var told int
	c.OnChange(func(*Server, State, State) { told++ })
	c.SetLeader("b", true)
	if a.State().Leader != LeaderNo || b.State().Leader != LeaderYes || told != 2 {
		t.Fatalf("leader b: a=%v b=%v told=%d", a.State().Leader, b.State().Leader, told)
	}
	c.SetLeader("", true)
	if a.State().Leader != LeaderNo || b.State().Leader != LeaderNo {
		t.Fatalf("election: a=%v b=%v", a.State().Leader, b.State().Leader)
	}
	c.SetLeader("", false)
	if a.State().Leader != LeaderUnknown || b.State().Leader != LeaderUnknown {
		t.Fatalf("source lost: a=%v b=%v", a.State().Leader, b.State().Leader)
	}
}

func TestClusterModifyComputesLagAndNotifies(t *testing.T) {
	p := NewServer("c", "p", "x:1", RoleUnknown, 1, nil)
	r := NewServer("c", "r", "x:2", RoleUnknown, 1, nil)
	c := NewCluster("c", []*Server{p, r}, false)
	var got []string
	c.OnChange(func(srv *Server, old, st State) { got = append(got, srv.Name+":"+st.Role.String()) })
	ch := c.Changed()
	c.Update(p, State{Up: true, Role: RolePrimary, LSN: 1000})
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by a change")
	}
	c.Update(r, State{Up: true, Role: RoleReplica, LSN: 400, LagSeconds: 1})
	if lag := r.State().LagBytes; lag != 600 {
		t.Fatalf("replica lag %d bytes, want 600", lag)
	}
	ch = c.Changed()
	c.Update(r, State{Up: true, Role: RoleReplica, LSN: 400, LagSeconds: 1}) // same: no news
	select {
	case <-ch:
		t.Fatal("Changed closed without a change")
	default:
	}
	c.Modify(r, func(st *State) { st.Admin = AdminMaint })
	if st := r.State(); st.Admin != AdminMaint || st.LagBytes != 600 {
		t.Fatalf("Modify lost fields: %+v", st)
	}
	if !slices.Equal(got, []string{"p:primary", "r:replica", "r:replica"}) {
		t.Fatalf("callbacks %v", got)
	}
}

// TestSelectorPatroniDetails: Patroni's noloadbalance tag keeps a replica out of replica routes
// (the fallback primary is unaffected), and a sync-only route takes synchronous standbys only.
func TestSelectorPatroniDetails(t *testing.T) {
	primary := State{Up: true, Role: RolePrimary, NoLoadBalance: true}
	replica := State{Up: true, Role: RoleReplica, LagBytes: 0, LagSeconds: 0}
	noLB := State{Up: true, Role: RoleReplica, NoLoadBalance: true}
	sync := State{Up: true, Role: RoleReplica, SyncStandby: true}
	syncNoLB := State{Up: true, Role: RoleReplica, SyncStandby: true, NoLoadBalance: true}
	tests := []struct {
		name         string
		sel          Selector
		states       []State
		want         []int
		wantFallback bool
	}{
		{"noloadbalance out of a replica route", Selector{Role: RoleReplica}, []State{noLB, replica}, []int{1}, false},
		{"noloadbalance stays on the primary route", Selector{Role: RolePrimary}, []State{primary, noLB}, []int{0}, false},
		{"fallback primary tagged noloadbalance", Selector{Role: RoleReplica, FallbackPrimary: true}, []State{noLB, primary}, []int{1}, true},
		{"sync only", Selector{Role: RoleReplica, SyncStandbyOnly: true}, []State{replica, sync, noLB}, []int{1}, false},
		{"sync only, tagged noloadbalance", Selector{Role: RoleReplica, SyncStandbyOnly: true}, []State{syncNoLB, replica}, nil, false},
		{"sync only falls back", Selector{Role: RoleReplica, SyncStandbyOnly: true, FallbackPrimary: true}, []State{replica, primary}, []int{1}, true},
		{"any route ignores the tag", Selector{Role: RoleAny}, []State{noLB}, []int{0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fb := tt.sel.Select(nil, tt.states)
			if !slices.Equal(got, tt.want) || fb != tt.wantFallback {
				t.Errorf("Select = %v, %v; want %v, %v", got, fb, tt.want, tt.wantFallback)
			}
		})
	}
	sel := Selector{Role: RoleReplica, SyncStandbyOnly: true}
	if !sel.Keeps(sync, false) || sel.Keeps(replica, false) || sel.Keeps(syncNoLB, false) {
		t.Error("Keeps: a sync-only route keeps sessions only on untagged synchronous standbys")
	}
}
