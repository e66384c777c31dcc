// Package logtest collects pgfront's log output in tests: a buffer that the goroutines which
// log (sessions, handlers, check loops) may write concurrently while a test reads it.
//
//	logs := &logtest.Buffer{}
//	logger := slog.New(slog.NewTextHandler(logs, nil))
//	...
//	if len(logs.Lines(`msg="alert raised"`, "alert=close_wait")) != 1 { ... }
package logtest

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is an io.Writer safe for concurrent use whose contents can be read at any time.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the lines written so far that contain every one of substrs.
func (b *Buffer) Lines(substrs ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(b.String(), "\n") {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
