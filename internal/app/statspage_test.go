package app_test

// The stats page in a real headless browser, in front of a real pgfront and PostgreSQL: it
// shows a session the test opens, the CLOSE_WAIT alert the test provokes, and the session's
// termination with its cause — all without reloading the page.

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/browsertest"
	"github.com/pgfront/pgfront/internal/pgtest"
)

func TestStatsPageInBrowser(t *testing.T) {
	ctx := browsertest.New(t)
	p := pgtest.NewPrimary(t, nil)
	// A long client_fin keeps the half-closed session (and its CLOSE_WAIT) while the page is
	// checked; the client's own close then ends it.
	e := startProxy(t, oneServerConfig(p, "timeouts:\n  client_fin: 60s\n", fastAlerts))
	url := "http://" + e.app.AdminAddr().String() + "/"

	poll := func(what, expr string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
		if err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("page never showed %s (%s): %v\npage text:\n%s", what, expr, err, body)
		}
	}

	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__sameDocument = 1`)); err != nil {
		t.Fatal(err)
	}

	hc := hcDial(t, e, "rw")
	var id uint64
	var list []admin.Session
	e.api("GET", "/api/v1/sessions", "", nil, &list)
	for _, s := range list {
		if s.Client == hc.local().String() {
			id = s.ID
		}
	}
	if id == 0 {
		t.Fatalf("the raw client's session is not listed: %+v", list)
	}
	poll("the open session", fmt.Sprintf(`document.querySelector('tr[data-session-id="%d"]') !== null`, id))

	// The server ends the session; the client stays: pgfront's server side is in CLOSE_WAIT.
	hcTerminateBackend(t, p, hc.pid)
	poll("the close_wait alert", `(() => { const li = document.querySelector('li[data-alert="close_wait"]');
		return li !== null && li.offsetParent !== null; })()`)
	poll("a highlighted CLOSE_WAIT count", `document.querySelector('td.hot[data-state="CLOSE_WAIT"]') !== null`)

	// The client reads the server's FATAL and closes: the session ends and shows among the
	// recent terminations.
	hc.readToEOF()
	_ = hc.conn.Close()
	poll("the ended session with its cause", fmt.Sprintf(`(() => {
		const td = document.querySelector('tr[data-ended-id="%d"] td.cause');
		return td !== null && td.textContent === "server_eof"; })()`, id))
	poll("the session gone from the live table", fmt.Sprintf(`document.querySelector('tr[data-session-id="%d"]') === null`, id))
	poll("the alert cleared", `document.querySelector('li[data-alert="close_wait"]') === null`)
	poll("the same document (no reload)", `window.__sameDocument === 1`)
}
