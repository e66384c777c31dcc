package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/logtest"
)

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func okObs(role Role, lsn uint64) Observation {
	return Observation{OK: true, Role: role, LSN: lsn, Duration: time.Millisecond}
}

func failObs(msg string) Observation {
	return Observation{Err: errors.New(msg), LagSeconds: -1, Duration: time.Millisecond}
}

// fakeChecker returns scripted observations, one per call; after the script it parks in
// Check until ctx ends. It records overlap, gates and Close.
type fakeChecker struct {
	script []Observation
	gates  map[int]chan struct{} // call number (from 1) → Check waits for it first

	inflight, maxInflight atomic.Int32
	returned              atomic.Int32

	mu              sync.Mutex
	calls           int
	closes          int
	checkAfterClose bool
	timeouts        []time.Duration // each check's time left to its deadline when it began
}

func (f *fakeChecker) Check(ctx context.Context) Observation {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	defer f.returned.Add(1)
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	f.calls++
	i := f.calls
	if dl, ok := ctx.Deadline(); ok {
		f.timeouts = append(f.timeouts, time.Until(dl))
	}
	if f.closes > 0 {
		f.checkAfterClose = true
	}
	gate := f.gates[i]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return failed(ctx.Err(), 0)
		}
	}
	if i > len(f.script) {
		<-ctx.Done() // parked: the script is over
		return failed(ctx.Err(), 0)
	}
	return f.script[i-1]
}

func (f *fakeChecker) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closes++
	return nil
}

func (f *fakeChecker) closeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closes
}

func (f *fakeChecker) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// recorder is a Reporter that keeps every status and notices overlapping calls for one
// target.
type recorder struct {
	inflight sync.Map // target → *atomic.Int32
	overlap  atomic.Bool

	mu       sync.Mutex
	statuses map[string][]Status
	onReport func(target string, counts map[string]int) // called under mu
}

func (r *recorder) ReportStatus(target string, st Status) {
	v, _ := r.inflight.LoadOrStore(target, new(atomic.Int32))
	n := v.(*atomic.Int32)
	if n.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer n.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statuses == nil {
		r.statuses = map[string][]Status{}
	}
	r.statuses[target] = append(r.statuses[target], st)
	if r.onReport != nil {
		counts := map[string]int{}
		for k, v := range r.statuses {
			counts[k] = len(v)
		}
		r.onReport(target, counts)
	}
}

func (r *recorder) get(target string) []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.statuses[target])
}

// logBuf collects a text logger's output.
type logBuf = logtest.Buffer

func newTestLogger() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// delayLog is the monitor's wait seam: it records each wait and ends it at once.
type delayLog struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *delayLog) after(d time.Duration) <-chan time.Time {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
	c := make(chan time.Time, 1)
	c <- time.Time{}
	return c
}

func (r *delayLog) get() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.d)
}

// stepClock is a clock that advances by step at each reading.
type stepClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// runScript runs a monitor of one fake target through its whole script, waits until it
// has parked after the script and stops it.
func runScript(t *testing.T, o Options, f *fakeChecker) *Monitor {
	t.Helper()
	o.Timeout = time.Hour // the parked check must wait for Stop
	m := NewMonitor(o, []Target{{Name: "pg1", Checker: f}})
	m.Start()
	waitFor(t, "the script to run", func() bool { return f.callCount() > len(f.script) })
	m.Stop()
	return m
}

// TestMonitorIntervals checks the wait after each check: Interval while steady, the fast
// interval during a rise or fall streak and right after a role change.
func TestMonitorIntervals(t *testing.T) {
	const slow, fast = 100 * time.Millisecond, 10 * time.Millisecond
	steps := []struct {
		obs  Observation
		wait time.Duration
	}{
		{okObs(RolePrimary, 1), slow}, // first check: up, no streak
		{failObs("x"), fast},          // fall streak 1
		{failObs("x"), fast},          // 2
		{failObs("x"), slow},          // 3: down, steady again
		{failObs("x"), slow},
		{okObs(RolePrimary, 1), fast}, // rise streak 1
		{okObs(RolePrimary, 1), slow}, // up
		{okObs(RoleReplica, 1), fast}, // role changed
		{okObs(RoleReplica, 1), slow},
		{failObs("x"), fast},
		{okObs(RoleReplica, 1), slow}, // a success ends the fall streak
	}
	f := &fakeChecker{}
	var want []time.Duration
	for _, s := range steps {
		f.script = append(f.script, s.obs)
		want = append(want, s.wait)
	}
	d := &delayLog{}
	runScript(t, Options{Interval: slow, FastInterval: fast, Rise: 2, Fall: 3, Jitter: -1, after: d.after}, f)
	if got := d.get(); !slices.Equal(got, want) {
		t.Errorf("waits:\n got %v\nwant %v", got, want)
	}
}

func TestMonitorJitter(t *testing.T) {
	tests := []struct {
		jitter float64
		rand   float64
		want   time.Duration
	}{
		{0.2, 0.5, 90 * time.Millisecond},
		{0, 0.5, 95 * time.Millisecond}, // default 0.1
		{-1, 0.5, 100 * time.Millisecond},
		{3, 0.5, 50 * time.Millisecond}, // counts as 1
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.jitter), func(t *testing.T) {
			f := &fakeChecker{script: []Observation{okObs(RolePrimary, 1), okObs(RolePrimary, 1)}}
			d := &delayLog{}
			runScript(t, Options{Interval: 100 * time.Millisecond, Jitter: tt.jitter,
				Rand: func() float64 { return tt.rand }, after: d.after}, f)
			if got := d.get(); !slices.Equal(got, []time.Duration{tt.want, tt.want}) {
				t.Errorf("waits %v, want two of %v", got, tt.want)
			}
		})
	}
}

// TestMonitorStatus checks what is reported after each check: up/down with hysteresis,
// the role at once, LSN and lag kept through failures.
func TestMonitorStatus(t *testing.T) {
	replica := okObs(RoleReplica, 20)
	replica.LagSeconds = 1.5
	f := &fakeChecker{script: []Observation{
		{OK: true, Role: RolePrimary, LSN: 10, Duration: 7 * time.Millisecond},
		failObs("boom"),
		failObs("boom"),
		failObs("boom"),
		replica,
		replica,
	}}
	rec := &recorder{}
	clock := &stepClock{t: time.Unix(1000, 0), step: time.Second}
	runScript(t, Options{Rise: 2, Fall: 3, Reporter: rec, now: clock.now, after: (&delayLog{}).after}, f)
	at := func(s int64) time.Time { return time.Unix(s, 0) }
	ms := time.Millisecond
	want := []Status{
		{Up: true, Role: RolePrimary, LSN: 10, LagSeconds: 0, LastCheck: at(1000), CheckDuration: 7 * ms},
		{Up: true, Role: RolePrimary, LSN: 10, LagSeconds: 0, LastCheck: at(1001), LastErr: "boom", CheckDuration: ms},
		{Up: true, Role: RolePrimary, LSN: 10, LagSeconds: 0, LastCheck: at(1002), LastErr: "boom", CheckDuration: ms},
		{Up: false, Role: RolePrimary, LSN: 10, LagSeconds: 0, LastCheck: at(1003), LastErr: "boom", CheckDuration: ms},
		{Up: false, Role: RoleReplica, LSN: 20, LagSeconds: 1.5, LastCheck: at(1004), CheckDuration: ms},
		{Up: true, Role: RoleReplica, LSN: 20, LagSeconds: 1.5, LastCheck: at(1005), CheckDuration: ms},
	}
	got := rec.get("pg1")
	if len(got) != len(want) {
		t.Fatalf("%d reports, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("report %d:\n got %+v\nwant %+v", i+1, got[i], want[i])
		}
	}
}

// TestMonitorFirstCheckDown: a server whose first check fails starts down and needs Rise
// successes; before any success its role and lag are unknown.
func TestMonitorFirstCheckDown(t *testing.T) {
	f := &fakeChecker{script: []Observation{failObs("refused"), okObs(RolePrimary, 5), okObs(RolePrimary, 6)}}
	rec := &recorder{}
	runScript(t, Options{Rise: 2, Reporter: rec, after: (&delayLog{}).after}, f)
	got := rec.get("pg1")
	if len(got) != 3 {
		t.Fatalf("%d reports, want 3", len(got))
	}
	if s := got[0]; s.Up || s.Role != RoleUnknown || s.LagSeconds != -1 || s.LastErr != "refused" {
		t.Errorf("after a failed first check: %+v", s)
	}
	if s := got[1]; s.Up || s.Role != RolePrimary || s.LSN != 5 {
		t.Errorf("after one success: %+v, want down, primary, LSN 5", s)
	}
	if s := got[2]; !s.Up || s.LSN != 6 {
		t.Errorf("after two successes: %+v, want up, LSN 6", s)
	}
}

// TestMonitorLogsFailuresNotTransitions: failed checks are logged, the first of an outage and
// then at most once a minute; transitions are not (the reporter's side logs each state change
// once, whoever made it), and a down restarts the rate limit.
func TestMonitorLogsFailuresNotTransitions(t *testing.T) {
	var script []Observation
	add := func(n int, o Observation) {
		for range n {
			script = append(script, o)
		}
	}
	add(3, okObs(RolePrimary, 1))
	add(5, failObs("connection refused")) // down at the third
	add(4, okObs(RolePrimary, 1))         // up at the second
	add(3, okObs(RoleReplica, 1))         // role change at the first
	add(2, okObs(RoleReplica, 1))
	add(1, failObs("connection refused")) // a new outage's first failure is news again
	logger, logs := newTestLogger()
	f := &fakeChecker{script: script}
	runScript(t, Options{Rise: 2, Fall: 3, Logger: logger, after: (&delayLog{}).after}, f)

	for _, c := range []struct {
		msg  string
		want int
	}{
		{"msg=\"server up\"", 0},
		{"msg=\"server down\"", 0},
		{"msg=\"server role changed\"", 0},
		{"msg=\"health check failed\"", 2}, // the first failure of each outage
		{"connection refused", 2},
	} {
		if got := logs.Lines(c.msg); len(got) != c.want {
			t.Errorf("%d lines with %s, want %d; log:\n%s", len(got), c.msg, c.want, logs)
		}
	}
	if got := logs.Lines("failures_not_logged"); len(got) != 0 {
		t.Errorf("failures before the down were counted into a later line; log:\n%s", logs)
	}
}

// TestMonitorErrorLogRateLimit: a server that keeps failing is logged once a minute, with the
// number of failures not logged; its first failure (the down) is the state change line's.
func TestMonitorErrorLogRateLimit(t *testing.T) {
	f := &fakeChecker{}
	for range 13 {
		f.script = append(f.script, failObs("password authentication failed"))
	}
	logger, logs := newTestLogger()
	clock := &stepClock{t: time.Unix(0, 0), step: 10 * time.Second} // checks at 0s, 10s, ..., 120s
	runScript(t, Options{Logger: logger, now: clock.now, after: (&delayLog{}).after}, f)
	got := logs.Lines("password authentication failed")
	if len(got) != 2 {
		t.Fatalf("%d lines, want 2 (60s, 120s); log:\n%s", len(got), logs)
	}
	for _, line := range got {
		if !strings.Contains(line, "msg=\"health check failed\"") || !strings.Contains(line, "failures_not_logged=5") {
			t.Errorf("line %q, want a failure line counting 5 failures not logged", line)
		}
	}
}

// TestMonitorFirstCheckAtOnceAndCheckNow uses real waits of an hour: only the immediate
// first check and CheckNow can make checks happen.
func TestMonitorFirstCheckAtOnceAndCheckNow(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeChecker{
		script: []Observation{okObs(RolePrimary, 1), okObs(RolePrimary, 1), okObs(RolePrimary, 1), okObs(RolePrimary, 1)},
		gates:  map[int]chan struct{}{3: gate},
	}
	m := NewMonitor(Options{Interval: time.Hour, FastInterval: time.Hour, Timeout: time.Hour},
		[]Target{{Name: "pg1", Checker: f}})
	defer m.Stop()
	m.CheckNow("pg1") // before Start: makes the second check follow the first at once
	m.Start()
	waitFor(t, "first two checks", func() bool { return f.callCount() == 2 })
	m.CheckNow("nobody")
	m.CheckNow("pg1")
	waitFor(t, "third check to start", func() bool { return f.callCount() == 3 })
	// The third check is blocked on its gate: CheckNow must not block, and its wakes
	// coalesce into one check right after.
	for range 5 {
		m.CheckNow("pg1")
	}
	close(gate)
	waitFor(t, "fourth check", func() bool { return f.callCount() == 4 })
}

// TestMonitorStop: Stop cuts short the check in progress, waits for the loop, then closes
// the checker once; a stopped monitor does not start again.
func TestMonitorStop(t *testing.T) {
	f := &fakeChecker{} // parks in its first check
	rec := &recorder{}
	m := NewMonitor(Options{Timeout: time.Hour, Reporter: rec}, []Target{{Name: "pg1", Checker: f}})
	m.Start()
	waitFor(t, "the check to start", func() bool { return f.callCount() == 1 })
	m.Stop()
	if f.returned.Load() != 1 {
		t.Error("Stop returned before the check in progress did")
	}
	m.Stop()
	m.Start()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closes != 1 || f.checkAfterClose || f.calls != 1 {
		t.Errorf("closes %d, check after close %v, calls %d; want 1, false, 1", f.closes, f.checkAfterClose, f.calls)
	}
	if got := rec.get("pg1"); len(got) != 0 {
		t.Errorf("a check cut short by Stop was reported: %+v", got)
	}
}

func TestMonitorStopWithoutStart(t *testing.T) {
	f := &fakeChecker{}
	m := NewMonitor(Options{}, []Target{{Name: "pg1", Checker: f}})
	m.Stop()
	if f.closes != 1 || f.calls != 0 {
		t.Errorf("closes %d, calls %d; want 1, 0", f.closes, f.calls)
	}
}

// TestMonitorNeverOverlaps hammers a loop with CheckNow and zero waits: checks of one server
// and reports of one target never run at once.
func TestMonitorNeverOverlaps(t *testing.T) {
	var checkers []*overlapChecker
	var targets []Target
	for i := range 3 {
		c := &overlapChecker{}
		checkers = append(checkers, c)
		targets = append(targets, Target{Name: fmt.Sprint("pg", i), Checker: c})
	}
	rec := &recorder{}
	m := NewMonitor(Options{Interval: time.Microsecond, FastInterval: time.Microsecond, Reporter: rec}, targets)
	m.Start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				m.CheckNow("pg0")
			}
		}
	}()
	waitFor(t, "many checks", func() bool {
		for _, c := range checkers {
			if c.calls.Load() < 200 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	m.Stop()
	for i, c := range checkers {
		if c.maxInflight.Load() != 1 {
			t.Errorf("pg%d: %d checks at once", i, c.maxInflight.Load())
		}
	}
	if rec.overlap.Load() {
		t.Error("reports of one target overlapped")
	}
}

// overlapChecker succeeds at once and records how many of its checks ran at once.
type overlapChecker struct {
	calls, inflight, maxInflight atomic.Int32
}

func (c *overlapChecker) Check(context.Context) Observation {
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	c.calls.Add(1)
	for {
		m := c.maxInflight.Load()
		if n <= m || c.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(10 * time.Microsecond) // widen the window an overlap would need
	return okObs(RolePrimary, 1)
}

func (c *overlapChecker) Close() error { return nil }

// lateChecker ignores its deadline and answers OK after it.
type lateChecker struct{}

func (lateChecker) Check(ctx context.Context) Observation {
	<-ctx.Done()
	return okObs(RolePrimary, 1)
}

func (lateChecker) Close() error { return nil }

func TestMonitorLateSuccessIsFailure(t *testing.T) {
	rec := &recorder{}
	m := NewMonitor(Options{Timeout: 20 * time.Millisecond, Interval: time.Hour, Reporter: rec},
		[]Target{{Name: "pg1", Checker: lateChecker{}}})
	m.Start()
	waitFor(t, "a report", func() bool { return len(rec.get("pg1")) == 1 })
	m.Stop()
	st := rec.get("pg1")[0]
	if st.Up || st.Role != RoleUnknown || !strings.Contains(st.LastErr, "after the timeout") {
		t.Errorf("status %+v, want down with a timeout error", st)
	}
	if st.CheckDuration < 20*time.Millisecond {
		t.Errorf("CheckDuration %v, want at least the timeout", st.CheckDuration)
	}
}

func TestNewMonitorPanics(t *testing.T) {
	for name, targets := range map[string][]Target{
		"duplicate":  {{Name: "a", Checker: &fakeChecker{}}, {Name: "a", Checker: &fakeChecker{}}},
		"no checker": {{Name: "a"}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("NewMonitor did not panic")
				}
			}()
			NewMonitor(Options{}, targets)
		})
	}
}

// TestMonitorHurry: while hurried (no primary in the cluster), a steady server is checked at
// the fast interval instead of the interval; relaxed, at the interval again.
func TestMonitorHurry(t *testing.T) {
	for _, hurry := range []bool{false, true} {
		f := &fakeChecker{script: []Observation{okObs(RoleReplica, 1), okObs(RoleReplica, 1), okObs(RoleReplica, 1)}}
		d := &delayLog{}
		m := NewMonitor(Options{Interval: time.Hour, FastInterval: time.Millisecond, Rise: 1, Fall: 1, Jitter: -1, after: d.after},
			[]Target{{Name: "a", Checker: f}})
		if hurry {
			m.Hurry(time.Hour)
		}
		m.Start()
		waitFor(t, "checks", func() bool { return len(d.get()) >= 3 })
		m.Stop()
		want := time.Hour
		if hurry {
			want = time.Millisecond
		}
		for i, got := range d.get()[:3] {
			if got != want {
				t.Fatalf("hurry=%v: wait %d was %s, want %s", hurry, i, got, want)
			}
		}
	}
}

// TestMonitorTLSVerifyFailed: a check that failed on the server's certificate says so in its
// status; other failures do not.
func TestMonitorTLSVerifyFailed(t *testing.T) {
	verify := Observation{Err: fmt.Errorf("connecting: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), LagSeconds: -1}
	f := &fakeChecker{script: []Observation{verify, failObs("refused"), okObs(RolePrimary, 1)}}
	rec := &recorder{}
	runScript(t, Options{Reporter: rec, after: (&delayLog{}).after}, f)
	var got []bool
	for _, st := range rec.get("pg1") {
		got = append(got, st.TLSVerifyFailed)
	}
	if want := []bool{true, false, false}; !slices.Equal(got, want) {
		t.Fatalf("TLSVerifyFailed after each check %v, want %v", got, want)
	}
}
