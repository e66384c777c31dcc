package pgwire

import "github.com/jackc/pgx/v5/pgproto3"

// SQLSTATE codes pgfront sends (PostgreSQL's errcodes.txt).
const (
	CodeProtocolViolation          = "08P01"
	CodeConnectionFailure          = "08006"
	CodeCannotConnectNow           = "57P03"
	CodeTooManyConnections         = "53300"
	CodeAdminShutdown              = "57P01"
	CodeIdleSessionTimeout         = "57P05"
	CodeIdleInTransactionTimeout   = "25P03"
	CodeInvalidAuthorization       = "28000"
	CodeFeatureNotSupported        = "0A000"
	CodeInvalidParameterValue      = "22023"
	CodeProgramLimitExceeded       = "54000"
	CodeQueryCanceled              = "57014"
	CodeInsufficientResources      = "53000"
	CodeConfigurationLimitExceeded = "53400"
)

// Fatal encodes a FATAL ErrorResponse. Message is what psql prints after "FATAL:"; hint may be
// empty.
func Fatal(code, message, hint string) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                code,
		Message:             message,
		Hint:                hint,
	}
	b, err := msg.Encode(nil)
	if err != nil {
		// Encode fails only for impossible lengths; the messages here are short constants.
		panic(err)
	}
	return b
}
