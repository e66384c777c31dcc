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
		keys     map[pgwire.CancelKey]S // client-facing backend key -> session
	}
	unknownCancels atomic.Uint64
}

// keyEntry is the backend key a session's client got (key) and the one its server announced
// (server), if any.
type keyEntry struct {
	key, server pgwire.CancelKey
	have        bool
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

// SetKey records the backend key a session's client got (client) and the one its server
// announced (server; they differ when pgfront issues its own secrets), replacing an earlier
// one (a session retried on another server).
func (r *Registry[S]) SetKey(s S, server, client pgwire.CancelKey) {
	r.mu.Lock()
	if _, live := r.mu.sessions[s]; live {
		r.forgetKeyLocked(s)
		r.mu.sessions[s] = keyEntry{key: client, server: server, have: true}
		r.mu.keys[client] = s
	}
	r.mu.Unlock()
}

// HasKey reports whether a live session's client got key (an issuer avoids handing out a key
// twice).
func (r *Registry[S]) HasKey(key pgwire.CancelKey) bool {
	r.mu.Lock()
	_, ok := r.mu.keys[key]
	r.mu.Unlock()
	return ok
}

// Lookup finds the session whose client got key, and the key its server announced, which a
// cancel for it must carry. A miss is counted.
func (r *Registry[S]) Lookup(key pgwire.CancelKey) (s S, server pgwire.CancelKey, ok bool) {
	r.mu.Lock()
	s, ok = r.mu.keys[key]
	if ok {
		server = r.mu.sessions[s].server
	}
	r.mu.Unlock()
	if !ok {
		r.unknownCancels.Add(1)
	}
	return s, server, ok
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
