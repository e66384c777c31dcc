package fleet

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// The peer channel: POST PeerCancelPath on a peer's admin listener with a small JSON body,
// authenticated by an HMAC-SHA256 of the timestamp and the body under a key derived from the
// fleet secret (not by the admin tokens). A request signed outside ±MaxSkew of the receiver's
// clock is refused.
const (
	PeerCancelPath  = "/api/v1/peer/cancel"
	HeaderTimestamp = "X-Pgfront-Timestamp"
	HeaderSignature = "X-Pgfront-Signature"
	// MaxSkew bounds how far a request's timestamp may be from the receiver's clock.
	MaxSkew = 30 * time.Second
	// MaxBody bounds a peer request's body.
	MaxBody = 1024
	// maxRouteLen bounds the route name a request carries (only logged).
	maxRouteLen = 128
)

// Request is a forwarded CancelRequest.
type Request struct {
	Key   pgwire.CancelKey
	Route string // the route the client sent it to, for the owner's log line
	// From is the sending peer's address as the receiver saw it (not sent: Handler sets it).
	From string
}

// wireRequest is Request's JSON form.
type wireRequest struct {
	PID    uint32 `json:"pid"`
	Secret []byte `json:"secret"` // base64
	Route  string `json:"route"`
}

// Answer is the owner's reply.
type Answer struct {
	// Result is "forwarded" (the owner had the session and cancelled its query) or "unknown".
	Result string `json:"result"`
	// Tag is the answering instance's tag, so the sender learns whom to ask next time.
	Tag int `json:"tag"`
}

// Answer results.
const (
	AnswerForwarded = "forwarded"
	AnswerUnknown   = "unknown"
)

// Errors of DecodeRequest. ErrAuth covers a missing, malformed or wrong signature and a
// timestamp outside the window: the receiver tells the sender no more than that.
var (
	ErrAuth       = errors.New("peer request: authentication failed")
	ErrBadRequest = errors.New("peer request: malformed")
)

// PeerKey is the key that authenticates the peer channel, derived from the fleet secret.
func PeerKey(secret []byte) []byte { return derive(secret, "pgfront peer channel") }

// EncodeRequest returns the body and the two authentication headers of req, signed at now.
func EncodeRequest(authKey []byte, req Request, now time.Time) (body []byte, ts, sig string) {
	body, _ = json.Marshal(wireRequest{PID: req.Key.ProcessID, Secret: []byte(req.Key.Secret), Route: req.Route})
	ts = strconv.FormatInt(now.Unix(), 10)
	return body, ts, sign(authKey, ts, body)
}

// sign is the hex HMAC-SHA256 of ts and body under key.
func sign(key []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts))
	m.Write([]byte{'\n'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// DecodeRequest authenticates and decodes a peer request received at now. The signature is
// checked before anything in the body is parsed.
func DecodeRequest(authKey []byte, ts, sig string, body []byte, now time.Time) (Request, error) {
	if len(authKey) == 0 || len(body) > MaxBody || len(ts) > 20 {
		return Request{}, ErrAuth
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return Request{}, ErrAuth
	}
	want, _ := hex.DecodeString(sign(authKey, ts, body))
	if !hmac.Equal(got, want) {
		return Request{}, ErrAuth
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Request{}, ErrAuth
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return Request{}, ErrAuth
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wireRequest
	if err := dec.Decode(&w); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: trailing data", ErrBadRequest)
	}
	if len(w.Secret) < 4 || len(w.Secret) > 256 {
		return Request{}, fmt.Errorf("%w: secret of %d bytes", ErrBadRequest, len(w.Secret))
	}
	if len(w.Route) > maxRouteLen {
		return Request{}, fmt.Errorf("%w: route name of %d bytes", ErrBadRequest, len(w.Route))
	}
	return Request{Key: pgwire.CancelKey{ProcessID: w.PID, Secret: string(w.Secret)}, Route: w.Route}, nil
}
