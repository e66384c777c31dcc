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

// TestTrackerSetRiseFall: new thresholds keep the state and the streak in progress; a streak
// already as long as a lowered threshold completes at its next result, not at the change.
func TestTrackerSetRiseFall(t *testing.T) {
	check := func(tr *Tracker, step string, wantUp, wantChanging bool) {
		t.Helper()
		if tr.Up() != wantUp || tr.Changing() != wantChanging {
			t.Fatalf("%s: Up %v Changing %v, want %v %v", step, tr.Up(), tr.Changing(), wantUp, wantChanging)
		}
	}
	observe := func(tr *Tracker, ok bool, n int) {
		for range n {
			tr.Observe(ok)
		}
	}

	tr := NewTracker(2, 3, true)
	tr.SetRiseFall(2, 5) // raised fall: five failures now
	observe(tr, false, 4)
	check(tr, "up, fall 5, four failures", true, true)
	observe(tr, false, 1)
	check(tr, "fifth failure", false, false)

	tr = NewTracker(2, 3, true)
	observe(tr, false, 2)
	tr.SetRiseFall(2, 1) // lowered below the streak: no transition without a new result
	check(tr, "up, streak 2, fall lowered to 1", true, true)
	observe(tr, false, 1)
	check(tr, "next failure", false, false)

	tr = NewTracker(2, 3, false)
	observe(tr, true, 1)
	tr.SetRiseFall(3, 3)
	observe(tr, true, 1)
	check(tr, "down, rise 3, two successes", false, true)
	observe(tr, true, 1)
	check(tr, "third success", true, false)

	tr = NewTracker(2, 3, true)
	tr.SetRiseFall(0, -1) // below 1 counts as 1
	observe(tr, false, 1)
	check(tr, "fall 1, one failure", false, false)
}
