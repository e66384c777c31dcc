package ctl

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
)

// decode reads the API's answer into v.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

// table writes tab-separated rows as aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func printRoutes(w io.Writer, body []byte, _ time.Time) error {
	var routes []admin.Route
	if err := decode(body, &routes); err != nil {
		return err
	}
	t := newTable(w, "NAME", "LISTEN", "CLUSTER", "ROLE", "BALANCE", "SESSIONS", "QUEUED", "TOTAL")
	for _, r := range routes {
		t.row(r.Name, r.Listen, r.Cluster, r.Role, r.Balance, limit(r.Sessions, r.MaxConn),
			strconv.Itoa(r.Queued), strconv.FormatUint(r.Total, 10))
	}
	return t.flush()
}

func printServers(w io.Writer, body []byte, now time.Time) error {
	var servers []admin.Server
	if err := decode(body, &servers); err != nil {
		return err
	}
	t := newTable(w, "SERVER", "ADDRESS", "ROLE", "HEALTH", "ADMIN", "FENCED", "LAG", "LAG_S", "SESSIONS", "CHECKED", "CHECK_MS", "ERROR")
	for _, s := range servers {
		health := "down"
		if s.Up {
			health = "up"
		}
		fenced := ""
		switch {
		case s.SplitBrain:
			fenced = "split_brain"
		case s.Fenced:
			fenced = "fenced"
		}
		lag, lagS := "?", "?"
		if s.LagBytes >= 0 {
			lag = size(s.LagBytes)
		}
		if s.LagSeconds >= 0 {
			lagS = strconv.FormatFloat(s.LagSeconds, 'f', 1, 64)
		}
		checked, checkMS := "never", ""
		if !s.LastCheck.IsZero() {
			checked = duration(now.Sub(s.LastCheck).Seconds()) + " ago"
			checkMS = strconv.FormatFloat(s.CheckMillis, 'f', 1, 64)
		}
		t.row(s.Cluster+"/"+s.Name, s.Address, s.Role, health, s.Admin, fenced, lag, lagS,
			limit(s.Sessions, s.MaxConn), checked, checkMS, oneLine(s.LastError))
	}
	return t.flush()
}

func printSessions(w io.Writer, body []byte, _ time.Time) error {
	var sessions []admin.Session
	if err := decode(body, &sessions); err != nil {
		return err
	}
	t := newTable(w, "ID", "ROUTE", "CLIENT", "SERVER", "USER", "DATABASE", "STATE", "TX", "TLS", "AGE", "IDLE", "IN", "OUT")
	for _, s := range sessions {
		state := s.State
		if s.Parked {
			state += " (parked)"
		}
		idle := ""
		if s.IdleSeconds > 0 {
			idle = duration(s.IdleSeconds)
		}
		if s.HalfClosedSeconds > 0 {
			state += " " + duration(s.HalfClosedSeconds)
		}
		tlsInfo := s.TLS
		if tlsInfo == "" {
			tlsInfo = "-"
		}
		t.row(strconv.FormatUint(s.ID, 10), s.Route, s.Client, s.Server, s.User, s.Database, state, s.TxStatus,
			tlsInfo, duration(s.AgeSeconds), idle, size(s.BytesFromClient), size(s.BytesFromServer))
	}
	return t.flush()
}

// socketStates are the columns of the sockets table, in the order of a connection's life;
// any other state counts under OTHER.
var socketStates = []string{"ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "LAST_ACK", "CLOSING"}

func printSockets(w io.Writer, body []byte, now time.Time) error {
	var s admin.Sockets
	if err := decode(body, &s); err != nil {
		return err
	}
	type key struct{ route, side, server string }
	counts := map[key]map[string]int{}
	for _, c := range s.Counts {
		k := key{c.Route, c.Side, ""}
		if c.Side == "server" {
			k.server = c.Cluster + "/" + c.Server
		}
		if counts[k] == nil {
			counts[k] = map[string]int{}
		}
		state := c.State
		if !slices.Contains(socketStates, state) {
			state = "OTHER"
		}
		counts[k][state] += c.Count
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.route, b.route), cmp.Compare(a.side, b.side), cmp.Compare(a.server, b.server))
	})
	t := newTable(w, append([]string{"ROUTE", "SIDE", "SERVER"}, append(slices.Clone(socketStates), "OTHER")...)...)
	for _, k := range keys {
		cells := []string{k.route, k.side, k.server}
		for _, st := range append(slices.Clone(socketStates), "OTHER") {
			cells = append(cells, strconv.Itoa(counts[k][st]))
		}
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	summary := fmt.Sprintf("half-closed sessions: %d", s.HalfClosed)
	if s.HalfClosed > 0 {
		summary += ", oldest " + duration(s.OldestHalfClosedSeconds)
	}
	if s.SampledAt.IsZero() {
		summary += "; no sample yet"
	} else {
		summary += fmt.Sprintf("; sampled %s ago via %s in %.1f ms", duration(now.Sub(s.SampledAt).Seconds()), s.Source, s.SampleMillis)
	}
	fmt.Fprintln(w, summary)
	if s.Error != "" {
		fmt.Fprintln(w, "sampling error: "+oneLine(s.Error))
	}
	return nil
}

func printAlerts(w io.Writer, body []byte, now time.Time) error {
	var alerts []admin.Alert
	if err := decode(body, &alerts); err != nil {
		return err
	}
	t := newTable(w, "NAME", "STATE", "VALUE", "THRESHOLD", "SINCE", "MESSAGE")
	for _, a := range alerts {
		state, since := "ok", ""
		if a.Active {
			state = "ACTIVE"
			if !a.Since.IsZero() {
				since = duration(now.Sub(a.Since).Seconds())
			}
		}
		t.row(a.Name, state, strconv.FormatFloat(a.Value, 'g', -1, 64), strconv.FormatFloat(a.Threshold, 'g', -1, 64),
			since, oneLine(a.Message))
	}
	return t.flush()
}

// printFleet prints the fleet part of the overview: this instance, then one row per peer.
func printFleet(w io.Writer, body []byte, _ time.Time) error {
	var o admin.Overview
	if err := decode(body, &o); err != nil {
		return err
	}
	f := o.Fleet
	name, secret := f.Name, "set"
	if name == "" {
		name = "-"
	}
	if !f.Secret {
		secret = "none (no peers)"
	}
	if _, err := fmt.Fprintf(w, "fleet %s, key tag %d, secret %s; peer requests dropped %d out / %d in, refused %d\n",
		name, f.Tag, secret, f.DroppedOut, f.DroppedIn, f.Refused); err != nil {
		return err
	}
	t := newTable(w, "PEER", "NAME", "FROM", "TAG")
	for _, p := range f.Peers {
		tag := "?" // not answered yet
		if p.Tag >= 0 {
			tag = strconv.Itoa(p.Tag)
		}
		t.row(p.Addr, p.Name, p.Source, tag) // an empty name prints "-"
	}
	return t.flush()
}

func printIndented(w io.Writer, body []byte, _ time.Time) error {
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(body), "", "  "); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

func printKilled(w io.Writer, body []byte, _ time.Time) error {
	var r struct {
		Killed uint64 `json:"killed"`
	}
	if err := decode(body, &r); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "killed session %d\n", r.Killed)
	return err
}

func printState(w io.Writer, body []byte, _ time.Time) error {
	var r struct {
		Cluster string `json:"cluster"`
		Server  string `json:"server"`
		State   string `json:"state"`
	}
	if err := decode(body, &r); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "server %s/%s is now %s\n", r.Cluster, r.Server, r.State)
	return err
}

// limit is "n/maxconn", or "n/-" without a limit.
func limit(n, maxConn int) string {
	if maxConn <= 0 {
		return strconv.Itoa(n) + "/-"
	}
	return strconv.Itoa(n) + "/" + strconv.Itoa(maxConn)
}

// duration formats seconds for people: 850ms, 12s, 5m03s, 2h05m, 3d04h.
func duration(s float64) string {
	switch {
	case s < 0:
		return "?"
	case s < 1:
		return strconv.Itoa(int(s*1000+0.5)) + "ms"
	}
	n := int64(s)
	switch {
	case n < 60:
		return fmt.Sprintf("%ds", n)
	case n < 3600:
		return fmt.Sprintf("%dm%02ds", n/60, n%60)
	case n < 86400:
		return fmt.Sprintf("%dh%02dm", n/3600, n%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", n/86400, n%86400/3600)
}

// size formats a byte count: 512 B, 1.2 KiB, 34 MiB.
func size(n int64) string {
	if n < 0 {
		return "?"
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " " + units[i]
}

// oneLine keeps a table row on one line (error texts can hold newlines or tabs).
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printReload(w io.Writer, body []byte, _ time.Time) error {
	var r struct {
		Generation uint64   `json:"generation"`
		Hash       string   `json:"hash"`
		Changes    []string `json:"changes"`
	}
	if err := decode(body, &r); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "config reloaded: generation %d (config %s), %d changes\n", r.Generation, r.Hash, len(r.Changes)); err != nil {
		return err
	}
	for _, c := range r.Changes {
		if _, err := fmt.Fprintf(w, "  %s\n", c); err != nil {
			return err
		}
	}
	return nil
}
