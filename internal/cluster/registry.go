package cluster

import (
	"sync"
	"sync/atomic"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// Session is what the registry needs of a live session.
type Session interface {
	// ServerAddr is where the session's server connection goes (for cancel requests).
	ServerAddr() string
}

// Registry tracks live sessions and the backend keys their servers announced, so a
// CancelRequest reaches the one server that holds the session (never the balancer's pick).
// It is safe for concurrent use.
type Registry[S interface {
	Session
	comparable
}] struct {
	mu struct {
		sync.Mutex
		sessions map[S]keyEntry
		keys     map[pgwire.CancelKey]S // backend key -> session
	}
	unknownCancels atomic.Uint64
}

// keyEntry is the backend key a session's server announced, if any.
type keyEntry struct {
	key  pgwire.CancelKey
	have bool
}

// NewRegistry returns an empty registry.
func NewRegistry[S interface {
	Session
	comparable
}]() *Registry[S] {
	r := &Registry[S]{}
	r.mu.sessions = make(map[S]keyEntry)
	r.mu.keys = make(map[pgwire.CancelKey]S)
	return r
}

// Add registers a live session.
func (r *Registry[S]) Add(s S) {
	r.mu.Lock()
	r.mu.sessions[s] = keyEntry{}
	r.mu.Unlock()
}

// Remove forgets a session and its backend key.
func (r *Registry[S]) Remove(s S) {
	r.mu.Lock()
	r.forgetKeyLocked(s)
	delete(r.mu.sessions, s)
	r.mu.Unlock()
}

func (r *Registry[S]) forgetKeyLocked(s S) {
	if e := r.mu.sessions[s]; e.have {
		if cur, ok := r.mu.keys[e.key]; ok && cur == s {
			delete(r.mu.keys, e.key)
		}
	}
}

// SetKey records the backend key of a session's server, replacing an earlier one (a session
// retried on another server).
func (r *Registry[S]) SetKey(s S, key pgwire.CancelKey) {
	r.mu.Lock()
	if _, live := r.mu.sessions[s]; live {
		r.forgetKeyLocked(s)
		r.mu.sessions[s] = keyEntry{key: key, have: true}
		r.mu.keys[key] = s
	}
	r.mu.Unlock()
}

// Lookup finds the session whose server announced key. A miss is counted.
func (r *Registry[S]) Lookup(key pgwire.CancelKey) (S, bool) {
	r.mu.Lock()
	s, ok := r.mu.keys[key]
	r.mu.Unlock()
	if !ok {
		r.unknownCancels.Add(1)
	}
	return s, ok
}

// UnknownCancels is how many cancel requests named no live session.
func (r *Registry[S]) UnknownCancels() uint64 { return r.unknownCancels.Load() }

// Len is the number of live sessions.
func (r *Registry[S]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mu.sessions)
}

// Snapshot returns the live sessions; fn-style iteration would hold the lock across callbacks.
func (r *Registry[S]) Snapshot() []S {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]S, 0, len(r.mu.sessions))
	for s := range r.mu.sessions {
		out = append(out, s)
	}
	return out
}
