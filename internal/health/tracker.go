package health

// Tracker is the rise/fall state machine of one server: pure, with no time and no sockets.
// It is not safe for concurrent use (the monitor's loop owns it).
type Tracker struct {
	rise, fall int
	up         bool
	streak     int // consecutive results against the current state
}

// NewTracker returns a tracker starting up or down; rise and fall below 1 count as 1.
func NewTracker(rise, fall int, initiallyUp bool) *Tracker {
	return &Tracker{rise: max(rise, 1), fall: max(fall, 1), up: initiallyUp}
}

// SetRiseFall changes the thresholds (below 1 counts as 1), as a configuration reload does.
// It keeps the state and a streak in progress, so a reload never flaps a server: a streak
// already as long as a lowered threshold completes at its next result in the same direction
// (not at once, since no new result says so), and a result against it still breaks it.
func (t *Tracker) SetRiseFall(rise, fall int) {
	t.rise, t.fall = max(rise, 1), max(fall, 1)
}

// Observe records one check result; it returns whether the server is up now and whether
// that just changed. A down server needs rise consecutive successes to go up; an up server
// needs fall consecutive failures to go down. A result that agrees with the current state
// breaks a streak.
func (t *Tracker) Observe(ok bool) (up, changed bool) {
	if ok == t.up {
		t.streak = 0
		return t.up, false
	}
	t.streak++
	need := t.fall
	if !t.up {
		need = t.rise
	}
	if t.streak < need {
		return t.up, false
	}
	t.up = ok
	t.streak = 0
	return t.up, true
}

// Up reports the current state.
func (t *Tracker) Up() bool { return t.up }

// Changing reports whether a streak towards a transition is in progress (the monitor then
// uses the fast interval).
func (t *Tracker) Changing() bool { return t.streak > 0 }
