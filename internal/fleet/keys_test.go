package fleet

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/pgfront/pgfront/internal/pgwire"
)

var testSecret = bytes.Repeat([]byte("0123456789abcdef"), 2)

// TestKeysRoundTrip: a key issued by one instance reads back its tag on any instance with the
// same fleet secret, for 4-byte and protocol 3.2 secrets; the process id is untouched.
func TestKeysRoundTrip(t *testing.T) {
	a, b := NewKeys(testSecret, "pgfront-a"), NewKeys(testSecret, "pgfront-b")
	for _, n := range []int{4, 5, 32, 256} {
		for pid := uint32(1); pid < 2000; pid += 7 {
			secret := make([]byte, n)
			a.Issue(pid, secret)
			for _, reader := range []*Keys{a, b} {
				tag, ok := reader.Owner(pgwire.CancelKey{ProcessID: pid, Secret: string(secret)})
				if !ok || tag != a.Tag() {
					t.Fatalf("len %d pid %d: tag %d, %v; want %d", n, pid, tag, ok, a.Tag())
				}
			}
		}
	}
	if _, ok := a.Owner(pgwire.CancelKey{ProcessID: 1, Secret: "abc"}); ok {
		t.Error("a 3-byte secret has an owner")
	}
}

// TestKeysPermutation: the keyed permutation is a bijection and its inverse undoes it; another
// fleet secret or another pid gives another permutation (the tag cannot be read without the
// secret).
func TestKeysPermutation(t *testing.T) {
	k := NewKeys(testSecret, "x")
	other := NewKeys(bytes.Repeat([]byte("z"), 32), "x")
	seen := make(map[uint32]bool, 1<<16)
	same, samePID := 0, 0
	for x := uint32(0); x < 1<<16; x++ {
		in := x * 65537 // spread over the 32-bit space
		y := k.permute(42, in, false)
		if seen[y] {
			t.Fatalf("permute(%#x) = %#x collides", in, y)
		}
		seen[y] = true
		if back := k.permute(42, y, true); back != in {
			t.Fatalf("inverse(permute(%#x)) = %#x", in, back)
		}
		if other.permute(42, in, false) == y {
			same++
		}
		if k.permute(43, in, false) == y {
			samePID++
		}
	}
	if same > 4 || samePID > 4 {
		t.Errorf("another secret agrees on %d, another pid on %d of 65536 inputs", same, samePID)
	}
}

// TestKeysDistribution: issued 4-byte secrets look uniformly random: each byte position and
// each bit is balanced, and the tag does not show (a fixed tag's secrets spread over every
// first byte).
func TestKeysDistribution(t *testing.T) {
	k := NewKeys(testSecret, "pgfront-a")
	const n = 1 << 16
	var bits [32]int
	var first [256]int
	secret := make([]byte, 4)
	for i := range n {
		k.Issue(uint32(i%512+1), secret)
		v := binary.BigEndian.Uint32(secret)
		for b := range 32 {
			if v&(1<<b) != 0 {
				bits[b]++
			}
		}
		first[secret[0]]++
	}
	for b, c := range bits {
		// mean n/2, sd 128: 6 sd is far outside chance
		if math.Abs(float64(c)-n/2) > 6*128 {
			t.Errorf("bit %d set in %d of %d secrets", b, c, n)
		}
	}
	// Chi-square of the first byte over 256 cells (255 degrees of freedom): 400 is p < 1e-7.
	chi := 0.0
	for _, c := range first {
		d := float64(c) - n/256
		chi += d * d / (n / 256)
	}
	if chi > 400 {
		t.Errorf("first secret byte chi-square %.0f: not uniform (the tag shows)", chi)
	}
}

// TestTagOf: tags are fixed across versions (the instances of a fleet in the middle of an
// upgrade run two versions that must agree) and spread.
func TestTagOf(t *testing.T) {
	if a, b := TagOf("pgfront-a"), TagOf(""); a != 123 || b != 124 {
		t.Fatalf("TagOf changed: %d, %d", a, b)
	}
	seen := map[byte]bool{}
	for i := range 64 {
		seen[TagOf(string(rune('a'+i%26))+string(rune('0'+i/26)))] = true
	}
	if len(seen) < 40 {
		t.Errorf("64 names gave only %d tags", len(seen))
	}
}

func BenchmarkIssue(b *testing.B) {
	k := NewKeys(testSecret, "x")
	secret := make([]byte, 4)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k.Issue(uint32(i), secret)
	}
}

// TestKeysVector: the permutation is fixed for a given fleet secret, so instances of two
// pgfront versions in one fleet (an upgrade) read each other's tags.
func TestKeysVector(t *testing.T) {
	k := NewKeys(testSecret, "x")
	if y := k.permute(42, 0x7b000001, false); y != 0x79294066 {
		t.Fatalf("permute(42, 0x7b000001) = %#x, want 0x79294066", y)
	}
	tag, ok := k.Owner(pgwire.CancelKey{ProcessID: 42, Secret: "\x79\x29\x40\x66"})
	if !ok || tag != 0x7b {
		t.Fatalf("Owner = %#x, %v; want 0x7b", tag, ok)
	}
}
