package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	defaultInterval     = 2 * time.Second
	defaultFastInterval = 500 * time.Millisecond
	defaultTimeout      = time.Second
	defaultRise         = 2 // as HAProxy: two good checks before a server takes sessions again
	defaultFall         = 3 // as HAProxy: a lost probe or two must not end a server's sessions
	defaultJitter       = 0.1
)

// errorLogEvery bounds how often a server's failing checks are logged.
const errorLogEvery = time.Minute

// Options configures a Monitor. Zero values mean the defaults.
type Options struct {
	Interval     time.Duration // between checks of a steady server; default 2s
	FastInterval time.Duration // while a server is changing state (Tracker.Changing) or its role just changed; default 500ms
	// Timeout bounds each check; default 1s. The configuration keeps it below Interval; the
	// monitor works with any value, as it waits for each check before the next.
	Timeout    time.Duration
	Rise, Fall int // default 2 and 3
	// Jitter shortens each wait by a random fraction of up to Jitter (so a wait is never
	// longer than the interval), which spreads the loops of many servers; default 0.1,
	// negative disables it, more than 1 counts as 1.
	Jitter float64
	// Logger gets one line per transition (up, down, role change) and, per server, the first
	// failed check and then at most one line a minute with the number of failures not
	// logged. nil = no logging.
	Logger   *slog.Logger
	Reporter Reporter // nil = nobody is told
	// Rand returns a number in [0, 1) for the jitter; it is called from all loops at once.
	// nil = math/rand/v2.
	Rand func() float64

	// Test seams: the clock of LastCheck and the error-log limit, and the wait between
	// checks. nil = time.Now, time.After.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// withDefaults returns o with its zero values replaced.
func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.FastInterval <= 0 {
		o.FastInterval = defaultFastInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Rise <= 0 {
		o.Rise = defaultRise
	}
	if o.Fall <= 0 {
		o.Fall = defaultFall
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = defaultJitter
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter > 1:
		o.Jitter = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.after == nil {
		o.after = time.After
	}
	return o
}

// Monitor runs one check loop per target. Each loop checks its server, decides up/down
// and role, reports, then waits for the next check; checks of one server never overlap
// and each is bounded by Options.Timeout. Its methods are safe for concurrent use.
type Monitor struct {
	opts  Options
	loops []*loop

	ctx    context.Context // cancelled by Stop; the parent of every check's context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the running loops
	done   chan struct{}  // closed when Stop has closed the checkers

	// hurryUntil (unix nanoseconds): until then every loop checks at FastInterval. Set by
	// Hurry while the cluster has no primary, so a promotion is seen within FastInterval.
	hurryUntil atomic.Int64

	// mu guards the life cycle, so that a Start racing with Stop starts nothing after Stop
	// began waiting.
	mu struct {
		sync.Mutex
		started, stopping bool
	}
}

// loop is one target's check loop. Apart from wake, its fields are owned by the loop's
// goroutine (runLoop) while it runs.
type loop struct {
	name    string
	checker Checker
	log     *slog.Logger
	wake    chan struct{} // capacity 1: CheckNow never blocks and several wakes coalesce

	tracker      *Tracker // nil until the first check
	status       Status
	errLogged    time.Time // when a failure was last logged; zero: none since the server last came up
	errNotLogged int       // failed checks since then that were not logged
}

// NewMonitor returns a monitor of targets; Start starts it. Names must be unique and
// checkers non-nil (the configuration guarantees both); it panics otherwise.
func NewMonitor(o Options, targets []Target) *Monitor {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	m := &Monitor{opts: o, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	seen := make(map[string]bool, len(targets))
	for _, t := range targets {
		if t.Checker == nil {
			panic(fmt.Sprintf("health: target %q has no checker", t.Name))
		}
		if seen[t.Name] {
			panic(fmt.Sprintf("health: duplicate target name %q", t.Name))
		}
		seen[t.Name] = true
		m.loops = append(m.loops, &loop{
			name:    t.Name,
			checker: t.Checker,
			log:     o.Logger.With("server", t.Name),
			wake:    make(chan struct{}, 1),
			status:  Status{LagSeconds: -1},
		})
	}
	return m
}

// Start starts one goroutine per target; each runs its first check at once. It does
// nothing after the first call or after Stop.
func (m *Monitor) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.started || m.mu.stopping {
		return
	}
	m.mu.started = true
	for _, l := range m.loops {
		m.wg.Add(1)
		go m.runLoop(l)
	}
}

// Stop stops the loops (cutting short checks in progress), waits for them, then closes
// the checkers. Later calls wait for the first to finish.
func (m *Monitor) Stop() {
	m.mu.Lock()
	first := !m.mu.stopping
	m.mu.stopping = true
	m.mu.Unlock()
	if !first {
		<-m.done
		return
	}
	m.cancel()
	m.wg.Wait()
	for _, l := range m.loops {
		if err := l.checker.Close(); err != nil {
			l.log.Warn("closing health checker", "error", err)
		}
	}
	close(m.done)
}

// CheckNow makes target's loop check at once, or right after the check in progress, instead
// of waiting for its interval. It never blocks; an unknown target is ignored.
func (m *Monitor) CheckNow(target string) {
	for _, l := range m.loops {
		if l.name == target {
			select {
			case l.wake <- struct{}{}:
			default: // a wake is already pending
			}
		}
	}
}

// Hurry makes every loop check at FastInterval for the next d (renewed by each call), and
// checks every target at once when the monitor was not hurrying already. The owner calls it
// while something it routes on is missing, e.g. the cluster has no primary.
func (m *Monitor) Hurry(d time.Duration) {
	now := m.opts.now()
	prev := m.hurryUntil.Swap(now.Add(d).UnixNano())
	if prev < now.UnixNano() {
		for _, l := range m.loops {
			m.CheckNow(l.name)
		}
	}
}

func (m *Monitor) hurrying() bool {
	until := m.hurryUntil.Load()
	return until != 0 && m.opts.now().UnixNano() < until
}

// Relax ends a Hurry early.
func (m *Monitor) Relax() { m.hurryUntil.Store(0) }

// runLoop checks one target until the monitor stops: check, decide, report, wait. It is
// the only goroutine that uses l's checker while it runs.
func (m *Monitor) runLoop(l *loop) {
	defer m.wg.Done()
	for {
		obs := m.checkOnce(l)
		if m.ctx.Err() != nil {
			return // stopping: a check cut short says nothing about the server
		}
		fast := m.decide(l, obs)
		if m.opts.Reporter != nil {
			m.opts.Reporter.ReportStatus(l.name, l.status)
		}
		interval := m.opts.Interval
		if fast || m.hurrying() {
			interval = m.opts.FastInterval
		}
		select {
		case <-m.ctx.Done():
			return
		case <-l.wake:
		case <-m.opts.after(m.jittered(interval)):
		}
	}
}

// checkOnce runs one check bounded by the timeout. A check that returns success after its
// deadline has timed out all the same.
func (m *Monitor) checkOnce(l *loop) Observation {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	start := time.Now()
	obs := l.checker.Check(ctx)
	took := time.Since(start)
	if obs.Duration <= 0 {
		obs.Duration = took
	}
	if obs.OK && ctx.Err() != nil {
		obs = failed(fmt.Errorf("check answered after the timeout of %v: %w", m.opts.Timeout, ctx.Err()), took)
	}
	if !obs.OK && obs.Err == nil {
		obs.Err = errors.New("check failed")
	}
	return obs
}

// decide applies one observation to l's state, logs what changed and reports whether the
// next check should come at the fast interval.
func (m *Monitor) decide(l *loop, obs Observation) (fast bool) {
	now := m.opts.now()
	st := &l.status
	st.LastCheck = now
	st.CheckDuration = obs.Duration
	st.LastErr = ""
	if !obs.OK {
		st.LastErr = obs.Err.Error()
	}

	first := l.tracker == nil
	var upChanged bool
	if first {
		// The first check decides the initial state: there is no earlier state to smooth.
		l.tracker = NewTracker(m.opts.Rise, m.opts.Fall, obs.OK)
		upChanged = true
	} else {
		_, upChanged = l.tracker.Observe(obs.OK)
	}
	st.Up = l.tracker.Up()

	// A successful check's role applies at once (see the package doc); its LSN and lag
	// replace the last ones.
	prevRole := st.Role
	if obs.OK {
		st.Role, st.LSN, st.LagSeconds = obs.Role, obs.LSN, obs.LagSeconds
	}
	roleChanged := !first && st.Role != prevRole

	switch {
	case upChanged && st.Up:
		l.log.Info("server up", "role", st.Role.String())
		l.errLogged, l.errNotLogged = time.Time{}, 0 // the next outage's first error is news
	case upChanged:
		m.logFailure(l, obs, now, "server down")
	case !obs.OK:
		if l.errLogged.IsZero() || now.Sub(l.errLogged) >= errorLogEvery {
			m.logFailure(l, obs, now, "health check failed")
		} else {
			l.errNotLogged++
		}
	}
	if roleChanged && !(upChanged && st.Up) { // an up line already says the role
		l.log.Warn("server role changed", "from", prevRole.String(), "to", st.Role.String(), "up", st.Up)
	}
	return l.tracker.Changing() || roleChanged
}

// logFailure logs a failed check (with the number of failures not logged since the last
// line) and restarts the rate limit.
func (m *Monitor) logFailure(l *loop, obs Observation, now time.Time, msg string) {
	attrs := []any{"error", obs.Err}
	if l.errNotLogged > 0 {
		attrs = append(attrs, "failures_not_logged", l.errNotLogged)
	}
	l.log.Warn(msg, attrs...)
	l.errLogged, l.errNotLogged = now, 0
}

// jittered shortens d by a random fraction of up to Jitter.
func (m *Monitor) jittered(d time.Duration) time.Duration {
	if m.opts.Jitter == 0 {
		return d
	}
	return d - time.Duration(float64(d)*m.opts.Jitter*m.opts.Rand())
}
