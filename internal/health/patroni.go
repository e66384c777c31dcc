package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// maxPatroniBody bounds what is read of a REST API answer; Patroni's are about 1 KB.
const maxPatroniBody = 64 << 10

// PatroniOptions configures a PatroniChecker.
type PatroniOptions struct {
	URL string // http://host:port of the node's REST API
	// Client makes the requests, as given. nil = a client that opens one short connection
	// per request (no keep-alive), never follows redirects and ignores HTTP_PROXY.
	Client *http.Client
	// Now is the clock replay lag is measured with; nil = time.Now.
	Now func() time.Time
}

// PatroniChecker checks a node through Patroni's REST API: GET /patroni, whose JSON says
// the node's state and role; OK only when the state is "running". Roles "master" (Patroni
// before 4.0) and "primary" are RolePrimary; "replica", "sync_standby" and
// "standby_leader" (the leader of a standby cluster replicates too) are RoleReplica; others
// ("demoted", "uninitialized", ...) are RoleUnknown. When the answer is not usable JSON
// (a proxy's error page, a redirect, a body over 64 KB), it falls back to the status codes
// of GET /primary (200: primary) and GET /replica (200: replica). LSN comes from xlog
// location (primary) or replayed_location (replica).
//
// LagSeconds of a replica: 0 when it has replayed all it received (an idle primary writes
// nothing, so there is nothing to be behind on, however old the last replayed transaction),
// else now minus xlog.replayed_timestamp, the commit time of the last transaction it
// replayed, as PostgreSQL's pg_last_xact_replay_timestamp() (so pgfront's clock and the
// primary's should agree within the bound); -1 (unknown) when Patroni gives neither.
//
// The tag noloadbalance (true, or a string such as "true" or "on") sets NoLoadBalance;
// "sync_standby": true (Patroni 3.x), or the role "sync_standby", sets SyncStandby. Its
// methods are safe for concurrent use.
type PatroniChecker struct {
	base      string
	client    *http.Client
	ownClient bool
	now       func() time.Time
}

var _ Checker = (*PatroniChecker)(nil)

// NewPatroni returns a checker of the Patroni node at o.URL.
func NewPatroni(o PatroniOptions) *PatroniChecker {
	c := &PatroniChecker{base: strings.TrimRight(o.URL, "/"), client: o.Client, now: o.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if c.client == nil {
		c.ownClient = true
		c.client = &http.Client{
			Transport: &http.Transport{
				Proxy:                  nil, // straight to the node, whatever the environment says
				DialContext:            (&net.Dialer{}).DialContext,
				DisableKeepAlives:      true,
				MaxResponseHeaderBytes: maxPatroniBody,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c
}

// Check asks the node once; ctx bounds all its requests.
func (c *PatroniChecker) Check(ctx context.Context) Observation {
	start := time.Now()
	obs, err := c.check(ctx)
	if err != nil {
		return failed(err, time.Since(start))
	}
	obs.Duration = time.Since(start)
	return obs
}

func (c *PatroniChecker) check(ctx context.Context) (Observation, error) {
	code, body, err := c.get(ctx, "/patroni")
	if err != nil {
		return Observation{}, err
	}
	st, perr := parsePatroni(body)
	if perr == nil {
		return st.observation(c.now())
	}
	primary, _, err := c.get(ctx, "/primary")
	if err != nil {
		return Observation{}, err
	}
	if primary == http.StatusOK {
		return Observation{OK: true, Role: RolePrimary, LagSeconds: 0}, nil
	}
	replica, _, err := c.get(ctx, "/replica")
	if err != nil {
		return Observation{}, err
	}
	if replica == http.StatusOK {
		return Observation{OK: true, Role: RoleReplica, InRecovery: true, LagSeconds: -1}, nil
	}
	return Observation{}, fmt.Errorf("patroni: /patroni answered %d (%v), /primary %d, /replica %d",
		code, perr, primary, replica)
}

// get requests path and returns the status code and at most maxPatroniBody bytes of the
// body (nil if it is longer).
func (c *PatroniChecker) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req) // a *url.Error, with any password in the URL redacted
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close() // without keep-alive this closes the connection, read to the end or not
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPatroniBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("reading answer to GET %s: %w", path, err)
	}
	if len(body) > maxPatroniBody {
		body = nil
	}
	return resp.StatusCode, body, nil
}

// patroniStatus is the part of GET /patroni's JSON that a check uses.
type patroniStatus struct {
	State       string `json:"state"`
	Role        string `json:"role"`
	SyncStandby bool   `json:"sync_standby"`
	Xlog        struct {
		Location          *uint64 `json:"location"`
		ReceivedLocation  *uint64 `json:"received_location"`
		ReplayedLocation  *uint64 `json:"replayed_location"`
		ReplayedTimestamp *string `json:"replayed_timestamp"`
	} `json:"xlog"`
	Tags struct {
		NoLoadBalance patroniBool `json:"noloadbalance"`
	} `json:"tags"`
}

// patroniBool is a tag's truth as Patroni reads it: a JSON true, or a string such as "true",
// "on", "yes" or "1" (a tag written as a string in patroni.yml). Anything else is false.
type patroniBool bool

// UnmarshalJSON implements json.Unmarshaler; it never fails, so an odd tag does not make the
// whole answer unusable.
func (b *patroniBool) UnmarshalJSON(data []byte) error {
	var v any
	if json.Unmarshal(data, &v) != nil {
		*b = false
		return nil
	}
	switch v := v.(type) {
	case bool:
		*b = patroniBool(v)
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "on", "yes", "1", "y", "t":
			*b = true
		default:
			*b = false
		}
	case float64:
		*b = v != 0
	default:
		*b = false
	}
	return nil
}

// replayedTimestampLayouts are the forms of xlog.replayed_timestamp: Python's str() of a
// datetime (Patroni's JSON encoder), and ISO 8601.
var replayedTimestampLayouts = []string{"2006-01-02 15:04:05.999999999Z07:00", time.RFC3339Nano}

// parseReplayedTimestamp parses xlog.replayed_timestamp; ok is false when it is absent or not
// understood.
func parseReplayedTimestamp(s *string) (time.Time, bool) {
	if s == nil {
		return time.Time{}, false
	}
	for _, layout := range replayedTimestampLayouts {
		if t, err := time.Parse(layout, *s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// parsePatroni decodes body; an error means it is not a usable answer.
func parsePatroni(body []byte) (patroniStatus, error) {
	var st patroniStatus
	if body == nil {
		return st, errors.New("no body or one over 64 KB")
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("decoding JSON: %w", err)
	}
	if st.State == "" {
		return st, errors.New("no state in JSON")
	}
	return st, nil
}

// observation interprets a usable answer at time now.
func (st patroniStatus) observation(now time.Time) (Observation, error) {
	if st.State != "running" {
		return Observation{}, fmt.Errorf("patroni: postgres state %q, role %q", st.State, st.Role)
	}
	obs := Observation{OK: true, LagSeconds: -1, NoLoadBalance: bool(st.Tags.NoLoadBalance)}
	x := st.Xlog
	switch st.Role {
	case "master", "primary":
		obs.Role, obs.LagSeconds = RolePrimary, 0
		if x.Location != nil {
			obs.LSN = *x.Location
		}
	case "replica", "sync_standby", "standby_leader":
		obs.Role, obs.InRecovery = RoleReplica, true
		switch {
		case x.ReplayedLocation != nil:
			obs.LSN = *x.ReplayedLocation
		case x.ReceivedLocation != nil:
			obs.LSN = *x.ReceivedLocation
		}
		obs.SyncStandby = st.SyncStandby || st.Role == "sync_standby"
		if x.ReplayedLocation != nil && x.ReceivedLocation != nil && *x.ReplayedLocation >= *x.ReceivedLocation {
			obs.LagSeconds = 0
		} else if ts, ok := parseReplayedTimestamp(x.ReplayedTimestamp); ok {
			obs.LagSeconds = max(now.Sub(ts).Seconds(), 0)
		}
	}
	return obs, nil
}

// Close releases the client's idle connections (none without keep-alive).
func (c *PatroniChecker) Close() error {
	if c.ownClient {
		c.client.CloseIdleConnections()
	}
	return nil
}
