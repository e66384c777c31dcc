package admin

import (
	"errors"
	"time"
)

// Backend is what the admin listener reads and acts on; the composition root (internal/app)
// implements it over the running frontend, clusters and observers. Methods are called
// concurrently from HTTP handlers and must be safe for that.
type Backend interface {
	// Overview is everything the stats page shows, in one read.
	Overview() Overview
	Routes() []Route
	Servers() []Server
	// Sessions lists every open session, oldest first.
	Sessions() []Session
	Sockets() Sockets
	Alerts() []Alert
	// Config is the running configuration with every secret redacted, ready for
	// encoding/json.
	Config() any
	// KillSession ends session id now; its client gets FATAL 57P01 saying an administrator
	// ended it. who describes the caller for the audit log. ErrNotFound if there is no such
	// session.
	KillSession(id uint64, who string) error
	// SetServerState sets a server's administrative state: "ready", "drain" (no new
	// sessions; existing ones end at their next transaction boundary) or "maint" (no new
	// sessions; existing ones end now). ErrNotFound for an unknown cluster/server,
	// ErrBadState for another state.
	SetServerState(cluster, server, state, who string) error
	// Reload re-reads the config file and applies it; an invalid file changes nothing and
	// the error (one file:line problem per line) is returned.
	Reload(who string) (ReloadResult, error)
	// NotReady is why pgfront takes no new clients (draining), or "" when it does; /healthz
	// answers 503 with it.
	NotReady() string
}

// ReloadResult describes a successful reload (POST /api/v1/reload).
type ReloadResult struct {
	Generation uint64   `json:"generation"`
	Hash       string   `json:"hash"`
	Changes    []string `json:"changes"` // what the reload changed, one line each
}

// Errors a Backend returns; the API maps them to 404 and 400.
var (
	ErrNotFound = errors.New("not found")
	ErrBadState = errors.New("state must be ready, drain or maint")
)

// Overview is the stats page's data (GET /api/v1/overview).
type Overview struct {
	Now     time.Time `json:"now"`
	Started time.Time `json:"started"` // when pgfront started
	// Sessions open now across routes, the global maxconn (0 = unlimited) and clients
	// waiting in the queue.
	SessionsOpen int `json:"sessions_open"`
	MaxConn      int `json:"maxconn"`
	Queued       int `json:"queued"`

	Routes  []Route  `json:"routes"`
	Servers []Server `json:"servers"`
	// DCS is each cluster's DCS role source (clusters with a dcs section).
	DCS []DCS `json:"dcs"`
	// Fleet is this instance in its fleet: name, key tag and the peers it forwards cancels to.
	Fleet   Fleet   `json:"fleet"`
	Sockets Sockets `json:"sockets"`
	Alerts  []Alert `json:"alerts"` // every configured alert, active or not
	// LiveSessions are the newest open sessions (at most 200), newest first.
	LiveSessions []Session `json:"live_sessions"`
	// Recent are the latest ended sessions (at most 100), newest first.
	Recent []EndedSession `json:"recent"`
	// EndedByCause counts every ended session since start by termination cause.
	EndedByCause map[string]uint64 `json:"ended_by_cause"`
}

// Route is one listener.
type Route struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"` // bound address
	Cluster  string `json:"cluster"`
	Role     string `json:"role"` // primary, replica, any
	Balance  string `json:"balance"`
	Sessions int    `json:"sessions"` // open now (any state)
	MaxConn  int    `json:"maxconn"`  // 0 = unlimited
	Queued   int    `json:"queued"`   // waiting for a slot or a server now
	Total    uint64 `json:"total"`    // accepted since start
}

// Server is one PostgreSQL server as pgfront sees it.
type Server struct {
	Cluster string `json:"cluster"`
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    string `json:"role"` // primary, replica, unknown
	Up      bool   `json:"up"`
	Admin   string `json:"admin"` // ready, drain, maint
	Fenced  bool   `json:"fenced"`
	// SplitBrain: the server claims to be primary while another does too, undecided; primary
	// routes use neither.
	SplitBrain bool `json:"split_brain"`
	// NoLoadBalance and SyncStandby are what Patroni says (tag noloadbalance; a synchronous
	// standby).
	NoLoadBalance bool `json:"noloadbalance"`
	SyncStandby   bool `json:"sync_standby"`
	// Leader is what the cluster's DCS says of the server: leader, not_leader, or unknown
	// (no DCS role source, or its view is not current).
	Leader     string    `json:"leader"`
	LagBytes   int64     `json:"lag_bytes"`   // -1 unknown
	LagSeconds float64   `json:"lag_seconds"` // -1 unknown
	Sessions   int       `json:"sessions"`    // relayed now
	MaxConn    int       `json:"maxconn"`     // 0 = unlimited
	LastCheck  time.Time `json:"last_check"`  // zero: never checked
	// CheckMillis is how long the last health check took.
	CheckMillis float64 `json:"check_ms"`
	LastError   string  `json:"last_error,omitempty"`
}

// DCS is one cluster's DCS role source (Patroni's etcd).
type DCS struct {
	Cluster string `json:"cluster"`
	Prefix  string `json:"prefix"` // the watched keys: /<namespace>/<scope>/
	// Up: the watch is current. False: etcd does not answer or the watch broke, and node
	// checks alone decide roles.
	Up            bool      `json:"up"`
	Since         time.Time `json:"since"`  // of the last change of Up
	Leader        string    `json:"leader"` // member holding the leader key; "" none (or not Up)
	Members       []string  `json:"members"`
	LeaderChanges uint64    `json:"leader_changes"`
	LastError     string    `json:"last_error,omitempty"`
}

// Fleet is this instance's part in a fleet of pgfront instances (cancel requests).
type Fleet struct {
	Name string `json:"name"`
	Tag  int    `json:"tag"` // the owner tag its cancel keys carry
	// Secret: a fleet secret is configured (without one the instance has no peers).
	Secret bool   `json:"secret"`
	Peers  []Peer `json:"peers"`
	// Peer channel counters: requests dropped over the in-flight bound (sent, received)
	// and received requests refused (authentication, decoding).
	DroppedOut uint64 `json:"dropped_out"`
	DroppedIn  uint64 `json:"dropped_in"`
	Refused    uint64 `json:"refused"`
}

// Peer is one peer instance: its admin address, its name when discovered, where it comes
// from ("config" for fleet.peers, "dns" for fleet.dns_peers, "dcs/<cluster>"), and its tag
// (-1 until known).
type Peer struct {
	Addr   string `json:"addr"`
	Name   string `json:"name,omitempty"`
	Source string `json:"source,omitempty"`
	Tag    int    `json:"tag"`
}

// Session is one open client session.
type Session struct {
	ID       uint64 `json:"id"`
	Route    string `json:"route"`
	Client   string `json:"client"` // host:port
	Server   string `json:"server"` // cluster/name, "" before one is chosen
	User     string `json:"user"`
	Database string `json:"database"`
	// ApplicationName is the client's application_name from its StartupMessage.
	ApplicationName string `json:"application_name,omitempty"`
	// State is startup, queued, connecting, login, idle, active, idle_in_transaction,
	// idle_in_failed_transaction, half_closed, or passthrough (TLS relayed blind).
	State    string    `json:"state"`
	TLS      string    `json:"tls,omitempty"` // e.g. "TLS 1.3 sni=db.example.com", "passthrough"
	TxStatus string    `json:"tx_status"`     // I, T, E or "" before login
	Parked   bool      `json:"parked"`        // idle on an event loop: no goroutine, no buffer
	Started  time.Time `json:"started"`
	// AgeSeconds since accept; IdleSeconds since the session last went idle (0 while a query
	// runs); HalfClosedSeconds since one side sent FIN (0 when neither has).
	AgeSeconds        float64 `json:"age_s"`
	IdleSeconds       float64 `json:"idle_s"`
	HalfClosedSeconds float64 `json:"half_closed_s"`
	BytesFromClient   int64   `json:"bytes_from_client"`
	BytesFromServer   int64   `json:"bytes_from_server"`
}

// EndedSession is a session that ended, for the recent list: the record its log line is
// written from.
type EndedSession struct {
	ID              uint64    `json:"id"`
	Route           string    `json:"route"`
	Server          string    `json:"server"` // cluster/name, "" if it never reached one
	Client          string    `json:"client"`
	User            string    `json:"user"`
	Database        string    `json:"database"`
	ApplicationName string    `json:"application_name,omitempty"`
	Cause           string    `json:"cause"`
	Refused         bool      `json:"refused,omitempty"` // pgfront refused it with a FATAL error
	Ended           time.Time `json:"ended"`
	DurationSeconds float64   `json:"duration_s"`
	QueuedSeconds   float64   `json:"queued_s,omitempty"`
	TLS             string    `json:"tls,omitempty"`
	// TLSResult is why the client's TLS handshake failed (client_rejected_certificate, ...).
	TLSResult string `json:"tls_result,omitempty"`
	Fallback  bool   `json:"fallback,omitempty"` // a replica route's session on the primary
	Cancels   int    `json:"cancels,omitempty"`  // queries the client cancelled (CancelRequests forwarded)
	SQLState  string `json:"sqlstate,omitempty"` // the server's, when it refused the login
	Error     string `json:"error,omitempty"`    // what went wrong, in pgfront's words
}

// Sockets is the latest kernel sample of pgfront's own TCP sockets.
type Sockets struct {
	SampledAt    time.Time `json:"sampled_at"` // zero: no sample yet
	Source       string    `json:"source"`     // sock_diag or proc
	SampleMillis float64   `json:"sample_ms"`  // what the sample cost
	Error        string    `json:"error,omitempty"`
	// Counts has one entry per (route, side, server, state) with a non-zero count.
	Counts []SocketCount `json:"counts"`
	// HalfClosed is the number of sessions where one side has sent FIN; OldestHalfClosed
	// the age of the oldest such session in seconds.
	HalfClosed              int     `json:"half_closed"`
	OldestHalfClosedSeconds float64 `json:"oldest_half_closed_s"`
}

// SocketCount is how many of pgfront's sockets are in one TCP state.
type SocketCount struct {
	Route   string `json:"route"`
	Side    string `json:"side"`    // client or server
	Cluster string `json:"cluster"` // server side only
	Server  string `json:"server"`  // server side only
	State   string `json:"state"`   // ESTABLISHED, CLOSE_WAIT, FIN_WAIT2, ...
	Count   int    `json:"count"`
}

// Alert is one built-in alert.
type Alert struct {
	Name      string    `json:"name"` // close_wait, fin_wait2, half_closed_age, queue, fd_usage
	Active    bool      `json:"active"`
	Since     time.Time `json:"since,omitzero"` // when it became active
	Value     float64   `json:"value"`          // the latest value checked
	Threshold float64   `json:"threshold"`
	Message   string    `json:"message"` // what it means, for people
}
