package dcs

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Member is one Patroni member as its key under members/ describes it.
type Member struct {
	Name     string // the member name: the last element of its key
	ConnURL  string // postgres://host:port/dbname
	APIURL   string // http://host:port/patroni
	State    string // "running", "starting", "stopped", ...
	Role     string // "master" or "primary" (the leader), "replica", "standby_leader", ...
	XLogLoc  int64  // xlog_location: the WAL position Patroni last reported
	Timeline int
	Tags     Tags
}

// Tags are the Patroni tags pgfront acts on.
type Tags struct {
	NoLoadBalance bool
	NoFailover    bool
}

// Addr returns the host:port of the member's conn_url (port 5432 when it names none), or ""
// when conn_url does not parse.
func (m Member) Addr() string { return urlHostPort(m.ConnURL, "5432") }

// APIAddr returns the host:port of the member's api_url, or "".
func (m Member) APIAddr() string { return urlHostPort(m.APIURL, "8008") }

// Primary reports whether the member says it runs as the primary.
func (m Member) Primary() bool { return m.Role == "master" || m.Role == "primary" }

// Replica reports whether the member says it runs as a replica.
func (m Member) Replica() bool { return m.Role == "replica" || m.Role == "sync_standby" }

func urlHostPort(s, defPort string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), defPort)
	}
	return u.Host
}

// memberJSON is the value Patroni writes to members/<name>.
type memberJSON struct {
	ConnURL  string          `json:"conn_url"`
	APIURL   string          `json:"api_url"`
	State    string          `json:"state"`
	Role     string          `json:"role"`
	XLogLoc  json.RawMessage `json:"xlog_location"`
	Timeline json.RawMessage `json:"timeline"`
	Tags     map[string]any  `json:"tags"`
}

// ParseMember parses a member key's value. Unknown fields are ignored: Patroni adds fields
// between versions.
func ParseMember(name string, value []byte) (Member, error) {
	var j memberJSON
	if err := json.Unmarshal(value, &j); err != nil {
		return Member{}, fmt.Errorf("parsing member %s: %w", name, err)
	}
	m := Member{Name: name, ConnURL: j.ConnURL, APIURL: j.APIURL, State: j.State, Role: j.Role}
	var n json.Number
	if json.Unmarshal(j.XLogLoc, &n) == nil {
		m.XLogLoc, _ = n.Int64()
	}
	if json.Unmarshal(j.Timeline, &n) == nil {
		t, _ := n.Int64()
		m.Timeline = int(t)
	}
	m.Tags.NoLoadBalance = truthy(j.Tags["noloadbalance"])
	m.Tags.NoFailover = truthy(j.Tags["nofailover"])
	return m, nil
}

// truthy reads a Patroni tag value: true, "true", "on", "yes", 1.
func truthy(v any) bool {
	switch t := v.(type) {
	case bool:
		return t
	case float64:
		return t != 0
	case string:
		switch strings.ToLower(t) {
		case "true", "on", "yes", "1":
			return true
		}
	}
	return false
}

// Sync is the content of the sync key: the leader and its synchronous standbys.
type Sync struct {
	Leader       string
	SyncStandbys []string
}

// ParseSync parses the sync key's value: {"leader": "a", "sync_standby": "b,c"} (Patroni
// writes a comma-separated string, or null).
func ParseSync(value []byte) (Sync, error) {
	var j struct {
		Leader      *string `json:"leader"`
		SyncStandby any     `json:"sync_standby"`
	}
	if err := json.Unmarshal(value, &j); err != nil {
		return Sync{}, fmt.Errorf("parsing sync: %w", err)
	}
	var s Sync
	if j.Leader != nil {
		s.Leader = *j.Leader
	}
	switch v := j.SyncStandby.(type) {
	case string:
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				s.SyncStandbys = append(s.SyncStandbys, name)
			}
		}
	case []any:
		for _, x := range v {
			if name, ok := x.(string); ok && name != "" {
				s.SyncStandbys = append(s.SyncStandbys, name)
			}
		}
	}
	slices.Sort(s.SyncStandbys)
	return s, nil
}
