package observe

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDCSMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(Options{Registerer: reg})
	m.DCSUp("main", true)
	m.DCSLeaderChanged("main")
	m.DCSLeaderChanged("main")
	m.DCSUp("main", false)
	want := `# HELP pgfront_dcs_leader_changes_total ` + famDCSLeaderChanges.Help + `
# TYPE pgfront_dcs_leader_changes_total counter
pgfront_dcs_leader_changes_total{cluster="main"} 2
# HELP pgfront_dcs_up ` + famDCSUp.Help + `
# TYPE pgfront_dcs_up gauge
pgfront_dcs_up{cluster="main"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgfront_dcs_up", "pgfront_dcs_leader_changes_total"); err != nil {
		t.Error(err)
	}
	m.DCSRemoved("main")
	if n, err := testutil.GatherAndCount(reg, "pgfront_dcs_up", "pgfront_dcs_leader_changes_total"); err != nil || n != 0 {
		t.Errorf("after DCSRemoved: %d series, %v", n, err)
	}
	var nilM *Metrics
	nilM.DCSUp("x", true) // nil-safe
	nilM.DCSLeaderChanged("x")
}
