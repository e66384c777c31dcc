package config

import (
	"errors"
	"slices"
	"testing"
)

func TestFleet(t *testing.T) {
	c, _ := mustParse(t, "fleet:\n  name: pgfront-a\n  secret_file: /etc/pgfront/fleet.key\n"+
		"  peers: [10.0.0.2:9187, \"https://pgfront-c.example:9187\"]\n  cancel_fallback_rate: 2.5\n  cancel_fallback_burst: 5\n"+base)
	want := Fleet{Name: "pgfront-a", SecretFile: "/etc/pgfront/fleet.key",
		Peers: []string{"10.0.0.2:9187", "https://pgfront-c.example:9187"}, CancelFallbackRate: 2.5, CancelFallbackBurst: 5}
	if f := c.Fleet; f.Name != want.Name || f.SecretFile != want.SecretFile || !slices.Equal(f.Peers, want.Peers) ||
		f.CancelFallbackRate != want.CancelFallbackRate || f.CancelFallbackBurst != want.CancelFallbackBurst {
		t.Errorf("fleet = %+v, want %+v", f, want)
	}
	c, _ = mustParse(t, "fleet:\n  secret_env: FLEET_KEY\n  dns_peers: [pgfront-peers.db.svc.cluster.local:9187, pgfront-peers.other:9188]\n"+base)
	if want := []string{"pgfront-peers.db.svc.cluster.local:9187", "pgfront-peers.other:9188"}; !slices.Equal(c.Fleet.DNSPeers, want) {
		t.Errorf("dns_peers = %q, want %q", c.Fleet.DNSPeers, want)
	}
	c, _ = mustParse(t, "fleet:\n  advertise: \"https://pgfront-a.example:9187\"\n"+base)
	if c.Fleet.Advertise != "https://pgfront-a.example:9187" {
		t.Errorf("advertise = %q", c.Fleet.Advertise)
	}
	c, _ = mustParse(t, "fleet:\n  cancel_fallback_rate: 0\n  cancel_fallback_burst: 0\n"+base)
	if c.Fleet.CancelFallbackRate != 0 {
		t.Errorf("cancel_fallback_rate: 0 (off) became %g", c.Fleet.CancelFallbackRate)
	}
}

// TestFleetProblems: every problem of a fleet section is reported at once, at its line.
func TestFleetProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"peers without a secret", "fleet:\n  peers: [10.0.0.2:9187]\n" + base,
			[]want{{"peers:", "fleet.peers", "peers need a shared secret"}}},
		{"bad peers and two secret sources", "fleet:\n  secret_file: /k\n  secret_env: FLEET_KEY\n  peers:\n    - 10.0.0.2\n    - ftp://x:21\n    - 10.0.0.3:9187\n    - 10.0.0.3:9187 # again\n" + base,
			[]want{
				{"secret_env", "fleet.secret_env", "both set"},
				{"- 10.0.0.2", "fleet.peers[0]", "must be host:port"},
				{"ftp://", "fleet.peers[1]", "http:// or https://"},
				{"# again", "fleet.peers[3]", "listed twice"},
			}},
		{"negative rate, bad name", "fleet:\n  name: \"a b\"\n  cancel_fallback_rate: -1\n  cancel_fallback_rat: 3\n" + base,
			[]want{
				{"name:", "fleet.name", "must match"},
				{"cancel_fallback_rate: -1", "fleet.cancel_fallback_rate", "must not be negative"},
				{"cancel_fallback_rat:", "fleet.cancel_fallback_rat", `did you mean "cancel_fallback_rate"?`},
			}},
		{"dns_peers without a secret", "fleet:\n  dns_peers: [pgfront-peers:9187]\n" + base,
			[]want{{"dns_peers:", "fleet.dns_peers", "peers need a shared secret"}}},
		{"bad dns_peers", "fleet:\n  secret_file: /k\n  dns_peers:\n    - pgfront-peers # no port\n    - \"https://pgfront-peers:9187\"\n    - pgfront-peers:9187\n    - pgfront-peers:9187 # again\n" + base,
			[]want{
				{"# no port", "fleet.dns_peers[0]", "must be host:port"},
				{"https://", "fleet.dns_peers[1]", "must be host:port (every address"},
				{"# again", "fleet.dns_peers[3]", "listed twice"},
			}},
		{"bad advertise", "fleet:\n  advertise: pgfront-a\n" + base,
			[]want{{"advertise", "fleet.advertise", "must be host:port"}}},
		{"zero burst", "fleet:\n  cancel_fallback_burst: 0\n" + base,
			[]want{{"cancel_fallback_burst", "fleet.cancel_fallback_burst", "must be at least 1"}}},
		{"bad env name", "fleet:\n  secret_env: 1X\n" + base,
			[]want{{"secret_env", "fleet.secret_env", "not an environment variable name"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.src), "bad.yaml")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			checkFindings(t, tt.src, asFindings(e.Problems), tt.want)
			if t.Failed() {
				t.Logf("source:\n%s\nerror:\n%v", tt.src, err)
			}
		})
	}
}
