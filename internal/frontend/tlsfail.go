package frontend

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/netx"
)

// Results of a client's TLS handshake: the result label of pgfront_tls_handshakes_total and
// the tls_result of the session line.
const (
	TLSResultOK = "ok"
	// TLSResultClientRejectedCertificate: the client refused pgfront's certificate (TLS alert
	// unknown_ca, bad_certificate, certificate_expired, ...): its CA file or pgfront's
	// certificate is wrong.
	TLSResultClientRejectedCertificate = "client_rejected_certificate"
	// TLSResultBadClientCertificate: pgfront refused the client's certificate (client_ca_file).
	TLSResultBadClientCertificate = "bad_client_certificate"
	// TLSResultNoCommonProtocol: no TLS version, cipher suite or ALPN protocol in common.
	TLSResultNoCommonProtocol = "no_common_protocol"
	// TLSResultTimeout: the handshake was not done within timeouts.startup.
	TLSResultTimeout = "timeout"
	// TLSResultClientClosed: the client closed or reset the connection mid-handshake.
	TLSResultClientClosed = "client_closed"
	// TLSResultNotTLS: the client asked for TLS and then sent something else.
	TLSResultNotTLS = "not_tls"
	// TLSResultFailed: any other failure; the session line's err says what.
	TLSResultFailed = "failed"
)

// TLSResults lists every handshake result, for metrics that pre-create their label values.
func TLSResults() []string {
	return []string{TLSResultOK, TLSResultClientRejectedCertificate, TLSResultBadClientCertificate,
		TLSResultNoCommonProtocol, TLSResultTimeout, TLSResultClientClosed, TLSResultNotTLS, TLSResultFailed}
}

// TLS alert descriptions (RFC 8446 6.2) pgfront classifies.
const (
	alertHandshakeFailure       = 40
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertProtocolVersion        = 70
	alertInsufficientSecurity   = 71
	alertNoApplicationProtocol  = 120
)

// TLS record content types.
const (
	recordTypeAlert     = 21
	recordTypeHandshake = 22
)

// alertWatch is the connection a client's TLS handshake runs on: it follows the TLS record
// framing both ways and remembers the last fatal alert sent in plaintext by the client (in)
// and by pgfront (out). crypto/tls reports a received alert only when it could decrypt it:
// OpenSSL (libpq, psql) rejecting pgfront's certificate in TLS 1.3 sends its alert in
// plaintext after pgfront has switched keys, which crypto/tls reports as "bad record MAC".
// Once the handshake is over, stop turns the watch off; the relay then reads and writes
// through it untouched.
type alertWatch struct {
	net.Conn
	in, out alertTracker
}

func newAlertWatch(c net.Conn) *alertWatch {
	return &alertWatch{Conn: c, in: alertTracker{alert: -1}, out: alertTracker{alert: -1}}
}

func (w *alertWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.in.feed(p[:n])
	return n, err
}

func (w *alertWatch) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	w.out.feed(p[:n])
	return n, err
}

// stop turns the watch off; call it before the connection is used by other goroutines.
func (w *alertWatch) stop() { w.in.off, w.out.off = true, true }

// alertTracker follows TLS records in one direction. Not safe for concurrent use: one
// goroutine (the handshake's) feeds it.
type alertTracker struct {
	hdr       [5]byte // the current record's header
	nhdr      int     // header bytes seen
	left      int     // body bytes of the current record still to come
	body      [2]byte // the first body bytes of an alert record
	nbody     int
	alert     int  // description of the last fatal plaintext alert; -1 none
	handshake bool // a whole handshake record went by (pgfront's: its ServerHello was sent)
	off       bool // stopped
}

func (t *alertTracker) feed(p []byte) {
	for len(p) > 0 && !t.off {
		if t.nhdr < len(t.hdr) {
			k := copy(t.hdr[t.nhdr:], p)
			t.nhdr, p = t.nhdr+k, p[k:]
			if t.nhdr == len(t.hdr) {
				t.left, t.nbody = int(t.hdr[3])<<8|int(t.hdr[4]), 0
				if t.left == 0 {
					t.nhdr = 0
				}
			}
			continue
		}
		k := min(len(p), t.left)
		if t.hdr[0] == recordTypeAlert && t.nbody < len(t.body) {
			t.nbody += copy(t.body[t.nbody:], p[:k])
		}
		t.left, p = t.left-k, p[k:]
		if t.left > 0 {
			continue
		}
		// A plaintext alert is two bytes, level and description; an encrypted one is longer
		// (TLS 1.2) or hidden in an application_data record (TLS 1.3).
		plain := t.hdr[0] == recordTypeAlert && int(t.hdr[3])<<8|int(t.hdr[4]) == 2 && t.nbody == 2
		if plain && t.body[0] == 2 { // level fatal
			t.alert = int(t.body[1])
		}
		t.handshake = t.handshake || t.hdr[0] == recordTypeHandshake
		t.nhdr = 0
	}
}

// receivedAlert is the alert crypto/tls received and decrypted from the peer. crypto/tls
// returns it as a *net.OpError "remote error" around its unexported alert type (tls.AlertError
// is for QUIC only), so the type is recognised by its package and kind.
func receivedAlert(err error) (int, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 || v.Type().PkgPath() != "crypto/tls" {
		return 0, false
	}
	return int(v.Uint()), true
}

// alertName is an alert's description as RFC 8446 names it in prose ("unknown certificate
// authority").
func alertName(a int) string {
	return strings.TrimPrefix(tls.AlertError(a).Error(), "tls: ")
}

// handshakeFailure is what is known of a failed handshake with a client.
type handshakeFailure struct {
	err     error
	watch   *alertWatch
	startup time.Duration // timeouts.startup, which bounds the handshake
	// wantCert: the route requires client certificates; peerCerts is how many the client sent.
	wantCert  bool
	peerCerts int
}

// classify says why a client's TLS handshake failed, in an operator's words: the result
// (TLSResults) and the error for the session line.
func (h handshakeFailure) classify() (string, error) {
	err, w := h.err, h.watch
	if netx.IsTimeout(err) {
		return TLSResultTimeout, &boundError{fmt.Sprintf("TLS handshake with the client not done within timeouts.startup (%s)", h.startup), err}
	}
	a, ok := receivedAlert(err)
	if !ok && w.in.alert >= 0 {
		a, ok = w.in.alert, true
	}
	if ok {
		switch a {
		case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateExpired,
			alertCertificateUnknown, alertUnknownCA:
			return TLSResultClientRejectedCertificate, &boundError{fmt.Sprintf(
				"the client rejected pgfront's certificate (TLS alert %d: %s): check the client's CA file (sslrootcert) and the route's cert_file",
				a, alertName(a)), err}
		case alertHandshakeFailure, alertProtocolVersion, alertInsufficientSecurity, alertNoApplicationProtocol:
			return TLSResultNoCommonProtocol, &boundError{fmt.Sprintf(
				"the client found no TLS version, cipher suite or ALPN protocol in common with pgfront (TLS alert %d: %s)",
				a, alertName(a)), err}
		}
		return TLSResultFailed, &boundError{fmt.Sprintf("the client ended the TLS handshake (TLS alert %d: %s)", a, alertName(a)), err}
	}
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &rh):
		return TLSResultNotTLS, &boundError{"the client asked for TLS, then did not send a TLS handshake", err}
	case errors.As(err, &cv):
		return TLSResultBadClientCertificate, &boundError{"pgfront rejected the client's certificate: " + cv.Err.Error(), err}
	case !w.out.handshake && slices.Contains([]int{alertHandshakeFailure, alertProtocolVersion,
		alertInsufficientSecurity, alertNoApplicationProtocol}, w.out.alert):
		// Refused before pgfront's ServerHello: nothing in common.
		return TLSResultNoCommonProtocol, fmt.Errorf("no TLS version, cipher suite or ALPN protocol in common with the client: %w", err)
	case netx.IsEOF(err) || netx.IsReset(err):
		return TLSResultClientClosed, &boundError{"the client closed the connection during the TLS handshake", err}
	case h.wantCert && h.peerCerts == 0 && w.out.handshake:
		// Past pgfront's ServerHello, without a client certificate, on a route that requires
		// one: TLS 1.2 says handshake_failure, TLS 1.3 an encrypted certificate_required.
		return TLSResultBadClientCertificate, fmt.Errorf("pgfront rejected the client's certificate: %w", err)
	}
	return TLSResultFailed, fmt.Errorf("TLS handshake with the client: %w", err)
}
