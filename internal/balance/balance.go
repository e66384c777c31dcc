// Package balance owns server selection: the policies (first, roundrobin, leastconn, with
// weights) that turn a snapshot of a route's usable servers into an order of preference.
//
// The policies are pure functions of the snapshot plus one per-route cursor, so they can be
// called under other components' locks (admission evaluates them while holding its own):
// Order never blocks, never calls back and does not allocate when dst has room.
//
//	b := balance.New(balance.LeastConn)
//	order := b.Order(buf[:0], []balance.Candidate{
//		{Index: 0, Weight: 1, Active: 12},
//		{Index: 2, Weight: 1, Active: 3},
//	})
//	// order == []int{2, 0}: try server 2 first, then server 0.
package balance

import (
	"fmt"
	"sync/atomic"
)

// Policy is a server selection policy.
type Policy int

// The policies. The zero value is First.
const (
	// First prefers servers in the order given (configuration order): all sessions go to the
	// first usable server, the others are fallbacks.
	First Policy = iota
	// RoundRobin spreads sessions over the servers in proportion to their weights.
	RoundRobin
	// LeastConn prefers the server with the fewest active sessions per unit of weight.
	LeastConn
)

var policyNames = [...]string{First: "first", RoundRobin: "roundrobin", LeastConn: "leastconn"}

// String returns the configuration name of p ("first", "roundrobin", "leastconn").
func (p Policy) String() string {
	if p >= 0 && int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy parses a configuration name as written by Policy.String.
func ParsePolicy(s string) (Policy, error) {
	for p, name := range policyNames {
		if s == name {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("unknown balance policy %q (want first, roundrobin or leastconn)", s)
}

// Candidate is one usable server in a snapshot.
type Candidate struct {
	Index  int // the caller's server index, returned by Order
	Weight int // relative share of sessions; 0 (or negative) excludes the server
	Active int // sessions currently on the server (LeastConn)
}

// Balancer orders candidates by its policy. It keeps the per-route state: one cursor that
// advances once per Order call (RoundRobin and LeastConn). A Balancer is safe for concurrent
// use; the cursor is atomic, so concurrent callers each get their own turn.
type Balancer struct {
	policy Policy
	cursor atomic.Uint64
}

// New returns a Balancer for p.
func New(p Policy) *Balancer { return &Balancer{policy: p} }

// Policy returns the balancer's policy.
func (b *Balancer) Policy() Policy { return b.policy }

// Order appends the Index of every candidate with a positive weight to dst, most preferred
// first, and returns the extended slice. It does not allocate when dst has room for the
// candidates.
//
//   - First: input order.
//   - RoundRobin: over any W consecutive calls on the same candidates (W = sum of weights),
//     each candidate is first exactly Weight times; the first positions are interleaved
//     (not A,A,A,B but A,B,A,A) so a heavy server does not get bursts. The other candidates
//     follow the first one in input order, wrapping around, so fallbacks rotate too.
//   - LeastConn: ascending Active/Weight. Candidates with equal load keep input order but the
//     group is rotated by the cursor, so equally loaded servers share new sessions.
func (b *Balancer) Order(dst []int, cands []Candidate) []int {
	start := len(dst)
	switch b.policy {
	case RoundRobin:
		return b.roundRobin(dst, cands)
	case LeastConn:
		return b.leastConn(dst, start, cands)
	default:
		for _, c := range cands {
			if c.Weight > 0 {
				dst = append(dst, c.Index)
			}
		}
		return dst
	}
}

// roundRobin is a weighted cursor: call n maps to slot n mod W of a ring of W slots in which
// candidate i owns Weight_i consecutive slots. The slot is spread by a stride coprime with
// W, which permutes the ring (so shares stay exact) while interleaving the owners.
func (b *Balancer) roundRobin(dst []int, cands []Candidate) []int {
	var total uint64
	n := 0
	for _, c := range cands {
		if c.Weight > 0 {
			total += uint64(c.Weight)
			n++
		}
	}
	if n == 0 {
		return dst
	}
	slot := (b.cursor.Add(1) - 1) % total
	slot = mulMod(slot, stride(total), total)
	first := 0 // position in cands of the slot's owner
	for i, c := range cands {
		if c.Weight <= 0 {
			continue
		}
		if slot < uint64(c.Weight) {
			first = i
			break
		}
		slot -= uint64(c.Weight)
	}
	for k := range cands {
		c := cands[(first+k)%len(cands)]
		if c.Weight > 0 {
			dst = append(dst, c.Index)
		}
	}
	return dst
}

// stride returns a step close to W/φ that is coprime with W: multiplying by it permutes
// 0..W-1 and spreads neighbouring slots apart (the golden-ratio sequence).
func stride(w uint64) uint64 {
	if w <= 2 {
		return 1
	}
	s := w * 618 / 1000
	if s == 0 {
		s = 1
	}
	for gcd(s, w) != 1 {
		s++
	}
	return s
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// mulMod returns a*b mod m without overflow for the small values used here; weights are
// server weights, so the product stays far below 2^64 in any real configuration, and the
// fallback keeps it correct otherwise.
func mulMod(a, b, m uint64) uint64 {
	if a == 0 || b <= ^uint64(0)/a {
		return a * b % m
	}
	var r uint64
	a %= m
	for b > 0 {
		if b&1 == 1 {
			r = addMod(r, a, m)
		}
		a = addMod(a, a, m)
		b >>= 1
	}
	return r
}

func addMod(a, b, m uint64) uint64 {
	if a >= m-b {
		return a - (m - b)
	}
	return a + b
}

// leastConn sorts positions into cands by load (insertion sort: stable, allocation-free,
// and route server lists are short), rotates each group of equal load by the cursor, and
// finally replaces positions by the candidates' Indexes.
func (b *Balancer) leastConn(dst []int, start int, cands []Candidate) []int {
	for i, c := range cands {
		if c.Weight > 0 {
			dst = append(dst, i)
		}
	}
	pos := dst[start:]
	if len(pos) == 0 {
		return dst
	}
	for i := 1; i < len(pos); i++ {
		for j := i; j > 0 && less(cands[pos[j]], cands[pos[j-1]]); j-- {
			pos[j], pos[j-1] = pos[j-1], pos[j]
		}
	}
	turn := b.cursor.Add(1) - 1
	for lo := 0; lo < len(pos); {
		hi := lo + 1
		for hi < len(pos) && !less(cands[pos[lo]], cands[pos[hi]]) {
			hi++
		}
		if k := hi - lo; k > 1 {
			rotate(pos[lo:hi], int(turn%uint64(k)))
		}
		lo = hi
	}
	for i, p := range pos {
		pos[i] = cands[p].Index
	}
	return dst
}

// less reports whether a carries less load than b: a.Active/a.Weight < b.Active/b.Weight,
// cross-multiplied in int64 so it is exact. Weights are positive here.
func less(a, b Candidate) bool {
	return int64(a.Active)*int64(b.Weight) < int64(b.Active)*int64(a.Weight)
}

// rotate moves s[k] to the front in place (three reversals, no allocation).
func rotate(s []int, k int) {
	reverse(s[:k])
	reverse(s[k:])
	reverse(s)
}

func reverse(s []int) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}
