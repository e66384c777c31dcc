package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pgfront/pgfront/internal/browsertest"
)

// pollTimeout is how long the page gets to show a change; it polls every second, and the
// machine is small and shared.
const pollTimeout = 30 * time.Second

// waitFor polls the JavaScript predicate until it is true; on timeout it fails the test with
// the predicate's name and the page's main content.
func waitFor(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingTimeout(pollTimeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.outerHTML`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, html)
	}
}

func evalBool(t *testing.T, ctx context.Context, expr string) bool {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// browserContext starts a browser for the test and bounds everything it does.
func browserContext(t *testing.T) context.Context {
	ctx := browsertest.New(t)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPageShowsChangesWithoutReload(t *testing.T) {
	ts := startServer(t, "", "", nil)
	ctx := browserContext(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(ts.base+"/")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	waitFor(t, ctx, "session 7 listed", `!!document.querySelector('#live tr[data-session-id="7"]')`)
	checks := []struct{ what, expr string }{
		{"header sessions", `document.getElementById("sessions").textContent === "1/100"`},
		{"uptime", `document.getElementById("uptime").textContent === "1h30m"`},
		{"route row", `document.querySelector('#routes tr[data-route="rw"]').cells[4].textContent === "1/50"`},
		{"server down badge", `document.querySelector('#servers tr[data-server="main/pg2"] td.down').textContent === "down"`},
		{"server up badge", `document.querySelector('#servers tr[data-server="main/pg1"] td.up').textContent === "up"`},
		// The error text holds markup; it must show as text, not become an element.
		{"escaped error", `(() => { const td = document.querySelector('#servers tr[data-server="main/pg2"] td.err');
			return td.textContent.includes("<b>x</b>") && td.children.length === 0; })()`},
		{"session row", `document.querySelector('#live tr[data-session-id="7"]').textContent.includes("appdb")`},
		{"no active alerts", `document.querySelector("#alerts li.ok").textContent === "no active alerts" && !document.querySelector("#alerts li[data-alert]")`},
		{"recent row", `document.querySelector('#recent tr[data-ended-id="3"] td.cause').textContent === "client_terminate"`},
		{"quiet CLOSE_WAIT", `(() => { const td = document.querySelector('#sockets tr[data-sock="rw|server|main/pg1"] td[data-state="CLOSE_WAIT"]');
			return td.textContent === "0" && !td.classList.contains("hot"); })()`},
		{"no hot cell", `document.querySelectorAll("#sockets td.hot").length === 0`},
		{"socket sample", `document.getElementById("sockinfo").textContent.includes("via sock_diag")`},
		{"no banner", `document.getElementById("banner").hidden`},
		{"fleet line", `document.getElementById("fleet").textContent.startsWith("this instance: pgfront-a (key tag 17)")`},
		{"discovered peer", `document.querySelector('#peers li[data-peer="10.0.0.12:9187"]').textContent === "pgfront-b at 10.0.0.12:9187 (dcs/main), tag 200"`},
		{"peer from DNS", `document.querySelector('#peers li[data-peer="10.0.0.13:9187"]').textContent === "(no name) at 10.0.0.13:9187 (dns), tag not known yet"`},
	}
	for _, c := range checks {
		if !evalBool(t, ctx, c.expr) {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.outerHTML`))
			t.Fatalf("%s: %s is false; page:\n%s", c.what, c.expr, html)
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__marker = 1`)); err != nil {
		t.Fatal(err)
	}

	// Session 7 ends, another starts, an alert fires and CLOSE_WAIT sockets appear.
	ts.backend.update(func(o *Overview) {
		ended := o.LiveSessions[0]
		o.LiveSessions = []Session{{ID: 8, Route: "rw", Client: "127.0.0.1:50001", Server: "main/pg1",
			User: "batch", Database: "appdb", State: "active", TxStatus: "T", AgeSeconds: 1}}
		o.Recent = append([]EndedSession{{ID: ended.ID, Route: ended.Route, Server: ended.Server, Client: ended.Client,
			User: ended.User, Database: ended.Database, Cause: "client_fin_timeout", Ended: o.Now, DurationSeconds: 61}}, o.Recent...)
		o.EndedByCause["client_fin_timeout"] = 1
		o.Alerts[0].Active, o.Alerts[0].Since, o.Alerts[0].Value = true, o.Now.Add(-10*time.Second), 12
		o.Sockets.Counts = append(o.Sockets.Counts,
			SocketCount{Route: "rw", Side: "server", Cluster: "main", Server: "pg1", State: "CLOSE_WAIT", Count: 4})
		o.Sockets.HalfClosed, o.Sockets.OldestHalfClosedSeconds = 4, 42
	})

	waitFor(t, ctx, "session 7 gone, 8 shown", `!document.querySelector('#live tr[data-session-id="7"]') && !!document.querySelector('#live tr[data-session-id="8"]')`)
	waitFor(t, ctx, "session 7 in recent with its cause", `document.querySelector('#recent tr[data-ended-id="7"] td.cause')?.textContent === "client_fin_timeout"`)
	waitFor(t, ctx, "recent newest first", `document.querySelector('#recent tr').getAttribute("data-ended-id") === "7"`)
	waitFor(t, ctx, "count by cause", `document.querySelector('#causes li[data-cause="client_fin_timeout"]')?.textContent === "client_fin_timeout 1"`)
	waitFor(t, ctx, "close_wait alert active", `document.querySelector('#alerts li[data-alert="close_wait"]')?.textContent.startsWith("close_wait: sockets stuck in CLOSE_WAIT") && !document.querySelector("#alerts li.ok")`)
	waitFor(t, ctx, "hot CLOSE_WAIT cell", `(() => { const td = document.querySelector('#sockets tr[data-sock="rw|server|main/pg1"] td[data-state="CLOSE_WAIT"]');
		return td?.textContent === "4" && td.classList.contains("hot"); })()`)
	waitFor(t, ctx, "half-closed summary", `document.getElementById("sockinfo").textContent.includes("half-closed sessions: 4 · oldest 42s")`)

	if !evalBool(t, ctx, `window.__marker === 1`) {
		t.Fatal("the page was reloaded: window.__marker is gone")
	}
	if !evalBool(t, ctx, `document.getElementById("banner").hidden`) {
		t.Fatal("banner shown")
	}
	// Exactly the alert that is active is listed.
	if !evalBool(t, ctx, `document.querySelectorAll("#alerts li").length === 1`) {
		t.Fatal("inactive alerts listed")
	}
}

func TestPageToken(t *testing.T) {
	ts := startServer(t, readToken, adminToken, nil)
	ctx := browserContext(t)

	// Without a token: the page loads (it holds no data) and says a token is required.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.base+"/")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	waitFor(t, ctx, "token banner", `(() => { const b = document.getElementById("banner");
		return !b.hidden && b.textContent.startsWith("token required"); })()`)
	if evalBool(t, ctx, `!!document.querySelector("#live tr[data-session-id]")`) {
		t.Fatal("sessions shown without a token")
	}

	// With ?token=: data shows, the token leaves the address bar and stays for the tab.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.base+"/?token="+readToken+"#top")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	waitFor(t, ctx, "session 7 listed", `!!document.querySelector('#live tr[data-session-id="7"]')`)
	waitFor(t, ctx, "banner gone", `document.getElementById("banner").hidden`)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(loc, "token") || !strings.HasSuffix(loc, "/#top") {
		t.Fatalf("location %q still holds the token (or lost the rest)", loc)
	}
	if !evalBool(t, ctx, `sessionStorage.getItem("pgfront.token") === "`+readToken+`"`) {
		t.Fatal("token not kept in sessionStorage")
	}
	// A reload without ?token= keeps working from sessionStorage.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.base+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "session 7 listed after reload", `!!document.querySelector('#live tr[data-session-id="7"]')`)
}

// In a phone-sized window the page itself does not scroll sideways: wide tables scroll in
// their own boxes.
func TestPageNarrowWindow(t *testing.T) {
	ts := startServer(t, "", "", nil)
	ctx := browserContext(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(360, 740), chromedp.Navigate(ts.base+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "session 7 listed", `!!document.querySelector('#live tr[data-session-id="7"]')`)
	if !evalBool(t, ctx, `document.documentElement.scrollWidth <= window.innerWidth`) {
		w, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		t.Fatalf("page is %dpx wide in a 360px window", w)
	}
}
