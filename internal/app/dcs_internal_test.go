package app

import (
	"testing"

	"github.com/pgfront/pgfront/internal/cluster"
	"github.com/pgfront/pgfront/internal/dcs"
)

// TestMatchMembers: a server is its member by name, else by conn_url host:port.
func TestMatchMembers(t *testing.T) {
	byName := cluster.NewServer("c", "node1", "10.0.0.1:5432", cluster.RoleUnknown, 1, nil)
	byAddr := cluster.NewServer("c", "pg2", "10.0.0.2:5433", cluster.RoleUnknown, 1, nil)
	none := cluster.NewServer("c", "pg3", "10.0.0.3:5432", cluster.RoleUnknown, 1, nil)
	members := []dcs.Member{
		{Name: "node1", ConnURL: "postgres://10.9.9.9:5432/postgres"}, // the name wins over the address
		{Name: "node2", ConnURL: "postgres://10.0.0.2:5433/postgres"},
		{Name: "node3", ConnURL: "postgres://10.0.0.4:5432/postgres"},
	}
	got := matchMembers([]*cluster.Server{byName, byAddr, none}, members)
	if got[byName].Name != "node1" || got[byAddr].Name != "node2" {
		t.Errorf("matched %v", got)
	}
	if _, ok := got[none]; ok {
		t.Errorf("pg3 matched %+v", got[none])
	}
}

func TestValidServerName(t *testing.T) {
	for name, want := range map[string]bool{"node1": true, "pg-2.b_c": true, "": false, "a b": false, "a/b": false, "ä": false} {
		if got := validServerName(name); got != want {
			t.Errorf("validServerName(%q) = %v", name, got)
		}
	}
}
