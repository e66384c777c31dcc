package balance

import (
	"math"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{First, RoundRobin, LeastConn} {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
	}
	for _, s := range []string{"", "round-robin", "LEASTCONN", "random"} {
		if _, err := ParsePolicy(s); err == nil {
			t.Errorf("ParsePolicy(%q) succeeded, want error", s)
		}
	}
	if got := Policy(7).String(); got != "Policy(7)" {
		t.Errorf("Policy(7).String() = %q", got)
	}
}

func TestFirst(t *testing.T) {
	b := New(First)
	cands := []Candidate{{Index: 4, Weight: 1, Active: 100}, {Index: 1, Weight: 0}, {Index: 7, Weight: 3}}
	for range 3 { // no rotation: the same answer every time
		if got, want := b.Order(nil, cands), []int{4, 7}; !slices.Equal(got, want) {
			t.Fatalf("Order = %v, want %v", got, want)
		}
	}
}

func TestOrderAppendsToDst(t *testing.T) {
	for _, p := range []Policy{First, RoundRobin, LeastConn} {
		dst := []int{-1, -2}
		got := New(p).Order(dst, []Candidate{{Index: 3, Weight: 1}})
		if want := []int{-1, -2, 3}; !slices.Equal(got, want) {
			t.Errorf("%v: Order = %v, want %v", p, got, want)
		}
	}
}

func TestWeightZeroExcluded(t *testing.T) {
	cands := []Candidate{{Index: 0, Weight: 0}, {Index: 1, Weight: 2}, {Index: 2, Weight: -1}, {Index: 3, Weight: 1}}
	for _, p := range []Policy{First, RoundRobin, LeastConn} {
		b := New(p)
		for range 50 {
			got := b.Order(nil, cands)
			slices.Sort(got)
			if want := []int{1, 3}; !slices.Equal(got, want) {
				t.Fatalf("%v: Order = %v, want a permutation of %v", p, got, want)
			}
		}
		if got := b.Order(nil, []Candidate{{Index: 5, Weight: 0}}); len(got) != 0 {
			t.Fatalf("%v: all weights 0: Order = %v, want empty", p, got)
		}
		if got := b.Order(nil, nil); len(got) != 0 {
			t.Fatalf("%v: no candidates: Order = %v, want empty", p, got)
		}
	}
}

func TestRoundRobinDistribution(t *testing.T) {
	cands := []Candidate{{Index: 10, Weight: 5}, {Index: 11, Weight: 3}, {Index: 12, Weight: 0}, {Index: 13, Weight: 2}}
	const calls = 10000
	b := New(RoundRobin)
	first := map[int]int{}
	for range calls {
		order := b.Order(nil, cands)
		if len(order) != 3 {
			t.Fatalf("Order = %v, want 3 candidates", order)
		}
		first[order[0]]++
	}
	for _, c := range cands {
		want := float64(c.Weight) / 10
		got := float64(first[c.Index]) / calls
		if math.Abs(got-want) > 0.02 {
			t.Errorf("server %d first in %.3f of calls, want %.3f±0.02", c.Index, got, want)
		}
	}
}

func TestRoundRobinInterleavesAndRotatesFallbacks(t *testing.T) {
	b := New(RoundRobin)
	cands := []Candidate{{Index: 0, Weight: 3}, {Index: 1, Weight: 1}}
	var firsts []int
	for range 4 {
		firsts = append(firsts, b.Order(nil, cands)[0])
	}
	if want := []int{0, 1, 0, 0}; !slices.Equal(firsts, want) {
		t.Errorf("first choices over one cycle = %v, want %v (interleaved)", firsts, want)
	}

	b = New(RoundRobin)
	three := []Candidate{{Index: 0, Weight: 1}, {Index: 1, Weight: 1}, {Index: 2, Weight: 1}}
	seen := map[[3]int]bool{}
	for range 3 {
		o := b.Order(nil, three)
		seen[[3]int(o)] = true
		// The fallbacks follow the first in input order, wrapping around.
		if o[1] != (o[0]+1)%3 || o[2] != (o[0]+2)%3 {
			t.Errorf("Order = %v, want a rotation of [0 1 2]", o)
		}
	}
	if len(seen) != 3 {
		t.Errorf("3 calls on 3 equal servers gave %d distinct orders, want 3", len(seen))
	}
}

func TestLeastConn(t *testing.T) {
	b := New(LeastConn)
	cands := []Candidate{
		{Index: 0, Weight: 1, Active: 9},
		{Index: 1, Weight: 1, Active: 2},
		{Index: 2, Weight: 4, Active: 12}, // 3 per unit of weight
		{Index: 3, Weight: 1, Active: 5},
	}
	if got, want := b.Order(nil, cands), []int{1, 2, 3, 0}; !slices.Equal(got, want) {
		t.Errorf("Order = %v, want %v", got, want)
	}
}

func TestLeastConnTiesShareLoad(t *testing.T) {
	b := New(LeastConn)
	// Servers 0 and 2 are tied at the least load; 1 is busier and always last.
	cands := []Candidate{{Index: 0, Weight: 1, Active: 1}, {Index: 1, Weight: 1, Active: 5}, {Index: 2, Weight: 2, Active: 2}}
	first := map[int]int{}
	for range 100 {
		o := b.Order(nil, cands)
		if o[2] != 1 {
			t.Fatalf("Order = %v, want server 1 last", o)
		}
		first[o[0]]++
	}
	if first[0] != 50 || first[2] != 50 {
		t.Errorf("tied servers first %v times, want 50 each", first)
	}
}

// TestLeastConnSimulated lets LeastConn place sessions that never end: the load must stay
// proportional to the weights.
func TestLeastConnSimulated(t *testing.T) {
	b := New(LeastConn)
	cands := []Candidate{{Index: 0, Weight: 1}, {Index: 1, Weight: 2}, {Index: 2, Weight: 1}}
	for range 400 {
		o := b.Order(nil, cands)
		cands[o[0]].Active++
	}
	if cands[0].Active != 100 || cands[1].Active != 200 || cands[2].Active != 100 {
		t.Errorf("active after 400 sessions = %d,%d,%d; want 100,200,100", cands[0].Active, cands[1].Active, cands[2].Active)
	}
}

func TestNoAllocs(t *testing.T) {
	cands := []Candidate{{Index: 0, Weight: 2, Active: 3}, {Index: 1, Weight: 1, Active: 1}, {Index: 2, Weight: 0}, {Index: 3, Weight: 1, Active: 1}}
	dst := make([]int, 0, len(cands))
	for _, p := range []Policy{First, RoundRobin, LeastConn} {
		b := New(p)
		if n := testing.AllocsPerRun(1000, func() { dst = b.Order(dst[:0], cands) }); n != 0 {
			t.Errorf("%v: %v allocs per Order, want 0", p, n)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	cands := []Candidate{{Index: 0, Weight: 1}, {Index: 1, Weight: 1}, {Index: 2, Weight: 2}}
	for _, p := range []Policy{RoundRobin, LeastConn} {
		b := New(p)
		const workers, calls = 8, 1000 // 8000 calls: a multiple of the total weight 4
		counts := make([][3]int, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				dst := make([]int, 0, 3)
				for range calls {
					dst = b.Order(dst[:0], cands)
					if len(dst) != 3 {
						t.Errorf("Order = %v", dst)
						return
					}
					counts[w][dst[0]]++
				}
			})
		}
		wg.Wait()
		var total [3]int
		for _, c := range counts {
			for i := range c {
				total[i] += c[i]
			}
		}
		// Every call advanced the shared cursor exactly once, so the shares are exact.
		want := [3]int{2000, 2000, 4000}
		if p == LeastConn { // all tied (Active 0): rotation over the three equally
			want = [3]int{8000 / 3, 8000 / 3, 8000 / 3}
		}
		for i := range total {
			if d := total[i] - want[i]; d < -1 || d > 1 {
				t.Errorf("%v: first counts %v, want %v", p, total, want)
				break
			}
		}
	}
}

func BenchmarkOrder(b *testing.B) {
	cands := []Candidate{
		{Index: 0, Weight: 1, Active: 40}, {Index: 1, Weight: 2, Active: 75},
		{Index: 2, Weight: 1, Active: 38}, {Index: 3, Weight: 1, Active: 40},
	}
	for _, p := range []Policy{First, RoundRobin, LeastConn} {
		b.Run(p.String(), func(b *testing.B) {
			bal := New(p)
			dst := make([]int, 0, len(cands))
			b.ReportAllocs()
			for b.Loop() {
				dst = bal.Order(dst[:0], cands)
			}
		})
	}
}
