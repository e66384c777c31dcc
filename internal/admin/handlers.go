package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes builds the server's handler: the mux with every endpoint behind its scope, JSON
// 404/405 for what the mux does not serve, bounded bodies, and cross-origin protection.
func (s *Listener) routes(gatherer prometheus.Gatherer, peerCancel http.Handler) http.Handler {
	mux := http.NewServeMux()
	if peerCancel != nil {
		// The fleet's peers authenticate with the fleet secret, not a bearer token.
		mux.Handle("POST /api/v1/peer/cancel", peerCancel)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if why := s.backend.NotReady(); why != "" {
			// Readiness: a draining pgfront takes no new clients (Kubernetes stops sending).
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, why)
			return
		}
		io.WriteString(w, "ok")
	})
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog:          promLogger{s},
		EnableOpenMetrics: false,
	})
	mux.HandleFunc("GET /metrics", s.require(ScopeRead, metrics.ServeHTTP))

	read := func(path string, get func() any) {
		mux.HandleFunc("GET "+path, s.require(ScopeRead, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, get())
		}))
	}
	b := s.backend
	read("/api/v1/overview", func() any { return normalizeOverview(b.Overview()) })
	read("/api/v1/routes", func() any { return nonNil(b.Routes()) })
	read("/api/v1/servers", func() any { return nonNil(b.Servers()) })
	read("/api/v1/sessions", func() any { return nonNil(b.Sessions()) })
	read("/api/v1/sockets", func() any { return normalizeSockets(b.Sockets()) })
	read("/api/v1/alerts", func() any { return nonNil(b.Alerts()) })
	read("/api/v1/config", func() any { return b.Config() })

	mux.HandleFunc("POST /api/v1/sessions/{id}/kill", s.require(ScopeAdmin, s.killSession))
	mux.HandleFunc("POST /api/v1/servers/{cluster}/{server}/state", s.require(ScopeAdmin, s.setServerState))
	mux.HandleFunc("POST /api/v1/reload", s.require(ScopeAdmin, s.reload))

	// The page and its assets hold no data, so they need no token: the page asks for one.
	mux.HandleFunc("GET /{$}", serveAsset(pageIndex))
	mux.HandleFunc("GET /static/app.js", serveAsset(pageScript))
	mux.HandleFunc("GET /static/style.css", serveAsset(pageStyle))

	// Without tokens (loopback only) any web page the operator visits could POST here;
	// CrossOriginProtection refuses cross-site POSTs by their Sec-Fetch-Site/Origin headers.
	// Bearer tokens are not sent by browsers on their own, so with tokens this is belt and
	// braces.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.auth().rejections.note(r, "cross-origin request")
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return csrf.Handler(jsonFallback{mux})
}

// jsonFallback serves what mux serves, and answers in JSON where the mux would answer its
// plain-text 404 or 405 (keeping the Allow header of a 405). It also bounds request bodies.
type jsonFallback struct{ mux *http.ServeMux }

func (f jsonFallback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if h, pattern := f.mux.Handler(r); pattern == "" {
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		code := rec.code
		if code == 0 || code < 400 {
			code = http.StatusNotFound
		}
		writeError(w, code, strings.ToLower(http.StatusText(code)))
		return
	}
	// ServeHTTP matches again: Handler does not set the request's path values.
	f.mux.ServeHTTP(w, r)
}

// statusRecorder keeps only the header and status of the mux's own 404/405 answers.
type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// killSession is POST /api/v1/sessions/{id}/kill.
func (s *Listener) killSession(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		s.audit(r, "kill_session", "session "+raw, errors.New("bad session id"))
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad session id %q: want a decimal number", raw))
		return
	}
	err = s.backend.KillSession(id, s.who(r))
	s.audit(r, "kill_session", "session "+strconv.FormatUint(id, 10), err)
	if err != nil {
		writeBackendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"killed": id})
}

// stateRequest is the body of POST /api/v1/servers/{cluster}/{server}/state.
type stateRequest struct {
	State string `json:"state"`
}

// stateResponse answers it.
type stateResponse struct {
	Cluster string `json:"cluster"`
	Server  string `json:"server"`
	State   string `json:"state"`
}

// setServerState is POST /api/v1/servers/{cluster}/{server}/state.
func (s *Listener) setServerState(w http.ResponseWriter, r *http.Request) {
	cluster, server := r.PathValue("cluster"), r.PathValue("server")
	target := "server " + cluster + "/" + server
	req, err := decodeStateRequest(r.Body)
	if err != nil {
		s.audit(r, "set_server_state", target, err)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err = s.backend.SetServerState(cluster, server, req.State, s.who(r))
	s.audit(r, "set_server_state", target+" state="+req.State, err)
	if err != nil {
		writeBackendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, stateResponse{Cluster: cluster, Server: server, State: req.State})
}

// decodeStateRequest reads exactly one JSON object with a non-empty "state" and nothing else.
func decodeStateRequest(body io.Reader) (stateRequest, error) {
	var req stateRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, fmt.Errorf("reading body: larger than %d bytes", tooBig.Limit)
		}
		return req, fmt.Errorf(`reading body: want {"state": "ready|drain|maint"}: %w`, err)
	}
	if dec.More() {
		return req, errors.New("reading body: data after the JSON object")
	}
	if req.State == "" {
		return req, errors.New(`reading body: "state" is missing (ready, drain or maint)`)
	}
	return req, nil
}

// audit logs one admin action at Info, whatever its result.
func (s *Listener) audit(r *http.Request, action, target string, err error) {
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	s.log.Info("admin action", "action", action, "target", target, "remote", r.RemoteAddr,
		"scope", s.scopeName(r), "result", result)
}

// writeBackendError maps the Backend's errors to statuses: ErrNotFound 404, ErrBadState 400,
// anything else 500.
func writeBackendError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBadState):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// errorBody is every error response: {"error": "..."}.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// writeJSON writes v as the response. HTML is not escaped: the body is served as
// application/json with nosniff, and the page sets only textContent.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		body.Reset()
		enc.Encode(errorBody{Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(body.Bytes())
}

// nonNil makes a nil list encode as [] rather than null, so clients need no special case.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func normalizeSockets(s Sockets) Sockets {
	s.Counts = nonNil(s.Counts)
	return s
}

func normalizeOverview(o Overview) Overview {
	o.Routes = nonNil(o.Routes)
	o.Servers = nonNil(o.Servers)
	o.DCS = nonNil(o.DCS)
	o.Fleet.Peers = nonNil(o.Fleet.Peers)
	o.Sockets = normalizeSockets(o.Sockets)
	o.Alerts = nonNil(o.Alerts)
	o.LiveSessions = nonNil(o.LiveSessions)
	o.Recent = nonNil(o.Recent)
	if o.EndedByCause == nil {
		o.EndedByCause = map[string]uint64{}
	}
	return o
}

// promLogger sends promhttp's errors to the server's logger.
type promLogger struct{ s *Listener }

func (l promLogger) Println(v ...any) {
	l.s.log.Error("serving metrics", "error", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

// reload re-reads and applies the config file: 200 with what changed, or 422 with every
// problem of an invalid file (nothing changed).
func (s *Listener) reload(w http.ResponseWriter, r *http.Request) {
	res, err := s.backend.Reload(s.who(r))
	s.audit(r, "reload", "config", err)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if res.Changes == nil {
		res.Changes = []string{}
	}
	writeJSON(w, http.StatusOK, res)
}
