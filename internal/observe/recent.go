package observe

import (
	"sync"

	"github.com/pgfront/pgfront/internal/frontend"
)

// recentSize is how many ended sessions the stats page can show.
const recentSize = 100

// recentList keeps the latest ended sessions in a ring and counts every ended session by cause.
type recentList struct {
	mu struct {
		sync.Mutex
		ring    []frontend.Ended
		next    int // where the next one goes
		n       int // how many the ring holds
		byCause map[string]uint64
	}
}

func (r *recentList) init(size int) {
	r.mu.ring = make([]frontend.Ended, size)
	r.mu.byCause = make(map[string]uint64)
}

func (r *recentList) add(e frontend.Ended) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.ring[r.mu.next] = e
	r.mu.next = (r.mu.next + 1) % len(r.mu.ring)
	r.mu.n = min(r.mu.n+1, len(r.mu.ring))
	r.mu.byCause[e.Cause.String()]++
}

// list returns the ring newest first and a copy of the counts by cause.
func (r *recentList) list() ([]frontend.Ended, map[string]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]frontend.Ended, 0, r.mu.n)
	for i := 1; i <= r.mu.n; i++ {
		out = append(out, r.mu.ring[(r.mu.next-i+len(r.mu.ring))%len(r.mu.ring)])
	}
	counts := make(map[string]uint64, len(r.mu.byCause))
	for k, v := range r.mu.byCause {
		counts[k] = v
	}
	return out, counts
}
