package memtrim

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink keeps allocations from being optimised away.
var sink []byte

// TestTrimAfterBurst drives the loop tick by tick: quiet without a burst is not trimmed,
// allocation going on is not, the first quiet interval after a burst is, once.
func TestTrimAfterBurst(t *testing.T) {
	ticks := make(chan time.Time)
	trimmed := make(chan struct{}, 10)
	// Burst 6 MiB for 8 MiB allocated: a batch split across two intervals may leave up to
	// Quiet of it in a quiet one, which does not count.
	tr := start(Options{Interval: time.Hour, Burst: 6 << 20, Quiet: 1 << 20,
		Trim: func() { trimmed <- struct{}{} }}, ticks)
	defer tr.Stop()
	tick := func() { ticks <- time.Now() }
	allocate := func(n int) {
		for range n {
			sink = make([]byte, 1<<20)
		}
	}
	// A tick is taken once the loop is back in its select, so an allocation made between two
	// ticks is counted in one of the two intervals around it; either way exactly one quiet
	// interval follows the 8 MiB, and the counts are read after Stop.
	tick()
	tick() // quiet, no burst
	allocate(4)
	tick() // 4 MiB: busy
	allocate(4)
	tick() // 8 MiB since the start: busy, still no trim
	tick() // quiet after a burst of 8 MiB: trim
	tick()
	tick() // quiet, nothing new
	tr.Stop()
	if got := len(trimmed); got != 1 || tr.Trims() != 1 {
		t.Fatalf("trims = %d (%d), want 1", got, tr.Trims())
	}
	_ = sink
}

// TestNoTrimForTrickle: allocation that stays under Quiet in every interval is steady light
// load, not a burst, however much it adds up to.
func TestNoTrimForTrickle(t *testing.T) {
	ticks := make(chan time.Time)
	trimmed := make(chan struct{}, 10)
	tr := start(Options{Interval: time.Hour, Burst: 2 << 20, Quiet: 1 << 20,
		Trim: func() { trimmed <- struct{}{} }}, ticks)
	defer tr.Stop()
	ticks <- time.Now()
	for range 8 { // 8 x 512 KiB = 4 MiB, twice Burst, never a busy interval
		sink = make([]byte, 512<<10)
		ticks <- time.Now()
	}
	tr.Stop()
	if got := len(trimmed); got != 0 {
		t.Fatalf("trims = %d for a trickle under Quiet, want 0", got)
	}
	_ = sink
}
