// Package cluster owns the runtime picture of the PostgreSQL servers behind pgfront: each
// server's address, role and load, the clusters they form, and the registry of live sessions
// that cancel requests, shutdown and administrators act on.
package cluster

import (
	"fmt"
	"sync/atomic"

	"github.com/pgfront/pgfront/internal/admission"
)

// Role is what a server does in its cluster, and what a route asks for.
type Role uint8

// Roles. RoleAny is only meaningful for routes.
const (
	RolePrimary Role = iota + 1
	RoleReplica
	RoleAny
)

// ParseRole parses "primary", "replica" or "any".
func ParseRole(s string) (Role, error) {
	switch s {
	case "primary":
		return RolePrimary, nil
	case "replica":
		return RoleReplica, nil
	case "any":
		return RoleAny, nil
	}
	return 0, fmt.Errorf("unknown role %q", s)
}

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	case RoleAny:
		return "any"
	}
	return "unknown"
}

// Server is one PostgreSQL endpoint. Its identity fields are set once at start-up; its load
// counters are safe for concurrent use.
type Server struct {
	Cluster string
	Name    string
	Addr    string // host:port
	Role    Role   // static role from the config (health checks will learn it later)
	Weight  int
	Limit   *admission.Limit // the server's maxconn

	active atomic.Int64 // sessions relayed to this server now
}

// Active is the number of sessions on the server now.
func (s *Server) Active() int { return int(s.active.Load()) }

// SessionStarted and SessionEnded keep Active up to date.
func (s *Server) SessionStarted() { s.active.Add(1) }

// SessionEnded is the counterpart of SessionStarted.
func (s *Server) SessionEnded() { s.active.Add(-1) }

// Serves reports whether the server can take sessions of a route with role r.
func (s *Server) Serves(r Role) bool { return r == RoleAny || s.Role == r }

// Cluster is a named set of servers.
type Cluster struct {
	Name    string
	Servers []*Server
}
