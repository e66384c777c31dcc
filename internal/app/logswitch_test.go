package app

import (
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/logtest"
)

// TestLogSwitch: a reload's format and level reach loggers derived before it (With), keeping
// their attributes.
func TestLogSwitch(t *testing.T) {
	var buf logtest.Buffer
	root := NewLogger("text", "info", &buf)
	derived := root.With("cluster", "main").WithGroup("g")
	derived.Debug("hidden")
	derived.Info("text line", "k", 1)
	root.Handler().(*logSwitch).set("json", "debug")
	derived.Debug("json line", "k", 2)
	root.Handler().(*logSwitch).set("text", "error")
	derived.Warn("hidden too")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `msg="text line"`) || !strings.Contains(lines[0], "cluster=main") || !strings.Contains(lines[0], "g.k=1") {
		t.Errorf("text line: %s", lines[0])
	}
	if !strings.HasPrefix(lines[1], "{") || !strings.Contains(lines[1], `"cluster":"main"`) || !strings.Contains(lines[1], `"g":{"k":2}`) {
		t.Errorf("json line after the switch: %s", lines[1])
	}
}
