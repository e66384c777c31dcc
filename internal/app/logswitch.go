package app

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
)

// logSwitch is the slog handler of a pgfront process: its format and level can change while
// loggers derived from it (With, WithGroup) are in use, so a config reload applies log.format
// and log.level to every component without rebuilding them.
type logSwitch struct {
	root  *logRoot
	attrs []func(slog.Handler) slog.Handler // With/WithGroup steps, replayed on a new base
	cache atomic.Pointer[derived]
}

// logRoot is what every handler derived from one NewLogger shares.
type logRoot struct {
	w     io.Writer
	level slog.LevelVar
	base  atomic.Pointer[derived] // the current format's handler, and its generation
}

// derived is a handler built for one generation of the root's base.
type derived struct {
	gen uint64
	h   slog.Handler
}

var _ slog.Handler = (*logSwitch)(nil)

func newLogSwitch(format, level string, w io.Writer) *logSwitch {
	r := &logRoot{w: w}
	ls := &logSwitch{root: r}
	ls.set(format, level)
	return ls
}

// set changes the format and level of every logger derived from this switch's root.
func (ls *logSwitch) set(format, level string) {
	r := ls.root
	r.level.Set(parseLevel(level))
	opts := &slog.HandlerOptions{Level: &r.level}
	var h slog.Handler = slog.NewTextHandler(r.w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(r.w, opts)
	}
	gen := uint64(1)
	if old := r.base.Load(); old != nil {
		gen = old.gen + 1
	}
	r.base.Store(&derived{gen: gen, h: h})
}

// handler is this switch's handler for the root's current base, rebuilt once per change.
func (ls *logSwitch) handler() slog.Handler {
	base := ls.root.base.Load()
	if c := ls.cache.Load(); c != nil && c.gen == base.gen {
		return c.h
	}
	h := base.h
	for _, step := range ls.attrs {
		h = step(h)
	}
	ls.cache.Store(&derived{gen: base.gen, h: h})
	return h
}

func (ls *logSwitch) Enabled(_ context.Context, l slog.Level) bool { return l >= ls.root.level.Level() }

func (ls *logSwitch) Handle(ctx context.Context, r slog.Record) error {
	return ls.handler().Handle(ctx, r)
}

func (ls *logSwitch) WithAttrs(attrs []slog.Attr) slog.Handler {
	return ls.with(func(h slog.Handler) slog.Handler { return h.WithAttrs(attrs) })
}

func (ls *logSwitch) WithGroup(name string) slog.Handler {
	return ls.with(func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
}

func (ls *logSwitch) with(step func(slog.Handler) slog.Handler) *logSwitch {
	steps := make([]func(slog.Handler) slog.Handler, len(ls.attrs), len(ls.attrs)+1)
	copy(steps, ls.attrs)
	return &logSwitch{root: ls.root, attrs: append(steps, step)}
}

func parseLevel(level string) slog.Level {
	switch strings.ToLower(level) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// NewLogger builds the slog logger the config asks for. A config reload changes its format and
// level in place (App finds the switch behind it).
func NewLogger(format, level string, w io.Writer) *slog.Logger {
	return slog.New(newLogSwitch(format, level, w))
}
