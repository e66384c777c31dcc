package health

import (
	"strings"
	"testing"
)

func TestRoleString(t *testing.T) {
	for r, want := range map[Role]string{RoleUnknown: "unknown", RolePrimary: "primary", RoleReplica: "replica", Role(9): "unknown"} {
		if got := r.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", r, got, want)
		}
	}
}

// TestTracker feeds sequences of results ('+' success, '-' failure) and checks the state,
// the transitions and Changing after each one ('U'/'D' = up/down, lower case = Changing,
// '!' after it = changed just now).
func TestTracker(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		up         bool
		results    string
		want       string // one token per result
	}{
		{"up stays up", 2, 3, true, "+++", "U U U"},
		{"up falls after fall failures", 2, 3, true, "---", "u u D!"},
		{"a success breaks the fall streak", 2, 3, true, "--+--+", "u u U u u U"},
		{"down rises after rise successes", 2, 3, false, "++", "d U!"},
		{"a failure breaks the rise streak", 2, 3, false, "+-+-++", "d D d D d U!"},
		{"full cycle", 2, 3, true, "---++-", "u u D! d U! u"},
		{"down stays down", 2, 3, false, "---", "D D D"},
		{"rise and fall of 1 follow each result", 1, 1, true, "-+-+", "D! U! D! U!"},
		{"rise and fall below 1 count as 1", 0, -5, false, "+-", "U! D!"},
		{"fall of 2", 3, 2, true, "--+++", "u D! d d U!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(tt.rise, tt.fall, tt.up)
			if tr.Up() != tt.up || tr.Changing() {
				t.Fatalf("new tracker: Up %v Changing %v, want %v false", tr.Up(), tr.Changing(), tt.up)
			}
			var got []string
			for _, r := range tt.results {
				up, changed := tr.Observe(r == '+')
				if up != tr.Up() {
					t.Fatalf("Observe returned up=%v, Up() = %v", up, tr.Up())
				}
				tok := "D"
				if up {
					tok = "U"
				}
				if tr.Changing() {
					tok = strings.ToLower(tok)
				}
				if changed {
					tok += "!"
				}
				got = append(got, tok)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("results %q: got %q, want %q", tt.results, g, tt.want)
			}
		})
	}
}
