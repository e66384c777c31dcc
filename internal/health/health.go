// Package health owns checking PostgreSQL servers: the checkers that look at one server
// (postgres: log in and ask; patroni: ask the node's REST API; tcp: connect only) and the
// Monitor that runs one non-overlapping check loop per server, with a timeout per check,
// rise/fall hysteresis, a faster interval while a server is changing state, and jitter.
// It imports no other pgfront package; the monitor reports what it decides through the
// small Reporter interface.
//
//	m := health.NewMonitor(health.Options{
//		Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
//		Logger: logger, Reporter: pool, // pool.ReportStatus(name, status) updates its servers
//	}, []health.Target{
//		{Name: "pg1", Checker: health.NewPostgres(health.PostgresOptions{
//			Addr: "10.0.0.1:5432", User: "pgfront", Database: "postgres",
//			Password: health.PasswordFromFile("/run/secrets/pgfront"),
//		})},
//		{Name: "pg2", Checker: health.NewPatroni(health.PatroniOptions{URL: "http://10.0.0.2:8008"})},
//	})
//	m.Start()
//	defer m.Stop() // waits for the loops, closes the checkers
//	m.CheckNow("pg1") // e.g. a session found pg1 in recovery: look again at once
//
// # Up, down and roles
//
// Up/down uses hysteresis: a down server needs Rise consecutive successful checks to come
// up, an up server Fall consecutive failures to go down. The first check of a server
// decides its initial state directly (there is nothing to smooth yet). Role changes do
// not wait: a successful check that reports another role than the one learned before
// changes the role at once, because a demoted primary must stop taking writes now, not
// after Rise more checks. A failed check keeps the last learned role, LSN and lag (the
// server is on its way down through Fall, or it stays down).
//
// # Reload
//
// A configuration reload changes a running monitor in place, so that unchanged servers keep
// their state and their check loop and never flap through unknown: AddTarget starts a loop
// that checks at once; RemoveTarget stops one, and once it returns the target is never
// reported again; SetChecker swaps the checker of a loop and keeps its status; SetOptions
// retunes every loop from its next check or wait, keeping each server up or down.
package health

import (
	"context"
	"time"
)

// Role is what a check says a server is.
type Role uint8

// Roles. RoleUnknown is what tcp checks report, and a server's role before any check said.
const (
	RoleUnknown Role = iota
	RolePrimary
	RoleReplica
)

// String returns "unknown", "primary" or "replica".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	}
	return "unknown"
}

// Observation is what one check saw.
type Observation struct {
	OK         bool    // the check succeeded (server reachable and answering)
	Role       Role    // RoleUnknown for tcp checks
	LSN        uint64  // primary: pg_current_wal_lsn(); replica: pg_last_wal_replay_lsn(); 0 unknown
	LagSeconds float64 // replica: seconds behind (0 when replay caught up with receive); -1 unknown
	InRecovery bool    // postgres: pg_is_in_recovery(); patroni: the role is a replica's
	// NoLoadBalance and SyncStandby are what Patroni says of the node (false for other
	// checks): its noloadbalance tag, and that it is a synchronous standby.
	NoLoadBalance, SyncStandby bool
	Err                        error         // why OK is false
	Duration                   time.Duration // how long the check took
}

// failed is the Observation of a check that did not succeed.
func failed(err error, d time.Duration) Observation {
	return Observation{Err: err, LagSeconds: -1, Duration: d}
}

// Checker checks one server. The Monitor calls Check from one goroutine at a time, and
// Close once, after the last Check has returned.
type Checker interface {
	// Check looks at the server once. It must return by ctx's deadline (the monitor's
	// timeout); an Observation returned after it counts as a failure.
	Check(ctx context.Context) Observation
	// Close releases what the checker keeps between checks (postgres: its connection,
	// ended with Terminate).
	Close() error
}

// Status is a server's health as the monitor last decided it.
type Status struct {
	Up         bool
	Role       Role    // learned role (RoleUnknown until a check says)
	LSN        uint64  // from the last successful check; 0 unknown
	LagSeconds float64 // from the last successful check; -1 unknown
	// NoLoadBalance and SyncStandby: from the last successful check (Patroni only).
	NoLoadBalance, SyncStandby bool
	LastCheck                  time.Time
	LastErr                    string // "" when the last check succeeded
	CheckDuration              time.Duration
	// TLSVerifyFailed: the last check failed because the server's TLS certificate did not
	// verify (sslmode verify-ca or verify-full).
	TLSVerifyFailed bool
}

// Reporter receives the monitor's findings.
type Reporter interface {
	// ReportStatus is called after every check (the receiver decides what changed); it
	// must not block for long, nor call the monitor's Stop or RemoveTarget (both wait for
	// the loops). Calls for one target never overlap; calls for different targets may. No
	// call for a target begins or is still running once RemoveTarget of it has returned.
	ReportStatus(target string, st Status)
}

// Target is one server for the monitor to check. Names must be unique within a monitor.
type Target struct {
	Name    string
	Checker Checker
}
