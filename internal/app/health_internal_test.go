package app

import (
	"testing"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/health"
)

// TestReportKeepsDCSFlags: a node check that is not Patroni's knows nothing of the
// noloadbalance tag or the sync standbys, so its reports leave what a DCS source set; a
// Patroni check is the authority on them.
func TestReportKeepsDCSFlags(t *testing.T) {
	srv := cluster.NewServer("c", "n1", "x:1", cluster.RoleUnknown, 1, nil)
	cl := cluster.NewCluster("c", []*cluster.Server{srv}, false)
	rep := &clusterReporter{cluster: cl}
	rep.servers.Store(&map[string]*cluster.Server{"c/n1": srv})
	cl.Modify(srv, func(st *cluster.State) { st.NoLoadBalance, st.SyncStandby = true, true }) // the DCS

	rep.ReportStatus("c/n1", health.Status{Up: true, Role: health.RoleReplica})
	if st := srv.State(); !st.NoLoadBalance || !st.SyncStandby {
		t.Fatalf("a postgres check wiped the DCS's flags: noloadbalance %v, sync %v", st.NoLoadBalance, st.SyncStandby)
	}
	rep.patroniFlags.Store(true)
	rep.ReportStatus("c/n1", health.Status{Up: true, Role: health.RoleReplica})
	if st := srv.State(); st.NoLoadBalance || st.SyncStandby {
		t.Fatalf("a Patroni check's flags not applied: noloadbalance %v, sync %v", st.NoLoadBalance, st.SyncStandby)
	}
}
