package observe

import "time"

// Values of pgfront_config_reloads_total's result label.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

// configState is the config pgfront runs, as the pgfront_config_* gauges show it; one value
// swapped whole, so a scrape never sees one config's hash with another's generation.
type configState struct {
	generation uint64
	hash       string
	at         time.Time
}

// ConfigApplied records a successful reload: pgfront now runs config generation (1 is the
// config New started with, so a reload's is 2 or more) whose hash names it, applied at at.
// It counts a success in pgfront_config_reloads_total and replaces the one
// pgfront_config_info series ("" leaves it out).
func (m *Metrics) ConfigApplied(generation uint64, hash string, at time.Time) {
	m.config.Store(&configState{generation: generation, hash: hash, at: at})
	m.reloads.WithLabelValues(reloadSuccess).Inc()
}

// ConfigReloadFailed records a reload that was refused (the running config stays).
func (m *Metrics) ConfigReloadFailed() {
	m.reloads.WithLabelValues(reloadFailure).Inc()
}
