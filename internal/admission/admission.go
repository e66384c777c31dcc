// Package admission owns the maxconn limits (global, per route, per server) and the bounded
// FIFO queue in which sessions wait for a slot.
//
// A session asks for one slot in each of a fixed set of limits (typically the global and its
// route's) and in exactly one of the limits its balancer offers (the servers, in order of
// preference). It gets all of them at once or none; while it cannot, it waits in the
// controller's queue, bounded in length and, through its context, in time.
//
//	c := admission.New(100) // at most 100 sessions waiting
//	global := c.NewLimit("global", 1000)
//	route := c.NewLimit("route rw", 200)
//	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
//	defer cancel()
//	t, err := c.Acquire(ctx, []*admission.Limit{global, route}, func() []*admission.Limit {
//		return serverLimits(balancer.Order(buf[:0], snapshot)) // cheap, no Controller calls
//	})
//	if err != nil { /* ErrQueueFull, ErrQueueTimeout, ErrNoCandidates → refuse with 53300 */ }
//	defer t.Release()
//	server := t.Choice()
//
// # Fairness
//
// The queue is served in arrival order by one rule: whenever slots may have become free (a
// release, a SetMax, a Recheck), the controller scans the waiters from oldest to newest and
// grants every waiter whose slots are all free at that moment, taking the slots before
// looking at the next waiter. So an older waiter always gets a freed slot before a younger
// one that needs the same slot, while a waiter blocked by a limit only it needs (a full
// server) does not hold up younger waiters of other routes or servers.
//
// After every scan no waiter can be served by the free slots. A newcomer is therefore granted
// at once exactly when its own slots are free, which can never take a slot an older waiter
// could have used; otherwise it joins the back of the queue. This holds as long as the
// waiters' choices functions do not change their answers between scans: call Recheck after
// the inputs of the choices change (a server came up, weights changed) so that waiters get
// the new servers before newcomers do.
package admission

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Errors returned by Acquire, TryAcquire and Rechoose.
var (
	// ErrQueueFull: no slot was free and the queue already held its maximum of waiters (or
	// the controller never queues).
	ErrQueueFull = errors.New("admission queue full")
	// ErrQueueTimeout wraps context.DeadlineExceeded when a waiter's context expired in the
	// queue.
	ErrQueueTimeout = errors.New("admission queue timeout")
	// ErrNoCandidates: the choices function returned no candidate, so there is nothing to
	// wait for.
	ErrNoCandidates = errors.New("no candidate server")
	// ErrReleased: Rechoose on a ticket that was (or got) released.
	ErrReleased = errors.New("admission ticket released")
)

// Limit is one maxconn counter: the global limit, a route's or a server's. Its counts change
// only under its Controller's lock; InUse and Max read them without the lock, so they are
// safe for concurrent use and meant for metrics and stats.
type Limit struct {
	c     *Controller
	name  string
	max   atomic.Int64 // 0 = unlimited; written under c.mu
	inUse atomic.Int64 // written under c.mu
}

// Name returns the name given to NewLimit.
func (l *Limit) Name() string { return l.name }

// InUse returns the number of slots currently held.
func (l *Limit) InUse() int { return int(l.inUse.Load()) }

// Max returns the limit; 0 means unlimited.
func (l *Limit) Max() int { return int(l.max.Load()) }

// free reports whether one more slot can be taken. Called under c.mu.
func (l *Limit) free() bool {
	m := l.max.Load()
	return m <= 0 || l.inUse.Load() < m
}

// Controller admits sessions under its limits and queues the ones that do not fit. All its
// methods are safe for concurrent use. Limits belong to the Controller that made them and
// must only be passed to its methods; a limit must not appear twice in one request.
type Controller struct {
	// mu guards every Limit's counts, the queue and the tickets' state. Choices functions
	// are called with it held, channel sends to waiters never block (buffered, one send).
	mu struct {
		sync.Mutex
		waiters  list.List // of *waiter, oldest first
		maxQueue int
	}
}

// New returns a Controller whose queue holds at most maxQueue waiters; 0 means requests that
// cannot be served at once fail with ErrQueueFull.
func New(maxQueue int) *Controller {
	c := &Controller{}
	c.mu.maxQueue = max(maxQueue, 0)
	return c
}

// SetMaxQueue changes how many waiters the queue holds (a config reload). Lowering it below
// the number waiting now sends nobody away: only newcomers are refused until it drains.
func (c *Controller) SetMaxQueue(maxQueue int) {
	c.mu.Lock()
	c.mu.maxQueue = max(maxQueue, 0)
	c.mu.Unlock()
}

// NewLimit returns a new limit of this controller with max slots (0 = unlimited).
func (c *Controller) NewLimit(name string, max int) *Limit {
	l := &Limit{c: c, name: name}
	l.max.Store(int64(max))
	return l
}

// SetMax changes l's maximum (0 = unlimited). Lowering it below InUse takes nothing back; new
// grants wait until InUse is below the new maximum. Raising it admits waiters at once.
func (c *Controller) SetMax(l *Limit, max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.max.Store(int64(max))
	c.grantLocked()
}

// Queued returns the number of waiters in the queue.
func (c *Controller) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.waiters.Len()
}

// Recheck scans the queue as a release does. Call it when what the waiters' choices
// functions return may have changed: a server became usable, a weight changed. Waiters whose
// choices are now empty fail with ErrNoCandidates.
func (c *Controller) Recheck() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.grantLocked()
}

// Ticket is the set of slots held by one admitted session. Release gives them back. A
// Ticket belongs to its session, which must not call Rechoose from two goroutines at once;
// Release is idempotent and may be called from any goroutine at any time (a Rechoose waiting
// in the queue then fails with ErrReleased).
type Ticket struct {
	c     *Controller
	fixed []*Limit

	// Guarded by c.mu.
	choice    *Limit
	choiceIdx int
	released  bool
	waiting   *waiter // the ticket's Rechoose request while it is queued
}

// Choice returns the chosen candidate limit, or nil if the request had no choices (or a
// failed Rechoose left the ticket without one).
func (t *Ticket) Choice() *Limit {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.choice
}

// ChoiceIndex returns the position of Choice in the slice returned by the choices function
// on the attempt that succeeded, or -1 when there is no choice.
func (t *Ticket) ChoiceIndex() int {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.choiceIdx
}

// Release gives back every slot of the ticket and serves the queue. Calls after the first
// do nothing.
func (t *Ticket) Release() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.releaseLocked()
}

func (t *Ticket) releaseLocked() {
	c := t.c
	if t.released {
		return
	}
	t.released = true
	if w := t.waiting; w != nil {
		c.dequeueLocked(w, ErrReleased)
	}
	for _, l := range t.fixed {
		l.inUse.Add(-1)
	}
	if t.choice != nil {
		t.choice.inUse.Add(-1)
		t.choice, t.choiceIdx = nil, -1
	}
	c.grantLocked()
}

// Rechoose gives back the ticket's candidate slot and takes one from choices() instead (the
// caller leaves out the servers that failed), keeping the fixed slots. It waits in the queue
// like Acquire and fails like Acquire; on failure the ticket keeps its fixed slots and has no
// choice, and the caller still has to Release it.
//
// A rechoosing session has been admitted before, and holds global and route slots that
// others wait for, so it enters the queue at the front rather than the back.
func (t *Ticket) Rechoose(ctx context.Context, choices func() []*Limit) error {
	if choices == nil { // fails below with ErrNoCandidates, after giving back the old choice
		choices = func() []*Limit { return nil }
	}
	c := t.c
	c.mu.Lock()
	if t.released {
		c.mu.Unlock()
		return ErrReleased
	}
	old := t.choice
	t.choice, t.choiceIdx = nil, -1
	if old != nil {
		old.inUse.Add(-1)
	}
	w := &waiter{ticket: t, choices: choices, ready: make(chan error, 1)}
	ok, err := c.tryLocked(w)
	if !ok && err == nil {
		err = c.enqueueLocked(ctx, w, true)
	}
	if old != nil {
		c.grantLocked() // the freed server slot may serve others
	}
	c.mu.Unlock()
	if ok || err != nil {
		return err
	}
	return c.wait(ctx, w)
}

// waiter is one request: for a new session (ticket.fixed not yet taken) or for a Rechoose
// (ticket already holds its fixed slots).
type waiter struct {
	ticket    *Ticket
	takeFixed bool // the fixed slots must be taken too (Acquire), not already held (Rechoose)
	choices   func() []*Limit
	elem      *list.Element // non-nil while queued
	ready     chan error    // buffered 1: receives the outcome once, sent under c.mu
}

// Acquire takes one slot in every limit of fixed and one in the first limit returned by
// choices that has room (choices may be nil when no choice is needed). choices is called
// under the controller's lock on every attempt, so it must be cheap and must not call the
// Controller.
//
// If choices returns no candidate, Acquire fails at once with ErrNoCandidates. If the slots
// are not all free, the caller waits in the queue (see the package comment for the order):
// ErrQueueFull at once if the queue is full; when ctx ends, ctx.Err() wrapped in
// ErrQueueTimeout for a deadline, ctx.Err() otherwise. In every failure the caller has left
// the queue and holds nothing. If ctx is already done, Acquire still succeeds when the
// slots are free at once, and fails without queueing otherwise.
func (c *Controller) Acquire(ctx context.Context, fixed []*Limit, choices func() []*Limit) (*Ticket, error) {
	w := newWaiter(c, fixed, choices)
	c.mu.Lock()
	ok, err := c.tryLocked(w)
	if !ok && err == nil {
		err = c.enqueueLocked(ctx, w, false)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if ok {
		return w.ticket, nil
	}
	if err := c.wait(ctx, w); err != nil {
		return nil, err
	}
	return w.ticket, nil
}

// TryAcquire is Acquire without waiting: ok is false when the slots are not all free or
// choices returned no candidate.
func (c *Controller) TryAcquire(fixed []*Limit, choices func() []*Limit) (*Ticket, bool) {
	// Never queued: no channel, and the waiter stays on the stack.
	w := waiter{ticket: &Ticket{c: c, fixed: fixed, choiceIdx: -1}, takeFixed: true, choices: choices}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok, _ := c.tryLocked(&w); ok {
		return w.ticket, true
	}
	return nil, false
}

func newWaiter(c *Controller, fixed []*Limit, choices func() []*Limit) *waiter {
	return &waiter{
		ticket:    &Ticket{c: c, fixed: fixed, choiceIdx: -1},
		takeFixed: true,
		choices:   choices,
		ready:     make(chan error, 1),
	}
}

// tryLocked grants w if all its slots are free now. err is ErrNoCandidates when choices
// returned nothing (w is then never grantable as asked).
func (c *Controller) tryLocked(w *waiter) (ok bool, err error) {
	t := w.ticket
	if w.takeFixed {
		for _, l := range t.fixed {
			if !l.free() {
				// Still ask for the candidates: an empty list fails even when full.
				if w.choices != nil && len(w.choices()) == 0 {
					return false, ErrNoCandidates
				}
				return false, nil
			}
		}
	}
	choice, idx := (*Limit)(nil), -1
	if w.choices != nil {
		cands := w.choices()
		if len(cands) == 0 {
			return false, ErrNoCandidates
		}
		for i, l := range cands {
			if l != nil && l.free() {
				choice, idx = l, i
				break
			}
		}
		if choice == nil {
			return false, nil
		}
	}
	if w.takeFixed {
		for _, l := range t.fixed {
			l.inUse.Add(1)
		}
	}
	if choice != nil {
		choice.inUse.Add(1)
	}
	t.choice, t.choiceIdx = choice, idx
	return true, nil
}

// enqueueLocked adds w to the queue, or says why it cannot wait.
func (c *Controller) enqueueLocked(ctx context.Context, w *waiter, front bool) error {
	if err := ctx.Err(); err != nil {
		return ctxError(err)
	}
	if c.mu.waiters.Len() >= c.mu.maxQueue {
		return ErrQueueFull
	}
	if front {
		w.elem = c.mu.waiters.PushFront(w)
	} else {
		w.elem = c.mu.waiters.PushBack(w)
	}
	if !w.takeFixed {
		w.ticket.waiting = w
	}
	return nil
}

// dequeueLocked takes w out of the queue and hands it its outcome.
func (c *Controller) dequeueLocked(w *waiter, err error) {
	c.mu.waiters.Remove(w.elem)
	w.elem = nil
	if w.ticket.waiting == w {
		w.ticket.waiting = nil
	}
	w.ready <- err
}

// wait blocks until w is granted or failed by a scan, or ctx ends. It returns with w out of
// the queue and, on error, holding nothing it was waiting for.
func (c *Controller) wait(ctx context.Context, w *waiter) error {
	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if w.elem != nil {
		err := ctxError(ctx.Err())
		c.dequeueLocked(w, err)
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	// Something dequeued w between ctx ending and the lock: its outcome is in ready (sent
	// under the lock we just held). The caller is leaving, so a grant must be undone.
	if err := <-w.ready; err != nil {
		return err
	}
	if w.takeFixed {
		w.ticket.Release()
	} else { // Rechoose: give back only the new choice, the session keeps its fixed slots
		c.mu.Lock()
		if t := w.ticket; t.choice != nil {
			t.choice.inUse.Add(-1)
			t.choice, t.choiceIdx = nil, -1
			c.grantLocked()
		}
		c.mu.Unlock()
	}
	return ctxError(ctx.Err())
}

// grantLocked serves the queue: oldest first, every waiter whose slots are all free now is
// granted (taking them before the next waiter is looked at), and waiters whose choices
// became empty fail with ErrNoCandidates.
func (c *Controller) grantLocked() {
	for e := c.mu.waiters.Front(); e != nil; {
		next := e.Next()
		w := e.Value.(*waiter)
		if ok, err := c.tryLocked(w); ok || err != nil {
			c.dequeueLocked(w, err)
		}
		e = next
	}
}

func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrQueueTimeout, err)
	}
	return err
}
