package browsertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewLoadsPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>probe</title><p id="x">hello</p>` +
			`<script>document.getElementById("x").textContent = "from script"</script>`))
	}))
	defer srv.Close()

	ctx := New(t)
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(actx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("navigating: %v", err)
	}
	title, err := chromedp.Run(actx, chromedp.Title())
	if err != nil || title != "probe" {
		t.Fatalf("title = %q, %v; want probe", title, err)
	}
	text, err := chromedp.Run(actx, chromedp.Text(chromedp.CSS("#x")))
	if err != nil || text != "from script" {
		t.Fatalf("text = %q, %v; want the script's text", text, err)
	}
}

// TestCleanupStopsBrowser runs New in a subtest and checks after the subtest's cleanup that
// the browser process is gone and no chromedp goroutine is left (checked at once, without
// goleak's retries).
func TestCleanupStopsBrowser(t *testing.T) {
	var pid int
	t.Run("browser", func(t *testing.T) {
		ctx := New(t)
		c := chromedp.FromContext(ctx)
		if c == nil || c.Browser == nil || c.Browser.Process() == nil {
			t.Fatal("no browser process after New")
		}
		pid = c.Browser.Process().Pid
	})
	if pid == 0 {
		t.Skip("subtest skipped")
	}
	if alive(pid) {
		t.Fatalf("chromium pid %d alive after cleanup", pid)
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/chromedp/") {
			t.Errorf("goroutine left after cleanup:\n%s", g)
		}
	}
}
