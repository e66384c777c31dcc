package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Scope is what a request may do.
type Scope uint8

const (
	scopeNone Scope = iota
	// ScopeRead may read every GET endpoint and /metrics.
	ScopeRead
	// ScopeAdmin may also act (POST endpoints); it includes ScopeRead.
	ScopeAdmin
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// authenticator maps a request's bearer token to a scope. Tokens are kept only as SHA-256
// digests: comparing digests of equal length in constant time leaks neither the token nor
// its length through timing.
type authenticator struct {
	open       bool // no token configured: every request has the admin scope
	readHash   []byte
	adminHash  []byte
	rejections *rejectLog // shared by the authenticators a token change replaces
}

func newAuthenticator(readToken, adminToken []byte, rejections *rejectLog) *authenticator {
	a := &authenticator{open: len(readToken) == 0 && len(adminToken) == 0, rejections: rejections}
	if len(readToken) > 0 {
		h := sha256.Sum256(readToken)
		a.readHash = h[:]
	}
	if len(adminToken) > 0 {
		h := sha256.Sum256(adminToken)
		a.adminHash = h[:]
	}
	return a
}

// mode names the auth mode for the audit log: "open" without tokens, else "token".
func (a *authenticator) mode() string {
	if a.open {
		return "open"
	}
	return "token"
}

// scopeOf returns the request's scope, or scopeNone and why when its token is missing or
// unknown.
func (a *authenticator) scopeOf(r *http.Request) (Scope, string) {
	if a.open {
		return ScopeAdmin, ""
	}
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		return scopeNone, "missing bearer token"
	}
	h := sha256.Sum256([]byte(token))
	// Compare with both digests, always, so the time taken does not say which one matched.
	isAdmin := a.adminHash != nil && subtle.ConstantTimeCompare(h[:], a.adminHash) == 1
	isRead := a.readHash != nil && subtle.ConstantTimeCompare(h[:], a.readHash) == 1
	switch {
	case isAdmin:
		return ScopeAdmin, ""
	case isRead:
		return ScopeRead, ""
	}
	return scopeNone, "unknown token"
}

// bearerToken extracts the token of an "Authorization: Bearer TOKEN" header; the scheme is
// case-insensitive (RFC 9110).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// scopeKey carries the authenticated scope to handlers.
type scopeKey struct{}

// require wraps h so it runs only for requests with at least scope need: a missing or
// unknown token gets 401, a read token on an admin endpoint 403.
func (s *Listener) require(need Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.auth().open && !loopbackHost(r.Host) {
			// Without tokens the API trusts whoever reaches the loopback listener; a web page
			// that rebinds its own DNS name to 127.0.0.1 reaches it too, but with its own name
			// in Host. Only loopback names and addresses may use the open API.
			s.auth().rejections.note(r, "Host "+r.Host+" is not a loopback name")
			writeError(w, http.StatusForbidden, "without admin tokens only loopback Host names (localhost, 127.0.0.1, [::1]) may use this listener")
			return
		}
		got, why := s.auth().scopeOf(r)
		if got == scopeNone {
			s.auth().rejections.note(r, why)
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgfront"`)
			writeError(w, http.StatusUnauthorized, "token required: "+why)
			return
		}
		if got < need {
			s.auth().rejections.note(r, "read token on an admin endpoint")
			writeError(w, http.StatusForbidden, "this endpoint needs the admin token")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, got)))
	}
}

// who describes the caller for the Backend and the audit log; never the token.
func (s *Listener) who(r *http.Request) string {
	return "remote=" + r.RemoteAddr + " scope=" + s.scopeName(r)
}

// scopeName is "open" when no tokens are configured, else the request's scope.
func (s *Listener) scopeName(r *http.Request) string {
	if s.auth().open {
		return "open"
	}
	scope, _ := r.Context().Value(scopeKey{}).(Scope)
	return scope.String()
}

// rejectLogInterval is the least time between two "auth rejected" lines; a client retrying
// with a bad token must not flood the log.
const rejectLogInterval = 10 * time.Second

// rejectLog logs rejected requests at Warn, at most once per rejectLogInterval, counting the
// ones it suppressed in between.
type rejectLog struct {
	log *slog.Logger
	mu  struct {
		sync.Mutex // guards the fields below
		last       time.Time
		suppressed int
	}
}

func (l *rejectLog) note(r *http.Request, why string) {
	now := time.Now()
	l.mu.Lock()
	if !l.mu.last.IsZero() && now.Sub(l.mu.last) < rejectLogInterval {
		l.mu.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.mu.suppressed
	l.mu.last, l.mu.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("admin auth rejected", "remote", r.RemoteAddr, "method", r.Method,
		"path", r.URL.Path, "reason", why, "suppressed_since_last", suppressed)
}

// loopbackHost reports whether a request's Host (host or host:port) names loopback.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
