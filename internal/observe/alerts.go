package observe

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Thresholds are the built-in alerts' limits; zero turns an alert off.
type Thresholds struct {
	CloseWait     int           // pgfront's sockets in CLOSE_WAIT, both sides
	FinWait2      int           // pgfront's sockets in FIN_WAIT2, both sides
	HalfClosedAge time.Duration // age of the oldest half-closed session
	Queue         int           // clients waiting for a slot or a server
	FDUsage       float64       // open descriptors / RLIMIT_NOFILE soft limit
}

// Alert names, as in the config and the pgfront_alert_active label.
const (
	AlertCloseWait     = "close_wait"
	AlertFinWait2      = "fin_wait2"
	AlertHalfClosedAge = "half_closed_age"
	AlertQueue         = "queue"
	AlertFDUsage       = "fd_usage"
)

// AlertState is one built-in alert as last checked.
type AlertState struct {
	Name      string
	Active    bool
	Since     time.Time // when it became active
	Value     float64   // the latest value checked
	Threshold float64
	Message   string
}

type alert struct {
	name    string
	message string
	// format renders a value for the log line.
	format func(v float64) string
}

// alertSet is every built-in alert and the state each is in.
type alertSet struct {
	list []*alert // fixed at init; thresholds live in the states
	mu   struct {
		sync.Mutex
		// state holds each alert's threshold (set by SetAlerts) and what the last check found.
		state map[string]*AlertState
	}
}

func (s *alertSet) init() {
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	s.list = []*alert{
		{AlertCloseWait, "pgfront sockets in CLOSE_WAIT: a peer closed and pgfront has not closed its side yet", count},
		{AlertFinWait2, "pgfront sockets in FIN_WAIT2: pgfront closed and the peer has not", count},
		{AlertHalfClosedAge, "a session has been half-closed (one side sent FIN) this long", func(v float64) string {
			return (time.Duration(v * float64(time.Second))).Round(time.Millisecond).String()
		}},
		{AlertQueue, "clients waiting for a maxconn slot or an eligible server", count},
		{AlertFDUsage, "share of the open-files limit in use", func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }},
	}
	s.mu.state = make(map[string]*AlertState)
	for _, a := range s.list {
		s.mu.state[a.name] = &AlertState{Name: a.name, Message: a.message}
	}
}

// set stores new thresholds; the next check compares with them.
func (s *alertSet) set(t Thresholds) {
	th := map[string]float64{
		AlertCloseWait:     float64(t.CloseWait),
		AlertFinWait2:      float64(t.FinWait2),
		AlertHalfClosedAge: t.HalfClosedAge.Seconds(),
		AlertQueue:         float64(t.Queue),
		AlertFDUsage:       t.FDUsage,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, st := range s.mu.state {
		st.Threshold = th[name]
	}
}

// threshold is the alert's threshold now (0 = off).
func (s *alertSet) threshold(name string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.state[name].Threshold
}

// snapshot returns the states of the alerts that are enabled, or still active after being
// turned off (until the next check clears them).
func (s *alertSet) snapshot() []AlertState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AlertState
	for _, a := range s.list {
		if st := s.mu.state[a.name]; st.Threshold > 0 || st.Active {
			out = append(out, *st)
		}
	}
	return out
}

// Alerts returns every enabled built-in alert as last checked.
func (m *Metrics) Alerts() []AlertState { return m.alerts.snapshot() }

// SetAlerts changes the built-in alerts' thresholds and the sample interval (0: 5s). Both
// take effect at the next sample: a new interval restarts the sampling loop's ticker, and an
// active alert whose threshold became 0 clears then, logging its clear line once. New calls it
// with Options.Alerts and Interval.
func (m *Metrics) SetAlerts(t Thresholds, interval time.Duration) {
	if interval <= 0 {
		interval = defaultInterval
	}
	m.alerts.set(t)
	if m.interval.Swap(int64(interval)) != int64(interval) {
		select {
		case m.intervalChanged <- struct{}{}:
		default: // a wake-up is pending already; the loop reads the latest interval
		}
	}
}

// sampleInterval is the sample interval now.
func (m *Metrics) sampleInterval() time.Duration { return time.Duration(m.interval.Load()) }

// checkAlerts compares each enabled alert's value with its threshold; a change of state is
// logged once (a warning when raised, info when cleared) and shows in pgfront_alert_active.
// An active alert that was turned off clears.
func (m *Metrics) checkAlerts(now time.Time, values map[string]float64) {
	for _, a := range m.alerts.list {
		v, measured := values[a.name]
		m.alerts.mu.Lock()
		st := m.alerts.mu.state[a.name]
		threshold := st.Threshold
		off := threshold <= 0
		if !off && !measured {
			m.alerts.mu.Unlock()
			continue // not measured this round (no socket sample, say): keep the state
		}
		if !off {
			st.Value = v
		}
		active := !off && v >= threshold
		was, since := st.Active, st.Since
		st.Active = active
		if active && !was {
			st.Since = now
		}
		if !active {
			st.Since = time.Time{}
		}
		m.alerts.mu.Unlock()
		switch {
		case active && !was:
			m.alertActive.WithLabelValues(a.name).Set(1)
			m.alertRaised.WithLabelValues(a.name).Inc()
			m.log.Warn("alert raised", "alert", a.name, "value", a.format(v), "threshold", a.format(threshold), "meaning", a.message)
		case !active && was && off:
			m.alertActive.WithLabelValues(a.name).Set(0)
			m.log.Info("alert cleared", "alert", a.name, "threshold", "off", "active_for", now.Sub(since).Round(time.Millisecond))
		case !active && was:
			m.alertActive.WithLabelValues(a.name).Set(0)
			m.log.Info("alert cleared", "alert", a.name, "value", a.format(v), "threshold", a.format(threshold),
				"active_for", now.Sub(since).Round(time.Millisecond))
		}
	}
}

// openFDs counts this process's open descriptors and reads its soft limit.
func openFDs() (open, limit int, err error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, 0, fmt.Errorf("counting open files: %w", err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		open += len(names)
		if err != nil || len(names) == 0 {
			break
		}
	}
	open-- // the directory itself
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return open, 0, fmt.Errorf("reading the open-files limit: %w", err)
	}
	return open, int(min(rl.Cur, 1<<31-1)), nil
}
