package logtest

import (
	"fmt"
	"sync"
	"testing"
)

func TestBufferConcurrentWritesAndLines(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "writer=%d msg=hello\n", i)
		}()
	}
	wg.Wait()
	if got := len(b.Lines("msg=hello")); got != 8 {
		t.Fatalf("%d lines, want 8:\n%s", got, b.String())
	}
	if got := b.Lines("writer=3", "msg=hello"); len(got) != 1 || got[0] != "writer=3 msg=hello" {
		t.Fatalf("Lines(writer=3) = %q", got)
	}
	if got := b.Lines("absent"); len(got) != 0 {
		t.Fatalf("Lines(absent) = %q", got)
	}
}
