package observe

import (
	"time"

	"github.com/pgfront/pgfront/internal/netx"
)

// Start begins sampling socket states and checking alerts every interval (Options.Interval,
// changed by SetAlerts), on one goroutine, until Stop. The first check runs at once.
func (m *Metrics) Start() {
	m.loop.Lock()
	defer m.loop.Unlock()
	if m.loop.stop != nil {
		return
	}
	m.loop.stop, m.loop.done = make(chan struct{}), make(chan struct{})
	go m.watch(m.loop.stop, m.loop.done)
}

// Stop ends the loop Start began and waits for it.
func (m *Metrics) Stop() {
	m.loop.Lock()
	stop, done := m.loop.stop, m.loop.done
	m.loop.stop = nil
	m.loop.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// watch is the sampling loop's goroutine.
func (m *Metrics) watch(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := m.sampleInterval()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		m.check()
		if !m.waitTick(t, &every, stop) {
			return
		}
	}
}

// waitTick waits for t's next tick and reports false at stop. A new interval (SetAlerts)
// restarts t, so the next sample comes one new interval later rather than one old one.
func (m *Metrics) waitTick(t *time.Ticker, every *time.Duration, stop <-chan struct{}) bool {
	for {
		select {
		case <-t.C:
			return true
		case <-m.intervalChanged:
			if d := m.sampleInterval(); d != *every {
				*every = d
				t.Reset(d)
			}
		case <-stop:
			return false
		}
	}
}

// check takes one socket sample and checks every alert.
func (m *Metrics) check() {
	now := time.Now()
	values := make(map[string]float64, 5)
	if m.sockets != nil {
		sample, err := m.sockets.Sample()
		if err != nil {
			m.samples.WithLabelValues("error").Inc()
			if prev := m.latest.Load(); prev == nil || prev.err == nil {
				m.log.Warn("sampling socket states failed", "err", err)
			}
			m.latest.Store(&socketSample{err: err})
		} else {
			m.samples.WithLabelValues("ok").Inc()
			m.latest.Store(&socketSample{sample: sample})
			var closeWait, finWait2 int
			for k, n := range sample.Counts {
				switch k.State {
				case netx.TCPCloseWait:
					closeWait += n
				case netx.TCPFinWait2:
					finWait2 += n
				}
			}
			values[AlertCloseWait] = float64(closeWait)
			values[AlertFinWait2] = float64(finWait2)
		}
	}
	if sum, _, ok := m.summarize(now); ok {
		var oldest time.Duration
		for _, rs := range sum {
			oldest = max(oldest, rs.oldestHalfClosed)
		}
		values[AlertHalfClosedAge] = oldest.Seconds()
	}
	values[AlertQueue] = float64(m.queuedTotal())
	if open, limit, err := m.fds(); err == nil && limit > 0 {
		values[AlertFDUsage] = float64(open) / float64(limit)
	}
	m.checkAlerts(now, values)
}
