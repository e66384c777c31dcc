package frontend

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pgfront/pgfront/internal/relay"
)

// connLog writes the one log line of every client connection, from its end record (Ended):
// "session ended", or "cancel request" for a connection that carried a CancelRequest.
//
// Lines at INFO are never limited: one per connection is the contract, and an operator who
// wants fewer sets the level to warn. Lines at WARN (refusals and failures) come in floods
// (a failover refuses every client at once), so they are rate-limited: a burst, then one a
// second. A line the limit holds back is not lost silently: it is counted by cause, and a
// "connection lines suppressed" line reports the counts once the report interval has passed
// (and when the frontend stops), so every connection is accounted for in the log.
type connLog struct {
	log    *slog.Logger
	limit  *rate.Limiter
	report time.Duration // how long after the first suppressed line the counts are reported

	mu struct {
		sync.Mutex
		byCause map[string]uint64 // suppressed lines since the last report
		since   time.Time         // when the first of them was suppressed
		timer   *time.Timer       // reports them; nil when nothing is pending
		stopped bool              // flush ran at stop: report at once from now on
	}
}

// Defaults of the WARN line limit.
const (
	warnBurst      = 10
	warnEvery      = time.Second
	suppressReport = 10 * time.Second
)

func newConnLog(log *slog.Logger, burst int, every, report time.Duration) *connLog {
	l := &connLog{log: log, limit: rate.NewLimiter(rate.Every(every), burst), report: report}
	l.mu.byCause = make(map[string]uint64)
	return l
}

// level is the level of a connection's line: WARN for refusals and failures an operator acts
// on, INFO for the rest.
func (e *Ended) level() slog.Level {
	switch {
	case e.Refused, e.CancelResult == cancelFailed:
		return slog.LevelWarn
	}
	switch e.Cause {
	case relay.CauseProtocolError, relay.CauseConnectFailed, relay.CauseLoginFailed, relay.CauseTLSError:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// writes reports whether ended writes a line for e (or counts it as suppressed): false
// when the log level leaves e's level out.
func (l *connLog) writes(e *Ended) bool {
	return l.log.Enabled(context.Background(), e.level())
}

// ended writes e's line, or counts it when the WARN limit holds it back.
func (l *connLog) ended(e *Ended) {
	if !l.writes(e) {
		return // at log level warn, a busy pgfront builds no line per session
	}
	level, ctx := e.level(), context.Background()
	if level >= slog.LevelWarn && !l.limit.Allow() {
		l.suppress(e.Cause.String())
		return
	}
	if e.CancelResult != "" {
		l.log.LogAttrs(ctx, level, "cancel request", cancelAttrs(e)...)
		return
	}
	l.log.LogAttrs(ctx, level, "session ended", sessionAttrs(e)...)
}

func (l *connLog) suppress(cause string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.mu.byCause) == 0 {
		l.mu.since = time.Now()
	}
	l.mu.byCause[cause]++
	if l.mu.stopped {
		l.flushLocked()
		return
	}
	if l.mu.timer == nil {
		l.mu.timer = time.AfterFunc(l.report, l.flush)
	}
}

// flush reports the lines suppressed so far, if any.
func (l *connLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

func (l *connLog) flushLocked() {
	if l.mu.timer != nil {
		l.mu.timer.Stop()
		l.mu.timer = nil
	}
	if len(l.mu.byCause) == 0 {
		return
	}
	var total uint64
	var byCause []any
	for _, c := range slices.Sorted(maps.Keys(l.mu.byCause)) {
		total += l.mu.byCause[c]
		byCause = append(byCause, slog.Uint64(c, l.mu.byCause[c]))
	}
	l.log.LogAttrs(context.Background(), slog.LevelWarn, "connection lines suppressed",
		slog.Uint64("suppressed", total), slog.Group("by_cause", byCause...), slog.Time("since", l.mu.since))
	clear(l.mu.byCause)
}

// stop reports what is pending now, and anything suppressed later at once (the frontend
// stops: no timer may outlive it).
func (l *connLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.stopped = true
	l.flushLocked()
}

// millis is a duration as the log writes it: milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sessionAttrs(e *Ended) []slog.Attr {
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs, slog.Uint64("session", e.ID), slog.String("route", e.Route), slog.String("client", e.Client))
	if e.Via != "" {
		attrs = append(attrs, slog.String("via", e.Via))
	}
	if e.Server != nil {
		attrs = append(attrs, slog.String("server", e.Server.FullName()))
	}
	for _, kv := range [...][2]string{{"user", e.User}, {"database", e.Database}, {"application_name", e.ApplicationName}} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	attrs = append(attrs, slog.Float64("duration_ms", millis(e.Duration)))
	if e.Queued > 0 {
		attrs = append(attrs, slog.Float64("queued_ms", millis(e.Queued)))
	}
	attrs = append(attrs,
		slog.Int64("bytes_from_client", e.FromClient),
		slog.Int64("bytes_from_server", e.FromServer),
		slog.String("cause", e.Cause.String()))
	if e.Refused {
		attrs = append(attrs, slog.Bool("refused", true))
	}
	if e.Fallback {
		attrs = append(attrs, slog.Bool("fallback", true))
	}
	if e.Cancels > 0 {
		attrs = append(attrs, slog.Int("cancels", e.Cancels))
	}
	if e.TLS != "" {
		attrs = append(attrs, slog.String("tls", e.TLS))
	}
	if e.TLSResult != "" {
		attrs = append(attrs, slog.String("tls_result", e.TLSResult))
	}
	if e.SQLState != "" {
		attrs = append(attrs, slog.String("sqlstate", e.SQLState))
	}
	if e.Err != "" {
		attrs = append(attrs, slog.String("err", e.Err))
	}
	return attrs
}

func cancelAttrs(e *Ended) []slog.Attr {
	attrs := []slog.Attr{slog.Uint64("session", e.ID), slog.String("route", e.Route), slog.String("client", e.Client),
		slog.String("result", e.CancelResult)}
	if e.Server != nil {
		attrs = append(attrs, slog.String("server", e.Server.FullName()))
	}
	if e.CancelFor != 0 {
		attrs = append(attrs, slog.Uint64("cancelled_session", e.CancelFor))
	}
	if e.CancelPeer != "" {
		attrs = append(attrs, slog.String("peer", e.CancelPeer))
	}
	if e.CancelVia != "" {
		attrs = append(attrs, slog.String("via", e.CancelVia))
	}
	if e.CancelServers > 0 {
		attrs = append(attrs, slog.Int("servers", e.CancelServers))
	}
	attrs = append(attrs, slog.Float64("duration_ms", millis(e.Duration)))
	if e.Err != "" {
		attrs = append(attrs, slog.String("err", e.Err))
	}
	return attrs
}
