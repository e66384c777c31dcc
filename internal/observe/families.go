package observe

import "github.com/prometheus/client_golang/prometheus"

// Family describes one metric family pgfront exports: the single table every collector is
// built from, so the shipped alert rules and dashboard can be checked against it.
type Family struct {
	Name   string // "pgfront_sessions_total"
	Type   string // "counter", "gauge" or "histogram"
	Help   string
	Labels []string // variable label names, in order
}

// Families lists every pgfront_* family (the Go runtime and process collectors' go_* and
// process_* families are registered too but not listed).
func Families() []Family {
	out := make([]Family, len(families))
	for i, f := range families {
		out[i] = *f
		out[i].Labels = append([]string(nil), f.Labels...)
	}
	return out
}

func family(name, typ, help string, labels ...string) *Family {
	f := &Family{Name: name, Type: typ, Help: help, Labels: labels}
	families = append(families, f)
	return f
}

var families []*Family

// The families. Labels are bounded: route, cluster and server names come from the config,
// cause/reason/state/role/direction/side/result/alert/to from fixed sets, hash and the build
// labels have one value at a time; never a client address.
var (
	famSessionsTotal     = family("pgfront_sessions_total", "counter", "Client connections accepted.", "route")
	famAcceptErrors      = family("pgfront_accept_errors_total", "counter", "Accepts that failed on a route's listener (out of file descriptors or memory, say); pgfront retries after a backoff, 5 ms doubling up to 1 s.", "route")
	famSessionsEnded     = family("pgfront_sessions_ended_total", "counter", "Client connections ended, by termination cause.", "route", "cause")
	famRefusals          = family("pgfront_refusals_total", "counter", "Sessions refused before relaying, with a FATAL error, by reason (a termination cause).", "route", "reason")
	famBytes             = family("pgfront_bytes_total", "counter", "Bytes relayed, by direction (client_to_server, server_to_client).", "route", "direction")
	famQueries           = family("pgfront_queries_total", "counter", "Queries answered: one per ReadyForQuery after the login.", "route", "cluster", "server")
	famTransactions      = family("pgfront_transactions_total", "counter", "Transactions ended: ReadyForQuery back to idle ('I'), explicit or implicit.", "route", "cluster", "server")
	famCancels           = family("pgfront_cancel_requests_total", "counter", "CancelRequests received on a route, by result: forwarded (to the server of a session here or of the draining predecessor), peer (the peer instance holding the session took it), fallback (no instance owns the key: sent to the route's eligible servers), unknown_key (dropped: no owner and no fallback), rate_limited (dropped: the route's fallback budget is spent), failed.", "route", "result")
	famTransitions       = family("pgfront_server_transitions_total", "counter", "Server health and role transitions, by new state (up, down, primary, replica, unknown).", "cluster", "server", "to")
	famAlertsRaised      = family("pgfront_alerts_raised_total", "counter", "Times a built-in alert became active.", "alert")
	famSocketSamples     = family("pgfront_socket_samples_total", "counter", "Kernel socket-state samples, by result (ok, error).", "result")
	famConfigReloads     = family("pgfront_config_reloads_total", "counter", "Config reloads, by result (success, failure); a failed reload leaves the running config in place.", "result")
	famTLSHandshakes     = family("pgfront_tls_handshakes_total", "counter", "TLS handshakes with clients of a route that terminates TLS, by result: ok, or why it failed (client_rejected_certificate, bad_client_certificate, no_common_protocol, timeout, client_closed, not_tls, failed).", "route", "result")
	famRouteSessions     = family("pgfront_route_sessions", "gauge", "Client sessions open now, in any state.", "route")
	famRouteMaxConn      = family("pgfront_route_maxconn", "gauge", "The route's maxconn (0 = unlimited).", "route")
	famMaxConn           = family("pgfront_maxconn", "gauge", "The global maxconn (0 = unlimited).")
	famQueued            = family("pgfront_queued_sessions", "gauge", "Clients waiting now for a maxconn slot or an eligible server.", "route")
	famParked            = family("pgfront_parked_sessions", "gauge", "Idle sessions held by the event loops now (no goroutine, no buffer).")
	famIdleInTx          = family("pgfront_idle_in_transaction_sessions", "gauge", "Sessions idle inside a transaction now.", "route")
	famHalfClosed        = family("pgfront_half_closed_sessions", "gauge", "Sessions where one side has sent FIN and pgfront waits for the other (bounded by client_fin/server_fin).", "route")
	famHalfClosedAge     = family("pgfront_half_closed_oldest_seconds", "gauge", "Age of the oldest half-closed session (0 when none).", "route")
	famServerSessions    = family("pgfront_server_sessions", "gauge", "Sessions relayed to the server now.", "cluster", "server")
	famServerUp          = family("pgfront_server_up", "gauge", "1 when the server is up, 0 when down.", "cluster", "server")
	famServerRole        = family("pgfront_server_role", "gauge", "1 for the server's current role (primary, replica, unknown).", "cluster", "server", "role")
	famServerAdmin       = family("pgfront_server_admin_state", "gauge", "1 for the server's administrative state (ready, drain, maint).", "cluster", "server", "state")
	famServerFenced      = family("pgfront_server_fenced", "gauge", "1 while a session found the server in recovery and no check has cleared it.", "cluster", "server")
	famSplitBrain        = family("pgfront_split_brain", "gauge", "1 while two or more servers of the cluster claim to be primary and no authoritative role source decides: primary routes refuse new sessions.", "cluster")
	famServerLagBytes    = family("pgfront_server_lag_bytes", "gauge", "Replica WAL lag behind the cluster's primary, in bytes (absent when unknown).", "cluster", "server")
	famServerLagSecs     = family("pgfront_server_lag_seconds", "gauge", "Replica replay lag in seconds (absent when unknown).", "cluster", "server")
	famServerLastCheck   = family("pgfront_server_last_check_timestamp_seconds", "gauge", "Unix time of the server's last health check.", "cluster", "server")
	famSockets           = family("pgfront_sockets", "gauge", "pgfront's own TCP sockets by kernel state, by route and side (client; server with its cluster and server).", "route", "side", "cluster", "server", "state")
	famSampleDuration    = family("pgfront_socket_sample_duration_seconds", "gauge", "What the last kernel socket-state sample cost.")
	famSampleTime        = family("pgfront_socket_sample_timestamp_seconds", "gauge", "Unix time of the last kernel socket-state sample.")
	famAlertActive       = family("pgfront_alert_active", "gauge", "1 while a built-in alert is active.", "alert")
	famAlertThreshold    = family("pgfront_alert_threshold", "gauge", "A built-in alert's threshold (0 = off).", "alert")
	famConfigLastSuccess = family("pgfront_config_last_reload_success_timestamp_seconds", "gauge", "Unix time the running config was applied: at start, then at each successful reload.")
	famConfigInfo        = family("pgfront_config_info", "gauge", "1, labelled with the hash of the config pgfront runs (one series).", "hash")
	famConfigGeneration  = family("pgfront_config_generation", "gauge", "Generation of the running config: 1 at start, one more per successful reload.")
	famBuildInfo         = family("pgfront_build_info", "gauge", "1, labelled with the running binary's version, VCS revision and Go release (one series).", "version", "revision", "goversion")
	famFleetPeers        = family("pgfront_fleet_peers", "gauge", "Peer instances this one forwards CancelRequests it does not own to, by where they come from: config (fleet.peers), dns (fleet.dns_peers), dcs/<cluster> (Patroni's DCS). The config series is always there.", "source")
	famPeerProblems      = family("pgfront_peer_cancel_problems_total", "counter", "Peer cancel requests (the fleet's channel between instances) not handled, by problem: dropped_sending and dropped_receiving (over the in-flight bound), refused (bad signature, stale timestamp or malformed body).", "problem")
	famTLSCertExpiry     = family("pgfront_tls_certificate_expiry_timestamp_seconds", "gauge", "Unix time the certificate a route serves TLS clients expires (its NotAfter), with its file and subject; a reloaded file shows at once.", "route", "file", "subject")
	famQueueWait         = family("pgfront_queue_wait_seconds", "histogram", "Time clients waited in the queue, admitted or not.", "route")
	famQueryDuration     = family("pgfront_query_duration_seconds", "histogram", "From the message that started a query to its ReadyForQuery.", "route")
	famTxDuration        = family("pgfront_transaction_duration_seconds", "histogram", "From the first query after an idle point to ReadyForQuery 'I'.", "route")
	famCheckDuration     = family("pgfront_server_check_duration_seconds", "histogram", "Health check duration.", "cluster", "server")
)

func (f *Family) desc() *prometheus.Desc {
	return prometheus.NewDesc(f.Name, f.Help, f.Labels, nil)
}

func (f *Family) counterVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: f.Name, Help: f.Help}, f.Labels)
}

func (f *Family) gaugeVec() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: f.Name, Help: f.Help}, f.Labels)
}

func (f *Family) histogramVec(buckets []float64) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: f.Name, Help: f.Help, Buckets: buckets}, f.Labels)
}

// Buckets: queries and transactions from 100µs to ~100s; queue waits and checks from 1ms.
var (
	latencyBuckets = prometheus.ExponentialBuckets(0.0001, 4, 11)  // 100µs .. 105s
	waitBuckets    = prometheus.ExponentialBuckets(0.001, 2.5, 12) // 1ms .. 24s
)
