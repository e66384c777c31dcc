package health

import (
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// manualAfter is a wait seam driven by the test: each wait the monitor starts is sent on
// reqs and ends when the test sends on its fire channel.
type manualAfter struct{ reqs chan waitReq }

type waitReq struct {
	d    time.Duration
	fire chan time.Time
}

func newManualAfter() *manualAfter { return &manualAfter{reqs: make(chan waitReq, 100)} }

func (a *manualAfter) after(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	a.reqs <- waitReq{d, c}
	return c
}

func (a *manualAfter) next(t *testing.T) waitReq {
	t.Helper()
	select {
	case r := <-a.reqs:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the monitor to wait")
		return waitReq{}
	}
}

// gateReporter blocks the first report of a target until release is closed and calls
// inReport when released, still inside that report.
type gateReporter struct {
	target   string
	entered  chan struct{} // closed when that report begins
	release  chan struct{}
	inReport func()
	finished chan struct{} // closed when that report ends

	once sync.Once
}

func (g *gateReporter) ReportStatus(target string, _ Status) {
	if target != g.target {
		return
	}
	g.once.Do(func() {
		close(g.entered)
		<-g.release
		g.inReport()
		close(g.finished)
	})
}

// TestMonitorRemoveTargetMidCheck: RemoveTarget cuts short the target's check in progress
// (the timeout is an hour), closes its checker once, reports nothing of it and leaves the
// other targets running.
func TestMonitorRemoveTargetMidCheck(t *testing.T) {
	f1 := &fakeChecker{} // parks in its first check
	f2 := &fakeChecker{script: []Observation{okObs(RolePrimary, 1), okObs(RolePrimary, 1)}}
	rec := &recorder{}
	m := NewMonitor(Options{Interval: time.Hour, FastInterval: time.Hour, Timeout: time.Hour, Reporter: rec},
		[]Target{{Name: "pg1", Checker: f1}, {Name: "pg2", Checker: f2}})
	m.Start()
	defer m.Stop()
	waitFor(t, "both checks", func() bool { return f1.callCount() == 1 && len(rec.get("pg2")) == 1 })

	m.RemoveTarget("pg1")
	if f1.returned.Load() != 1 {
		t.Error("RemoveTarget returned before the check in progress did")
	}
	if n := f1.closeCount(); n != 1 {
		t.Errorf("removed checker closed %d times, want 1", n)
	}
	if got := rec.get("pg1"); len(got) != 0 {
		t.Errorf("a check cut short by RemoveTarget was reported: %+v", got)
	}
	if got := m.Targets(); !slices.Equal(got, []string{"pg2"}) {
		t.Errorf("Targets() = %v, want [pg2]", got)
	}
	m.CheckNow("pg1")     // ignored
	m.RemoveTarget("pg1") // no-op
	m.RemoveTarget("nobody")
	if n := f1.closeCount(); n != 1 {
		t.Errorf("removed checker closed %d times after a second RemoveTarget, want 1", n)
	}

	m.CheckNow("pg2")
	waitFor(t, "pg2 to go on", func() bool { return len(rec.get("pg2")) == 2 })
	if f2.closeCount() != 0 {
		t.Error("the other target's checker was closed")
	}
	m.Stop()
	if f1.closeCount() != 1 || f1.callCount() != 1 || f2.closeCount() != 1 {
		t.Errorf("after Stop: pg1 closes %d calls %d, pg2 closes %d; want 1 1 1",
			f1.closeCount(), f1.callCount(), f2.closeCount())
	}
}

// TestMonitorRemoveTargetWaitsForReport: a report in progress when RemoveTarget is called
// finishes before RemoveTarget returns, and before the checker is closed.
func TestMonitorRemoveTargetWaitsForReport(t *testing.T) {
	f := &fakeChecker{script: []Observation{okObs(RolePrimary, 1)}}
	removed := make(chan struct{})
	var lateReport, closedInReport bool // written in the report, read after RemoveTarget
	g := &gateReporter{target: "pg1", entered: make(chan struct{}), release: make(chan struct{}), finished: make(chan struct{}),
		inReport: func() {
			select {
			case <-removed:
				lateReport = true
			default:
			}
			closedInReport = f.closeCount() != 0
		}}
	m := NewMonitor(Options{Interval: time.Hour, Timeout: time.Hour, Reporter: g}, []Target{{Name: "pg1", Checker: f}})
	m.Start()
	defer m.Stop()
	<-g.entered
	go func() {
		m.RemoveTarget("pg1")
		close(removed)
	}()
	// RemoveTarget takes the target out of the set before it waits for the loop.
	waitFor(t, "RemoveTarget to begin", func() bool { return len(m.Targets()) == 0 })
	close(g.release)
	<-removed
	<-g.finished
	if lateReport {
		t.Error("RemoveTarget returned while the target's report was in progress")
	}
	if closedInReport {
		t.Error("the checker was closed while its loop was still reporting")
	}
	if f.closeCount() != 1 {
		t.Errorf("checker closed %d times, want 1", f.closeCount())
	}
}

// TestMonitorRemoveTargetBeforeStart: a target removed before Start is closed and never
// checked.
func TestMonitorRemoveTargetBeforeStart(t *testing.T) {
	f1, f2 := &fakeChecker{}, &fakeChecker{}
	m := NewMonitor(Options{Timeout: time.Hour}, []Target{{Name: "pg1", Checker: f1}, {Name: "pg2", Checker: f2}})
	m.RemoveTarget("pg1")
	if f1.closeCount() != 1 {
		t.Errorf("checker closed %d times, want 1", f1.closeCount())
	}
	m.Start()
	waitFor(t, "pg2's check", func() bool { return f2.callCount() == 1 })
	m.Stop()
	if f1.callCount() != 0 || f1.closeCount() != 1 {
		t.Errorf("removed target: calls %d closes %d, want 0 1", f1.callCount(), f1.closeCount())
	}
}

// TestMonitorAddTarget: a target added to a running monitor is checked at once (the
// interval is an hour), answers CheckNow and Hurry; duplicates, nil checkers and additions
// after Stop fail without taking the checker.
func TestMonitorAddTarget(t *testing.T) {
	ok := okObs(RolePrimary, 1)
	f1 := &fakeChecker{script: []Observation{ok, ok, ok}}
	f2 := &fakeChecker{script: []Observation{ok, ok, ok}}
	f3 := &fakeChecker{script: []Observation{ok, ok, ok}}
	rec := &recorder{}
	m := NewMonitor(Options{Interval: time.Hour, FastInterval: time.Hour, Timeout: time.Hour, Reporter: rec},
		[]Target{{Name: "pg1", Checker: f1}})
	defer m.Stop()
	if err := m.AddTarget(Target{Name: "pg2", Checker: f2}); err != nil { // before Start
		t.Fatal(err)
	}
	m.Start()
	waitFor(t, "pg1 and pg2 checked at Start", func() bool { return len(rec.get("pg1")) == 1 && len(rec.get("pg2")) == 1 })

	if err := m.AddTarget(Target{Name: "pg3", Checker: f3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pg3 checked at once", func() bool { return len(rec.get("pg3")) == 1 })
	if st := rec.get("pg3")[0]; !st.Up || st.Role != RolePrimary {
		t.Errorf("pg3 status %+v, want up primary", st)
	}
	m.CheckNow("pg3")
	waitFor(t, "pg3 checked on CheckNow", func() bool { return len(rec.get("pg3")) == 2 })
	m.Hurry(time.Hour)
	waitFor(t, "pg3 checked on Hurry", func() bool { return len(rec.get("pg3")) == 3 })

	dup := &fakeChecker{}
	if err := m.AddTarget(Target{Name: "pg3", Checker: dup}); err == nil {
		t.Error("AddTarget of a duplicate name succeeded")
	}
	if err := m.AddTarget(Target{Name: "pg4"}); err == nil {
		t.Error("AddTarget without a checker succeeded")
	}
	if got := m.Targets(); !slices.Equal(got, []string{"pg1", "pg2", "pg3"}) {
		t.Errorf("Targets() = %v, want [pg1 pg2 pg3]", got)
	}
	m.Stop()
	late := &fakeChecker{}
	if err := m.AddTarget(Target{Name: "pg5", Checker: late}); err == nil {
		t.Error("AddTarget after Stop succeeded")
	}
	for name, f := range map[string]*fakeChecker{"duplicate": dup, "after Stop": late} {
		if f.callCount() != 0 || f.closeCount() != 0 {
			t.Errorf("%s: refused checker used: calls %d closes %d", name, f.callCount(), f.closeCount())
		}
	}
	for i, f := range []*fakeChecker{f1, f2, f3} {
		if f.closeCount() != 1 {
			t.Errorf("pg%d closed %d times, want 1", i+1, f.closeCount())
		}
	}
}

// TestMonitorSetOptionsShortensWait: a loop waiting an hour re-evaluates its wait when the
// interval becomes a minute, waiting only for the rest of the minute since the wait began,
// without an extra check; the next check uses the new timeout and the wait after it the new
// interval. A wait already over under a new interval ends with a check at once.
func TestMonitorSetOptionsShortensWait(t *testing.T) {
	ok := okObs(RolePrimary, 1)
	f := &fakeChecker{script: []Observation{ok, ok, ok}}
	a := newManualAfter()
	m := NewMonitor(Options{Interval: time.Hour, Timeout: time.Hour, Jitter: -1, after: a.after},
		[]Target{{Name: "pg1", Checker: f}})
	m.Start()
	defer m.Stop()
	if r := a.next(t); r.d != time.Hour {
		t.Fatalf("first wait %v, want 1h", r.d)
	}

	m.SetOptions(Options{Interval: time.Minute, Timeout: time.Minute, Jitter: -1})
	r := a.next(t)
	if r.d <= 0 || r.d >= time.Minute { // some nanoseconds of the wait have passed
		t.Errorf("wait after SetOptions %v, want the rest of a minute", r.d)
	}
	if n := f.callCount(); n != 1 {
		t.Errorf("%d checks after SetOptions, want 1 (the wait was not over)", n)
	}
	r.fire <- time.Time{}
	if r := a.next(t); r.d != time.Minute {
		t.Errorf("wait after the next check %v, want 1m", r.d)
	}
	f.mu.Lock()
	timeouts := slices.Clone(f.timeouts)
	f.mu.Unlock()
	if len(timeouts) != 2 || timeouts[0] <= time.Minute || timeouts[1] > time.Minute {
		t.Errorf("time to each check's deadline %v, want over a minute and then at most one", timeouts)
	}

	m.SetOptions(Options{Interval: time.Nanosecond, Timeout: time.Minute, Jitter: -1})
	waitFor(t, "a check at once", func() bool { return f.callCount() == 3 })
	if r := a.next(t); r.d != time.Nanosecond {
		t.Errorf("wait after the check %v, want 1ns (no wait for the rest of the old one)", r.d)
	}
}

// TestMonitorSetOptionsFallKeepsUp: raising Fall while a server is up keeps it up (no new
// first check, no transition) and counts failures against the new Fall.
func TestMonitorSetOptionsFallKeepsUp(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeChecker{gates: map[int]chan struct{}{2: gate}, script: []Observation{okObs(RolePrimary, 1)}}
	for range 5 {
		f.script = append(f.script, failObs("refused"))
	}
	rec := &recorder{}
	logger, logs := newTestLogger()
	m := NewMonitor(Options{Timeout: time.Hour, Rise: 2, Fall: 3, Jitter: -1, Reporter: rec, Logger: logger,
		after: (&delayLog{}).after}, []Target{{Name: "pg1", Checker: f}})
	m.Start()
	defer m.Stop()
	waitFor(t, "the second check", func() bool { return f.callCount() == 2 })
	m.SetOptions(Options{Timeout: time.Hour, Rise: 2, Fall: 5, Jitter: -1})
	close(gate)
	waitFor(t, "the script to run", func() bool { return f.callCount() > len(f.script) })
	m.Stop()

	var ups []bool
	for _, st := range rec.get("pg1") {
		ups = append(ups, st.Up)
	}
	if want := []bool{true, true, true, true, true, false}; !slices.Equal(ups, want) {
		t.Errorf("up after each check %v, want %v (down at the fifth failure)", ups, want)
	}
	if n := len(logs.Lines(`msg="health check failed"`)); n != 1 {
		t.Errorf("%d failure lines, want 1 (the first; the down resets the limit); log:\n%s", n, logs)
	}
}

// TestMonitorSetChecker: a checker replaced during a check is closed once right after that
// check; the replacement is used from the next check, with the status and rise/fall state
// kept; a checker replaced before it was used is closed unused.
func TestMonitorSetChecker(t *testing.T) {
	gate := make(chan struct{})
	a := &fakeChecker{script: []Observation{okObs(RolePrimary, 1), okObs(RolePrimary, 2)}, gates: map[int]chan struct{}{2: gate}}
	b := &fakeChecker{script: []Observation{failObs("password authentication failed"), okObs(RolePrimary, 3)}}
	c := &fakeChecker{}
	rec := &recorder{}
	m := NewMonitor(Options{Interval: time.Hour, FastInterval: time.Hour, Timeout: time.Hour, Rise: 2, Fall: 3, Reporter: rec},
		[]Target{{Name: "pg1", Checker: a}})
	m.Start()
	defer m.Stop()
	m.CheckNow("pg1") // the second check right after the first; it waits on its gate
	waitFor(t, "the second check", func() bool { return a.callCount() == 2 })

	if err := m.SetChecker("pg1", c); err != nil {
		t.Fatal(err)
	}
	if err := m.SetChecker("pg1", b); err != nil {
		t.Fatal(err)
	}
	if c.closeCount() != 1 || c.callCount() != 0 {
		t.Errorf("checker replaced before use: closes %d calls %d, want 1 0", c.closeCount(), c.callCount())
	}
	if a.closeCount() != 0 {
		t.Error("the old checker was closed during its check")
	}
	close(gate)
	waitFor(t, "the old checker closed after its check", func() bool { return a.closeCount() == 1 })
	if got := rec.get("pg1"); len(got) != 2 || got[1].LSN != 2 {
		t.Fatalf("reports %+v, want two, the second from the old checker's second check", got)
	}

	m.CheckNow("pg1")
	waitFor(t, "a check with the new checker", func() bool { return len(rec.get("pg1")) == 3 })
	st := rec.get("pg1")[2]
	if !st.Up || st.Role != RolePrimary || st.LSN != 2 || st.LastErr != "password authentication failed" {
		t.Errorf("status after the new checker's failure %+v, want still up (fall 3), primary, LSN 2", st)
	}
	m.CheckNow("pg1")
	waitFor(t, "a second check with the new checker", func() bool { return len(rec.get("pg1")) == 4 })
	if st := rec.get("pg1")[3]; !st.Up || st.LSN != 3 {
		t.Errorf("status %+v, want up, LSN 3", st)
	}

	if err := m.SetChecker("nobody", &fakeChecker{}); err == nil {
		t.Error("SetChecker of an unknown target succeeded")
	}
	if err := m.SetChecker("pg1", nil); err == nil {
		t.Error("SetChecker of nil succeeded")
	}
	m.Stop()
	late := &fakeChecker{}
	if err := m.SetChecker("pg1", late); err == nil {
		t.Error("SetChecker after Stop succeeded")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closes != 1 || a.calls != 2 || a.checkAfterClose {
		t.Errorf("old checker: closes %d calls %d check after close %v; want 1 2 false", a.closes, a.calls, a.checkAfterClose)
	}
	if b.closeCount() != 1 || b.callCount() != 2 || c.closeCount() != 1 || late.closeCount() != 0 {
		t.Errorf("closes: new %d (calls %d), unused %d, refused %d; want 1 (2), 1, 0",
			b.closeCount(), b.callCount(), c.closeCount(), late.closeCount())
	}
}

// TestMonitorSetCheckerBeforeStart: a checker set before Start is used from the first check
// and the one it replaced is closed without a check.
func TestMonitorSetCheckerBeforeStart(t *testing.T) {
	a, b := &fakeChecker{}, &fakeChecker{}
	m := NewMonitor(Options{Timeout: time.Hour}, []Target{{Name: "pg1", Checker: a}})
	if err := m.SetChecker("pg1", b); err != nil {
		t.Fatal(err)
	}
	m.Start()
	waitFor(t, "the first check", func() bool { return b.callCount() == 1 })
	m.Stop()
	if a.callCount() != 0 || a.closeCount() != 1 || b.closeCount() != 1 {
		t.Errorf("replaced: calls %d closes %d; new: closes %d; want 0 1 1", a.callCount(), a.closeCount(), b.closeCount())
	}
}

// TestMonitorReloadGoroutines: the goroutines of added and removed targets end with
// RemoveTarget, without Stop.
func TestMonitorReloadGoroutines(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	rec := &recorder{}
	m := NewMonitor(Options{Interval: time.Hour, Timeout: time.Hour, Reporter: rec}, []Target{{Name: "pg0", Checker: &fakeChecker{}}})
	defer m.Stop()
	m.Start()
	for _, name := range []string{"pg1", "pg2", "pg3"} {
		if err := m.AddTarget(Target{Name: name, Checker: &fakeChecker{script: []Observation{okObs(RoleReplica, 1)}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the added targets' checks", func() bool {
		return len(rec.get("pg1")) == 1 && len(rec.get("pg2")) == 1 && len(rec.get("pg3")) == 1
	})
	m.SetOptions(Options{Interval: time.Minute, Timeout: time.Hour}) // wakes the waiting loops
	for _, name := range m.Targets() {
		m.RemoveTarget(name)
	}
	goleak.VerifyNone(t, baseline)
}
