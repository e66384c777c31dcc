package admission

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func cands(ls ...*Limit) func() []*Limit { return func() []*Limit { return ls } }

func mustAcquire(t *testing.T, c *Controller, fixed []*Limit, choices func() []*Limit) *Ticket {
	t.Helper()
	tk, ok := c.TryAcquire(fixed, choices)
	if !ok {
		t.Fatal("TryAcquire failed, want slots free")
	}
	return tk
}

type result struct {
	t   *Ticket
	err error
}

// acquireAsync starts Acquire in a goroutine and waits until it is queued as waiter number
// queued, so arrival order is known.
func acquireAsync(t *testing.T, ctx context.Context, c *Controller, queued int, fixed []*Limit, choices func() []*Limit) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	go func() {
		tk, err := c.Acquire(ctx, fixed, choices)
		ch <- result{tk, err}
	}()
	waitFor(t, "waiter to queue", func() bool { return c.Queued() == queued })
	return ch
}

func checkInUse(t *testing.T, want int, ls ...*Limit) {
	t.Helper()
	for _, l := range ls {
		if got := l.InUse(); got != want {
			t.Errorf("%s: InUse = %d, want %d", l.Name(), got, want)
		}
	}
}

func TestLimitAccessors(t *testing.T) {
	c := New(0)
	l := c.NewLimit("global", 3)
	if l.Name() != "global" || l.Max() != 3 || l.InUse() != 0 {
		t.Fatalf("got %q max %d inUse %d", l.Name(), l.Max(), l.InUse())
	}
	tk := mustAcquire(t, c, []*Limit{l}, nil)
	if l.InUse() != 1 || tk.Choice() != nil || tk.ChoiceIndex() != -1 {
		t.Fatalf("after acquire: inUse %d choice %v index %d", l.InUse(), tk.Choice(), tk.ChoiceIndex())
	}
	tk.Release()
	checkInUse(t, 0, l)
}

// TestHammer checks that no limit is ever exceeded, whatever the interleaving of Acquire,
// TryAcquire, Rechoose, cancellation and Release.
func TestHammer(t *testing.T) {
	c := New(1000)
	global := c.NewLimit("global", 6)
	routes := []*Limit{c.NewLimit("r0", 4), c.NewLimit("r1", 4)}
	s := []*Limit{c.NewLimit("s0", 2), c.NewLimit("s1", 2), c.NewLimit("s2", 3)}
	choices := [][]*Limit{{s[0], s[1]}, {s[1], s[2]}}
	all := append([]*Limit{global}, append(routes, s...)...)
	held := map[*Limit]*atomic.Int64{}
	for _, l := range all {
		held[l] = new(atomic.Int64)
	}
	var exceeded atomic.Int64
	take := func(ls ...*Limit) {
		for _, l := range ls {
			if n := held[l].Add(1); n > int64(l.Max()) {
				exceeded.Add(1)
			}
		}
	}
	drop := func(ls ...*Limit) {
		for _, l := range ls {
			held[l].Add(-1)
		}
	}

	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			r := g % 2
			fixed := []*Limit{global, routes[r]}
			for i := range 100 {
				var tk *Ticket
				switch i % 4 {
				case 0:
					var ok bool
					if tk, ok = c.TryAcquire(fixed, cands(choices[r]...)); !ok {
						continue
					}
				case 1: // a short deadline: some of these time out in the queue
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Microsecond)
					var err error
					tk, err = c.Acquire(ctx, fixed, cands(choices[r]...))
					cancel()
					if err != nil {
						if !errors.Is(err, ErrQueueTimeout) {
							t.Errorf("Acquire: %v", err)
						}
						continue
					}
				default:
					var err error
					if tk, err = c.Acquire(context.Background(), fixed, cands(choices[r]...)); err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
				}
				take(global, routes[r], tk.Choice())
				if i%3 == 0 { // move to the other server of the route
					drop(tk.Choice())
					other := choices[r][1-tk.ChoiceIndex()]
					if err := tk.Rechoose(context.Background(), cands(other)); err != nil {
						t.Errorf("Rechoose: %v", err)
					}
					if tk.Choice() != other {
						t.Errorf("Rechoose chose %v, want %s", tk.Choice(), other.Name())
					}
					take(tk.Choice())
				}
				for _, l := range all {
					if l.InUse() > l.Max() {
						exceeded.Add(1)
					}
				}
				drop(global, routes[r], tk.Choice())
				tk.Release()
			}
		})
	}
	wg.Wait()
	if n := exceeded.Load(); n > 0 {
		t.Errorf("limits exceeded %d times", n)
	}
	checkInUse(t, 0, all...)
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d, want 0", q)
	}
}

func TestFIFO(t *testing.T) {
	c := New(10)
	l := c.NewLimit("global", 1)
	first := mustAcquire(t, c, []*Limit{l}, nil)
	var waiters []<-chan result
	for i := range 5 {
		waiters = append(waiters, acquireAsync(t, context.Background(), c, i+1, []*Limit{l}, nil))
	}
	prev := first
	for i, ch := range waiters {
		prev.Release()
		// The release hands the slot straight to the oldest waiter: a newcomer gets nothing.
		if _, ok := c.TryAcquire([]*Limit{l}, nil); ok {
			t.Fatal("newcomer overtook the queue")
		}
		r := <-ch
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		for j := i + 1; j < len(waiters); j++ {
			select {
			case <-waiters[j]:
				t.Fatalf("waiter %d granted before waiter %d was released", j, i)
			default:
			}
		}
		prev = r.t
	}
	prev.Release()
	checkInUse(t, 0, l)
}

// TestOtherRoutesNotBlocked: an old waiter blocked by its full server does not hold up
// younger waiters that need other slots, and newcomers of other routes pass.
func TestOtherRoutesNotBlocked(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 10)
	s1, s2 := c.NewLimit("s1", 1), c.NewLimit("s2", 1)
	h1 := mustAcquire(t, c, []*Limit{global}, cands(s1))
	h2 := mustAcquire(t, c, []*Limit{global}, cands(s2))
	w1 := acquireAsync(t, context.Background(), c, 1, []*Limit{global}, cands(s1))
	w2 := acquireAsync(t, context.Background(), c, 2, []*Limit{global}, cands(s2))
	h2.Release()
	r2 := <-w2
	if r2.err != nil || r2.t.Choice() != s2 {
		t.Fatalf("younger waiter for s2: %v %v", r2.t, r2.err)
	}
	if c.Queued() != 1 {
		t.Fatalf("Queued = %d, want 1 (the s1 waiter)", c.Queued())
	}
	s3 := c.NewLimit("s3", 1)
	if tk, ok := c.TryAcquire([]*Limit{global}, cands(s3)); !ok {
		t.Fatal("newcomer for a free server was refused")
	} else {
		tk.Release()
	}
	h1.Release()
	if r1 := <-w1; r1.err != nil || r1.t.Choice() != s1 {
		t.Fatalf("waiter for s1: %v %v", r1.t, r1.err)
	} else {
		r1.t.Release()
	}
	r2.t.Release()
	checkInUse(t, 0, global, s1, s2, s3)
}

func TestQueueTimeout(t *testing.T) {
	c := New(10)
	l := c.NewLimit("global", 1)
	h := mustAcquire(t, c, []*Limit{l}, nil)
	defer h.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	tk, err := c.Acquire(ctx, []*Limit{l}, nil)
	if tk != nil || !errors.Is(err, ErrQueueTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, %v; want ErrQueueTimeout wrapping DeadlineExceeded", tk, err)
	}
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d after timeout, want 0", q)
	}
	checkInUse(t, 1, l)
}

func TestCancelLeavesQueue(t *testing.T) {
	c := New(10)
	l := c.NewLimit("global", 1)
	h := mustAcquire(t, c, []*Limit{l}, nil)
	defer h.Release()
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(t, ctx, c, 1, []*Limit{l}, nil)
	cancel()
	r := <-ch
	if r.t != nil || !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrQueueTimeout) {
		t.Fatalf("Acquire = %v, %v; want context.Canceled", r.t, r.err)
	}
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d right after cancel, want 0", q)
	}
	// A done context does not queue at all.
	if tk, err := c.Acquire(ctx, []*Limit{l}, nil); tk != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with done ctx = %v, %v", tk, err)
	}
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d, want 0", q)
	}
}

// TestGrantCancelRace makes grants and cancellations collide: a ticket granted to a waiter
// that is leaving must be released, never leaked.
func TestGrantCancelRace(t *testing.T) {
	c := New(10)
	l := c.NewLimit("global", 1)
	for range 500 {
		h := mustAcquire(t, c, []*Limit{l}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		ch := acquireAsync(t, ctx, c, 1, []*Limit{l}, nil)
		collide(c, h, cancel)
		r := <-ch
		if r.err == nil {
			r.t.Release()
		} else if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Acquire: %v", r.err)
		}
		if l.InUse() != 0 || c.Queued() != 0 {
			t.Fatalf("after the race: InUse %d Queued %d, want 0 0", l.InUse(), c.Queued())
		}
	}
}

func TestQueueFull(t *testing.T) {
	c := New(1)
	l := c.NewLimit("global", 1)
	h := mustAcquire(t, c, []*Limit{l}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(t, ctx, c, 1, []*Limit{l}, nil)
	if tk, err := c.Acquire(context.Background(), []*Limit{l}, nil); tk != nil || !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Acquire on a full queue = %v, %v; want ErrQueueFull", tk, err)
	}
	cancel()
	<-ch
	h.Release()

	never := New(0)
	l0 := never.NewLimit("global", 1)
	h0 := mustAcquire(t, never, []*Limit{l0}, nil)
	defer h0.Release()
	if _, err := never.Acquire(context.Background(), []*Limit{l0}, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("maxQueue 0: Acquire = %v, want ErrQueueFull", err)
	}
}

func TestCandidateChoice(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 0) // unlimited
	a, b, d := c.NewLimit("a", 1), c.NewLimit("b", 2), c.NewLimit("d", 0)
	ha := mustAcquire(t, c, nil, cands(a))
	defer ha.Release()
	for i, want := range []*Limit{b, b, d, d} {
		tk := mustAcquire(t, c, []*Limit{global}, cands(a, b, d))
		defer tk.Release()
		if tk.Choice() != want {
			t.Fatalf("acquire %d chose %s, want %s", i, tk.Choice().Name(), want.Name())
		}
		if wantIdx := map[*Limit]int{b: 1, d: 2}[want]; tk.ChoiceIndex() != wantIdx {
			t.Fatalf("ChoiceIndex = %d, want %d", tk.ChoiceIndex(), wantIdx)
		}
	}
	checkInUse(t, 4, global)
	checkInUse(t, 2, b, d)
}

func TestNoCandidates(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 1)
	if tk, err := c.Acquire(context.Background(), []*Limit{global}, cands()); tk != nil || !errors.Is(err, ErrNoCandidates) {
		t.Fatalf("Acquire = %v, %v; want ErrNoCandidates", tk, err)
	}
	if _, ok := c.TryAcquire([]*Limit{global}, cands()); ok {
		t.Fatal("TryAcquire with no candidates succeeded")
	}
	h := mustAcquire(t, c, []*Limit{global}, nil)
	defer h.Release()
	// Even when the fixed limits are full: nothing to wait for, so no queueing.
	if _, err := c.Acquire(context.Background(), []*Limit{global}, cands()); !errors.Is(err, ErrNoCandidates) {
		t.Fatalf("Acquire with full global = %v, want ErrNoCandidates", err)
	}
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d, want 0", q)
	}
	checkInUse(t, 1, global)
}

// TestRecheck: waiters see a change of their candidates only on a scan.
func TestRecheck(t *testing.T) {
	c := New(10)
	s1, s2 := c.NewLimit("s1", 1), c.NewLimit("s2", 1)
	h := mustAcquire(t, c, nil, cands(s1))
	defer h.Release()
	var current atomic.Pointer[[]*Limit]
	current.Store(&[]*Limit{s1})
	choices := func() []*Limit { return *current.Load() }

	ch := acquireAsync(t, context.Background(), c, 1, nil, choices)
	current.Store(&[]*Limit{s1, s2}) // s2 came up
	c.Recheck()
	if r := <-ch; r.err != nil || r.t.Choice() != s2 {
		t.Fatalf("after Recheck: %v %v, want s2", r.t, r.err)
	} else {
		r.t.Release()
	}

	current.Store(&[]*Limit{s1})
	ch = acquireAsync(t, context.Background(), c, 1, nil, choices)
	current.Store(&[]*Limit{}) // every server went away
	c.Recheck()
	if r := <-ch; !errors.Is(r.err, ErrNoCandidates) {
		t.Fatalf("after Recheck with no servers: %v, want ErrNoCandidates", r.err)
	}
	if q := c.Queued(); q != 0 {
		t.Errorf("Queued = %d, want 0", q)
	}
}

func TestRechoose(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 5)
	s1, s2 := c.NewLimit("s1", 0), c.NewLimit("s2", 1)
	tk := mustAcquire(t, c, []*Limit{global}, cands(s1, s2))
	if tk.Choice() != s1 {
		t.Fatalf("chose %s, want s1", tk.Choice().Name())
	}
	// s1 failed: the caller leaves it out.
	if err := tk.Rechoose(context.Background(), cands(s2)); err != nil {
		t.Fatal(err)
	}
	if tk.Choice() != s2 || tk.ChoiceIndex() != 0 {
		t.Fatalf("after Rechoose: %v index %d, want s2 index 0", tk.Choice(), tk.ChoiceIndex())
	}
	checkInUse(t, 0, s1)
	checkInUse(t, 1, global, s2)

	// A second session has to wait in the queue for s2, keeping its global slot.
	other := mustAcquire(t, c, []*Limit{global}, cands(s1))
	done := make(chan error, 1)
	go func() { done <- other.Rechoose(context.Background(), cands(s2)) }()
	waitFor(t, "Rechoose to queue", func() bool { return c.Queued() == 1 })
	checkInUse(t, 2, global)
	checkInUse(t, 0, s1)
	tk.Release()
	if err := <-done; err != nil || other.Choice() != s2 {
		t.Fatalf("queued Rechoose: %v, choice %v", err, other.Choice())
	}
	checkInUse(t, 1, global, s2)

	// A failed Rechoose leaves the fixed slots held and no choice.
	if err := other.Rechoose(context.Background(), cands()); !errors.Is(err, ErrNoCandidates) {
		t.Fatalf("Rechoose with no candidates: %v", err)
	}
	if other.Choice() != nil || other.ChoiceIndex() != -1 {
		t.Fatalf("choice after failed Rechoose: %v", other.Choice())
	}
	checkInUse(t, 1, global)
	checkInUse(t, 0, s2)
	other.Release()
	checkInUse(t, 0, global, s1, s2)
	if err := other.Rechoose(context.Background(), cands(s1)); !errors.Is(err, ErrReleased) {
		t.Fatalf("Rechoose after Release: %v, want ErrReleased", err)
	}
}

// TestRechooseFront: a rechoosing session is served before sessions waiting to get in.
func TestRechooseFront(t *testing.T) {
	c := New(10)
	s := c.NewLimit("s", 1)
	h := mustAcquire(t, c, nil, cands(s))
	tk := mustAcquire(t, c, nil, cands(c.NewLimit("failed", 0)))
	newcomer := acquireAsync(t, context.Background(), c, 1, nil, cands(s))
	done := make(chan error, 1)
	go func() { done <- tk.Rechoose(context.Background(), cands(s)) }()
	waitFor(t, "Rechoose to queue", func() bool { return c.Queued() == 2 })
	h.Release()
	if err := <-done; err != nil || tk.Choice() != s {
		t.Fatalf("Rechoose: %v %v", err, tk.Choice())
	}
	tk.Release()
	r := <-newcomer
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.t.Release()
}

func TestRechooseCancelAndRelease(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 0)
	s := c.NewLimit("s", 1)
	h := mustAcquire(t, c, nil, cands(s))
	defer h.Release()
	tk := mustAcquire(t, c, []*Limit{global}, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := tk.Rechoose(ctx, cands(s)); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("Rechoose = %v, want ErrQueueTimeout", err)
	}
	checkInUse(t, 1, global)

	done := make(chan error, 1)
	go func() { done <- tk.Rechoose(context.Background(), cands(s)) }()
	waitFor(t, "Rechoose to queue", func() bool { return c.Queued() == 1 })
	tk.Release() // e.g. the session was killed while waiting
	if err := <-done; !errors.Is(err, ErrReleased) {
		t.Fatalf("Rechoose during Release = %v, want ErrReleased", err)
	}
	if c.Queued() != 0 {
		t.Fatalf("Queued = %d, want 0", c.Queued())
	}
	checkInUse(t, 0, global)
	checkInUse(t, 1, s)
}

func TestReleaseIdempotent(t *testing.T) {
	c := New(10)
	l, s := c.NewLimit("global", 2), c.NewLimit("s", 2)
	a := mustAcquire(t, c, []*Limit{l}, cands(s))
	b := mustAcquire(t, c, []*Limit{l}, cands(s))
	a.Release()
	a.Release()
	a.Release()
	checkInUse(t, 1, l, s) // b's slots are untouched
	b.Release()
	checkInUse(t, 0, l, s)
}

func TestSetMaxAdmitsWaiters(t *testing.T) {
	c := New(10)
	l := c.NewLimit("global", 1)
	h := mustAcquire(t, c, []*Limit{l}, nil)
	w1 := acquireAsync(t, context.Background(), c, 1, []*Limit{l}, nil)
	w2 := acquireAsync(t, context.Background(), c, 2, []*Limit{l}, nil)
	c.SetMax(l, 2)
	r1 := <-w1
	if r1.err != nil {
		t.Fatal(r1.err)
	}
	if c.Queued() != 1 || l.InUse() != 2 || l.Max() != 2 {
		t.Fatalf("Queued %d InUse %d Max %d; want 1 2 2", c.Queued(), l.InUse(), l.Max())
	}
	c.SetMax(l, 0) // unlimited
	r2 := <-w2
	if r2.err != nil {
		t.Fatal(r2.err)
	}
	// Lowering takes nothing back but holds new sessions off until InUse is under it.
	c.SetMax(l, 1)
	if _, ok := c.TryAcquire([]*Limit{l}, nil); ok {
		t.Fatal("TryAcquire over the lowered max succeeded")
	}
	for _, tk := range []*Ticket{h, r1.t, r2.t} {
		tk.Release()
	}
	checkInUse(t, 0, l)
}

// TestRechooseGrantCancelRace: a Rechoose granted while its context ends gives the new slot
// back and keeps the fixed ones.
func TestRechooseGrantCancelRace(t *testing.T) {
	c := New(10)
	global := c.NewLimit("global", 0)
	s := c.NewLimit("s", 1)
	for range 500 {
		h := mustAcquire(t, c, nil, cands(s))
		tk := mustAcquire(t, c, []*Limit{global}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tk.Rechoose(ctx, cands(s)) }()
		waitFor(t, "Rechoose to queue", func() bool { return c.Queued() == 1 })
		collide(c, h, cancel)
		err := <-done
		switch {
		case err == nil:
			if tk.Choice() != s || s.InUse() != 1 {
				t.Fatalf("granted Rechoose: choice %v, s InUse %d", tk.Choice(), s.InUse())
			}
		case errors.Is(err, context.Canceled):
			if tk.Choice() != nil || s.InUse() != 0 {
				t.Fatalf("cancelled Rechoose: choice %v, s InUse %d", tk.Choice(), s.InUse())
			}
		default:
			t.Fatalf("Rechoose: %v", err)
		}
		if global.InUse() != 1 || c.Queued() != 0 {
			t.Fatalf("global InUse %d Queued %d, want 1 0", global.InUse(), c.Queued())
		}
		tk.Release()
		checkInUse(t, 0, global, s)
	}
}

// collide ends the context and grants the slot in one critical section, so the waiter
// finds both its context done and its grant made, in either order.
func collide(c *Controller, h *Ticket, cancel context.CancelFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cancel()
	h.releaseLocked()
}

// TestSetMaxQueue: a larger queue takes waiters that a full one refused; a smaller one sends
// nobody away but refuses newcomers.
func TestSetMaxQueue(t *testing.T) {
	c := New(0)
	l := c.NewLimit("l", 1)
	first, ok := c.TryAcquire([]*Limit{l}, nil)
	if !ok {
		t.Fatal("first slot refused")
	}
	defer first.Release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.Acquire(ctx, []*Limit{l}, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("queue 0: %v, want ErrQueueFull", err)
	}
	c.SetMaxQueue(1)
	got := make(chan error, 1)
	go func() {
		tk, err := c.Acquire(ctx, []*Limit{l}, nil)
		if err == nil {
			tk.Release()
		}
		got <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.Queued() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("waiter never queued")
		}
		time.Sleep(time.Millisecond)
	}
	c.SetMaxQueue(0)
	if c.Queued() != 1 {
		t.Fatal("lowering the queue sent a waiter away")
	}
	if _, err := c.Acquire(ctx, []*Limit{l}, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after lowering: %v, want ErrQueueFull", err)
	}
	first.Release()
	if err := <-got; err != nil {
		t.Fatalf("queued waiter: %v", err)
	}
}
