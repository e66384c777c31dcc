package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
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

// Options configures a Monitor. Zero values mean the defaults. SetOptions changes Interval,
// FastInterval, Timeout, Rise, Fall and Jitter of a monitor in place; the other fields are
// fixed by NewMonitor.
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
	// Logger gets, per server, the first failed check and then at most one line a minute
	// with the number of failures not logged. Transitions (up, down, role) are not logged
	// here: the Reporter's receiver sees every change of a server's state, whoever made it,
	// and logs each once (the error behind a down is in Status.LastErr). nil = no logging.
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

// tuning is the part of Options that SetOptions replaces. A tuning is never modified once
// published; loops load the current one at each check and each wait.
type tuning struct {
	interval, fastInterval, timeout time.Duration
	rise, fall                      int
	jitter                          float64 // 0..1
	// changed is closed when SetOptions publishes the next tuning, so that waiting loops
	// re-evaluate their wait at once instead of at the end of an interval that may be gone.
	changed chan struct{}
}

func newTuning(o Options) *tuning {
	return &tuning{
		interval: o.Interval, fastInterval: o.FastInterval, timeout: o.Timeout,
		rise: o.Rise, fall: o.Fall, jitter: o.Jitter,
		changed: make(chan struct{}),
	}
}

// Monitor runs one check loop per target. Each loop checks its server, decides up/down
// and role, reports, then waits for the next check; checks of one server never overlap
// and each is bounded by Options.Timeout. Targets can be added and removed, their checkers
// replaced and the timing changed while it runs (a configuration reload) without touching
// the state of the other targets. Its methods are safe for concurrent use.
type Monitor struct {
	// Fixed by NewMonitor (SetOptions ignores these fields: each loop's logger is derived
	// from Logger when it is added, and a Reporter swapped mid-report would split one
	// target's reports between two receivers).
	log      *slog.Logger
	reporter Reporter
	rand     func() float64
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time

	tuning atomic.Pointer[tuning] // replaced whole by SetOptions

	ctx    context.Context // cancelled by Stop; the parent of every loop's context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the running loops, removed or not
	done   chan struct{}  // closed when Stop has closed the checkers

	// hurryUntil (unix nanoseconds): until then every loop checks at FastInterval. Set by
	// Hurry while the cluster has no primary, so a promotion is seen within FastInterval.
	hurryUntil atomic.Int64

	// mu guards the life cycle, so that a Start or AddTarget racing with Stop starts nothing
	// after Stop began waiting; the set of loops; and each loop's pending checker, so that a
	// SetChecker racing with RemoveTarget or Stop cannot hand a checker to a loop that is gone.
	// SetOptions holds it too, so that each tuning's changed channel is closed once.
	mu struct {
		sync.Mutex
		started, stopping bool
		loops             map[string]*loop // every loop in it runs iff started && !stopping
	}
}

// loop is one target's check loop. Apart from wake, ctx, cancel, done and pending, its
// fields are owned by the loop's goroutine (runLoop) while it runs, and otherwise by
// whoever holds the loop: the monitor before Start, RemoveTarget or Stop once it returned.
type loop struct {
	name    string
	checker Checker
	log     *slog.Logger
	wake    chan struct{} // capacity 1: CheckNow never blocks and several wakes coalesce

	ctx    context.Context    // the parent of its checks' contexts
	cancel context.CancelFunc // called by RemoveTarget (and, through the monitor's, by Stop)
	done   chan struct{}      // closed when runLoop returns

	// pending (guarded by Monitor.mu) is the checker SetChecker handed over; the loop takes
	// it before its next check and closes the checker it replaces.
	pending Checker

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
	m := &Monitor{
		log: o.Logger, reporter: o.Reporter, rand: o.Rand, now: o.now, after: o.after,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	m.tuning.Store(newTuning(o))
	m.mu.loops = make(map[string]*loop, len(targets))
	for _, t := range targets {
		if err := m.addLocked(t); err != nil { // no other goroutine has m yet
			panic(err.Error())
		}
	}
	return m
}

// addLocked adds a loop for t without starting it; m.mu is held.
func (m *Monitor) addLocked(t Target) error {
	if t.Checker == nil {
		return fmt.Errorf("health: target %q has no checker", t.Name)
	}
	if _, dup := m.mu.loops[t.Name]; dup {
		return fmt.Errorf("health: duplicate target name %q", t.Name)
	}
	ctx, cancel := context.WithCancel(m.ctx)
	m.mu.loops[t.Name] = &loop{
		name:    t.Name,
		checker: t.Checker,
		log:     m.log.With("server", t.Name),
		wake:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		status:  Status{LagSeconds: -1},
	}
	return nil
}

// start starts l's goroutine; m.mu is held, with started set and stopping not.
func (m *Monitor) start(l *loop) {
	m.wg.Add(1)
	go m.runLoop(l)
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
	for _, l := range m.mu.loops {
		m.start(l)
	}
}

// Stop stops the loops (cutting short checks in progress), waits for them, then closes
// the checkers. Later calls wait for the first to finish.
func (m *Monitor) Stop() {
	m.mu.Lock()
	first := !m.mu.stopping
	m.mu.stopping = true
	// Stop owns the loops still in the set; a RemoveTarget that took one out before closes
	// its checker itself.
	loops := m.mu.loops
	m.mu.loops = nil
	m.mu.Unlock()
	if !first {
		<-m.done
		return
	}
	m.cancel()
	m.wg.Wait()
	for _, l := range loops {
		m.closeCheckers(l)
	}
	close(m.done)
}

// AddTarget adds a target; in a running monitor its loop starts at once and checks at
// once, as a target of Start does. It fails, without taking t.Checker, if the name is taken,
// the checker is nil or Stop was called.
func (m *Monitor) AddTarget(t Target) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.stopping {
		return fmt.Errorf("health: adding target %q: monitor stopped", t.Name)
	}
	if err := m.addLocked(t); err != nil {
		return err
	}
	if m.mu.started {
		m.start(m.mu.loops[t.Name])
	}
	return nil
}

// RemoveTarget stops the target's loop, cutting short a check in progress (which is not
// reported), waits for it and closes its checkers. Once it returns the Reporter hears
// nothing more of the target, so the caller may forget the server. After Stop began it waits
// for Stop to finish. An unknown name is ignored. It must not be called from the Reporter.
func (m *Monitor) RemoveTarget(name string) {
	m.mu.Lock()
	if m.mu.stopping {
		m.mu.Unlock()
		<-m.done // Stop owns the loops and reports nothing once done
		return
	}
	l, ok := m.mu.loops[name]
	delete(m.mu.loops, name)
	started := m.mu.started
	m.mu.Unlock()
	if !ok {
		return
	}
	l.cancel()
	if started {
		<-l.done
	}
	m.closeCheckers(l)
}

// SetChecker replaces the checker of a target, keeping its status and rise/fall state
// (e.g. its monitoring password or check kind changed). The loop takes c before its next
// check, which comes when it is due (call CheckNow to have it at once), and closes the
// checker it replaces as soon as that is not checking (a check in progress finishes with it). It fails, without
// taking c, if the target is unknown, c is nil or Stop was called.
func (m *Monitor) SetChecker(name string, c Checker) error {
	if c == nil {
		return fmt.Errorf("health: target %q: no checker", name)
	}
	m.mu.Lock()
	if m.mu.stopping {
		m.mu.Unlock()
		return fmt.Errorf("health: setting the checker of %q: monitor stopped", name)
	}
	l, ok := m.mu.loops[name]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("health: setting the checker of %q: no such target", name)
	}
	unused := l.pending
	l.pending = c
	m.mu.Unlock()
	if unused != nil { // handed over by an earlier SetChecker and never checked with
		closeChecker(l, unused)
	}
	return nil
}

// SetOptions changes Interval, FastInterval, Timeout, Rise, Fall and Jitter (zero values
// meaning the defaults, as in NewMonitor); Logger, Reporter and Rand are ignored. A check in
// progress keeps its timeout; the next check uses the new one, and its result is counted
// against the new Rise and Fall by each target's existing tracker (a server stays up or down,
// see Tracker.SetRiseFall). A loop waiting for its next check re-evaluates that wait at once
// against the new intervals, measured from when the wait began: it checks at once if the new
// wait is already over and otherwise waits only for the rest; no extra check is run.
func (m *Monitor) SetOptions(o Options) {
	next := newTuning(o.withDefaults())
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.tuning.Swap(next)
	close(prev.changed)
}

// Targets returns the names of the targets, sorted.
func (m *Monitor) Targets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.mu.loops))
	for name := range m.mu.loops {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// CheckNow makes target's loop check at once, or right after the check in progress, instead
// of waiting for its interval. It never blocks; an unknown target is ignored.
func (m *Monitor) CheckNow(target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.mu.loops[target]; ok {
		l.wakeUp()
	}
}

func (l *loop) wakeUp() {
	select {
	case l.wake <- struct{}{}:
	default: // a wake is already pending
	}
}

// Hurry makes every loop check at FastInterval for the next d (renewed by each call), and
// checks every target at once when the monitor was not hurrying already. The owner calls it
// while something it routes on is missing, e.g. the cluster has no primary.
func (m *Monitor) Hurry(d time.Duration) {
	now := m.now()
	prev := m.hurryUntil.Swap(now.Add(d).UnixNano())
	if prev < now.UnixNano() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, l := range m.mu.loops {
			l.wakeUp()
		}
	}
}

func (m *Monitor) hurrying() bool {
	until := m.hurryUntil.Load()
	return until != 0 && m.now().UnixNano() < until
}

// Relax ends a Hurry early.
func (m *Monitor) Relax() { m.hurryUntil.Store(0) }

// closeCheckers closes l's checker and a pending one; its loop has returned or never ran.
func (m *Monitor) closeCheckers(l *loop) {
	l.cancel()
	m.mu.Lock()
	pending := l.pending
	l.pending = nil
	m.mu.Unlock()
	closeChecker(l, l.checker)
	if pending != nil {
		closeChecker(l, pending)
	}
}

func closeChecker(l *loop, c Checker) {
	if err := c.Close(); err != nil {
		l.log.Warn("closing health checker", "error", err)
	}
}

// runLoop checks one target until the monitor stops or the target is removed: check,
// decide, report, wait. It is the only goroutine that uses l's checker while it runs.
func (m *Monitor) runLoop(l *loop) {
	defer m.wg.Done()
	defer close(l.done)
	for {
		m.takeChecker(l)
		tu := m.tuning.Load() // one tuning for the check and its decision
		obs := m.checkOnce(l, tu)
		if l.ctx.Err() != nil {
			return // stopping or removed: a check cut short says nothing about the server
		}
		fast := m.decide(l, tu, obs)
		if m.reporter != nil {
			m.reporter.ReportStatus(l.name, l.status)
		}
		m.takeChecker(l) // a checker replaced during the check is closed now, not an interval later
		if !m.wait(l, fast) {
			return
		}
	}
}

// takeChecker switches l to the checker SetChecker handed over, if any, and closes the one
// it replaces: the loop is between checks, so nothing else uses it. The loop calls it after
// each check and before the next, so a replaced checker is closed right after its last check
// and a new one is used from the next check on.
func (m *Monitor) takeChecker(l *loop) {
	m.mu.Lock()
	next := l.pending
	l.pending = nil
	m.mu.Unlock()
	if next != nil {
		closeChecker(l, l.checker)
		l.checker = next
	}
}

// wait waits until l's next check is due, or it is woken; it returns false when the loop
// must end. The wait is the interval of the current tuning shortened by jitter; when
// SetOptions changes the tuning meanwhile, it is worked out again with the same random
// fraction and counted from the same start.
func (m *Monitor) wait(l *loop, fast bool) bool {
	start := time.Now() // monotonic; the now seam is LastCheck's clock and is not read here
	frac := -1.0        // the jitter's random fraction, drawn once when jitter is first on
	for again := false; ; again = true {
		tu := m.tuning.Load()
		d := tu.interval
		if fast || m.hurrying() {
			d = tu.fastInterval
		}
		if tu.jitter != 0 {
			if frac < 0 {
				frac = m.rand()
			}
			d -= time.Duration(float64(d) * tu.jitter * frac)
		}
		if again {
			if d -= time.Since(start); d <= 0 {
				return true // already due under the new tuning
			}
		}
		select {
		case <-l.ctx.Done():
			return false
		case <-l.wake:
			return true
		case <-m.after(d):
			return true
		case <-tu.changed:
		}
	}
}

// checkOnce runs one check bounded by the timeout. A check that returns success after its
// deadline has timed out all the same.
func (m *Monitor) checkOnce(l *loop, tu *tuning) Observation {
	ctx, cancel := context.WithTimeout(l.ctx, tu.timeout)
	defer cancel()
	start := time.Now()
	obs := l.checker.Check(ctx)
	took := time.Since(start)
	if obs.Duration <= 0 {
		obs.Duration = took
	}
	if obs.OK && ctx.Err() != nil {
		obs = failed(fmt.Errorf("check answered after the timeout of %v: %w", tu.timeout, ctx.Err()), took)
	}
	if !obs.OK && obs.Err == nil {
		obs.Err = errors.New("check failed")
	}
	return obs
}

// decide applies one observation to l's state, logs what changed and reports whether the
// next check should come at the fast interval.
func (m *Monitor) decide(l *loop, tu *tuning, obs Observation) (fast bool) {
	now := m.now()
	st := &l.status
	st.LastCheck = now
	st.CheckDuration = obs.Duration
	st.LastErr, st.TLSVerifyFailed = "", false
	if !obs.OK {
		st.LastErr = obs.Err.Error()
		st.TLSVerifyFailed = isTLSVerifyError(obs.Err)
	}

	first := l.tracker == nil
	var upChanged bool
	if first {
		// The first check decides the initial state: there is no earlier state to smooth.
		l.tracker = NewTracker(tu.rise, tu.fall, obs.OK)
		upChanged = true
	} else {
		l.tracker.SetRiseFall(tu.rise, tu.fall) // a reload keeps the state, see SetOptions
		_, upChanged = l.tracker.Observe(obs.OK)
	}
	st.Up = l.tracker.Up()

	// A successful check's role applies at once (see the package doc); its LSN and lag
	// replace the last ones.
	prevRole := st.Role
	if obs.OK {
		st.Role, st.LSN, st.LagSeconds = obs.Role, obs.LSN, obs.LagSeconds
		st.NoLoadBalance, st.SyncStandby = obs.NoLoadBalance, obs.SyncStandby
	}
	roleChanged := !first && st.Role != prevRole

	switch {
	case upChanged && st.Up:
		l.errLogged, l.errNotLogged = time.Time{}, 0 // the next outage's first error is news
	case upChanged:
		// The state change line (the Reporter's side) says why it went down: the rate
		// limit starts from there.
		l.errLogged, l.errNotLogged = now, 0
	case !obs.OK:
		if l.errLogged.IsZero() || now.Sub(l.errLogged) >= errorLogEvery {
			m.logFailure(l, obs, now, "health check failed")
		} else {
			l.errNotLogged++
		}
	}
	return l.tracker.Changing() || roleChanged
}

// isTLSVerifyError reports whether a check failed because the server's TLS certificate did
// not verify (unknown authority, wrong host name, expired): a configuration problem that
// retrying will not fix. pgconn returns crypto/tls's and crypto/x509's error types.
func isTLSVerifyError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn)
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
