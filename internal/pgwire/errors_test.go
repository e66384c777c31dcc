package pgwire

import (
	"encoding/binary"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestFatalRoundTrip(t *testing.T) {
	cases := []struct{ code, message, hint string }{
		{CodeTooManyConnections, "sorry, too many clients already", ""},
		{CodeAdminShutdown, "terminating connection due to administrator command", "The server is being drained."},
		{CodeIdleInTransactionTimeout, "terminating connection due to idle-in-transaction timeout", ""},
		{CodeProtocolViolation, "invalid length of startup packet: -1", ""},
		{CodeConnectionFailure, "server lost: ünïcödé", "try again"},
	}
	for _, tc := range cases {
		b := Fatal(tc.code, tc.message, tc.hint)
		if b[0] != 'E' {
			t.Fatalf("type %q, want 'E'", b[0])
		}
		if n := binary.BigEndian.Uint32(b[1:5]); int(n) != len(b)-1 {
			t.Fatalf("length word %d for %d bytes", n, len(b))
		}
		var msg pgproto3.ErrorResponse
		if err := msg.Decode(b[5:]); err != nil {
			t.Fatalf("Decode(Fatal(%q)): %v", tc.message, err)
		}
		if msg.Severity != "FATAL" || msg.SeverityUnlocalized != "FATAL" || msg.Code != tc.code ||
			msg.Message != tc.message || msg.Hint != tc.hint || msg.Detail != "" || len(msg.UnknownFields) > 0 {
			t.Errorf("Fatal(%q, %q, %q) decodes to %+v", tc.code, tc.message, tc.hint, msg)
		}

		// It is one whole message: a client's scanner ends at a boundary with one ErrorResponse.
		s := NewBackendScanner('E')
		var rec recorder
		if err := s.Feed(b, &rec); err != nil || !s.AtBoundary() {
			t.Fatalf("scanning Fatal output: %v, AtBoundary %v", err, s.AtBoundary())
		}
		checkEvents(t, rec.events, []event{{typ: 'E', length: uint32(len(b) - 1)}, {body: true, typ: 'E', data: string(b[5:])}})
	}
}

func TestSQLStateCodes(t *testing.T) {
	valid := regexp.MustCompile(`^[0-9A-Z]{5}$`)
	for _, c := range []string{
		CodeProtocolViolation, CodeConnectionFailure, CodeCannotConnectNow, CodeTooManyConnections,
		CodeAdminShutdown, CodeIdleSessionTimeout, CodeIdleInTransactionTimeout, CodeInvalidAuthorization,
		CodeFeatureNotSupported, CodeInvalidParameterValue, CodeProgramLimitExceeded, CodeQueryCanceled,
		CodeInsufficientResources, CodeConfigurationLimitExceeded,
	} {
		if !valid.MatchString(c) {
			t.Errorf("SQLSTATE %q is not five digits or upper-case letters", c)
		}
	}
}
