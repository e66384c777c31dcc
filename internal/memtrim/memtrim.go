// Package memtrim gives the memory of a burst back to the operating system soon after the
// burst ends.
//
// A login burst (a thousand clients reconnecting after a failover) allocates far more than
// the sessions keep: buffers, TLS handshakes, decoded startup packets. Go collects that
// garbage only when the heap next doubles, and an idle proxy allocates almost nothing, so
// the memory stays resident until the runtime's periodic GC (2 min) and background scavenger
// get to it: pgfront looked 3× as large per idle session as HAProxy for minutes after a
// burst. A Trimmer watches the allocation rate and, once a burst of at least Burst bytes is
// followed by a quiet Interval, collects and returns the free memory at once
// (debug.FreeOSMemory, after one more collection for what sync.Pools hold). Under steady load the rate is never quiet, so it costs nothing then.
//
//	t := memtrim.Start(memtrim.Options{})
//	defer t.Stop()
package memtrim

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Options tune a Trimmer; zero values take the defaults.
type Options struct {
	// Interval is how often the allocation rate is read, and how long it must stay quiet.
	// Default 500ms.
	Interval time.Duration
	// Burst is how much must have been allocated since the last trim for one to be worth its
	// cost (a full GC). Default 4 MiB.
	Burst uint64
	// Quiet is the most an Interval may allocate and still count as quiet. Default 512 KiB.
	Quiet uint64
	// Trim returns the memory; nil = two collections, then the free memory to the OS. A
	// seam for tests.
	Trim func()
}

// Trimmer is a running trim loop.
type Trimmer struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	trims int
}

const allocsMetric = "/gc/heap/allocs:bytes"

// trim collects twice and returns the free memory: the first collection only moves what
// sync.Pools hold (the relay's buffers of the burst) to their victim caches, the second frees
// it.
func trim() {
	runtime.GC()
	debug.FreeOSMemory()
}

// Start starts a trim loop.
func Start(o Options) *Trimmer {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Burst == 0 {
		o.Burst = 4 << 20
	}
	if o.Quiet == 0 {
		o.Quiet = 512 << 10
	}
	if o.Trim == nil {
		o.Trim = trim
	}
	tick := time.NewTicker(o.Interval)
	t := start(o, tick.C)
	go func() { <-t.done; tick.Stop() }()
	return t
}

// start runs the loop on ticks (a test's channel, or a ticker's).
func start(o Options, ticks <-chan time.Time) *Trimmer {
	t := &Trimmer{stop: make(chan struct{}), done: make(chan struct{})}
	go t.run(o, ticks)
	return t
}

// Stop ends the loop and waits for it.
func (t *Trimmer) Stop() {
	t.once.Do(func() { close(t.stop) })
	<-t.done
}

// Trims is how many times memory was returned.
func (t *Trimmer) Trims() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.trims
}

func (t *Trimmer) run(o Options, ticks <-chan time.Time) {
	defer close(t.done)
	sample := []metrics.Sample{{Name: allocsMetric}}
	read := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	last := read()
	sinceTrim := uint64(0)
	for {
		select {
		case <-t.stop:
			return
		case <-ticks:
		}
		now := read()
		step := now - last
		last = now
		if step > o.Quiet {
			// Only busy intervals make a burst: a steady trickle under Quiet never adds up
			// to a trim.
			sinceTrim += step
			continue
		}
		if sinceTrim >= o.Burst {
			o.Trim()
			sinceTrim = 0
			last = read() // the trim's own allocations are no burst
			t.mu.Lock()
			t.trims++
			t.mu.Unlock()
		}
	}
}
