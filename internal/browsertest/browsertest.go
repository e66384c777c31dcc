// Package browsertest owns the headless browser that tests of pgfront's web pages drive: one
// Debian chromium per test, started through chromedp and stopped at test cleanup with no
// goroutine or process left behind.
//
//	func TestPage(t *testing.T) {
//		ctx := browsertest.New(t)
//		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
//			t.Fatal(err)
//		}
//	}
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultPath is where Debian's chromium package installs the browser; $PGFRONT_CHROMIUM
// overrides it.
const DefaultPath = "/usr/bin/chromium"

// stopTimeout bounds the graceful close of the browser at cleanup; after it the browser is
// killed. Generous: the test machine is small and shared.
const stopTimeout = 20 * time.Second

// startTimeout bounds starting the browser and opening its first tab.
const startTimeout = 60 * time.Second

// New starts a headless Debian chromium (chromedp) for one test and returns a context to run
// chromedp actions in; the browser is stopped at test cleanup, with no goroutine or process
// left behind. Skips the test (naming the `chromium` package) when no browser is installed.
//
// The returned context carries no deadline (a deadline on the context of the first action
// would stop the browser with it); bound each action with context.WithTimeout on a child, or
// with the timeouts of chromedp.Poll.
func New(t testing.TB) context.Context {
	t.Helper()
	path := os.Getenv("PGFRONT_CHROMIUM")
	if path == "" {
		path = DefaultPath
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Skipf("no browser at %s (install the Debian package `chromium`, or set PGFRONT_CHROMIUM): %v", path, err)
	}

	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // chromium refuses to run as root with its sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
	)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(discardf), chromedp.WithErrorf(discardf))

	var (
		proc *os.Process
		tabs map[int]bool // goroutines of this browser's tab event loop
	)
	t.Cleanup(func() {
		stop(t, ctx, cancel, allocCancel, proc, tabs)
	})

	// Start the browser and its tab now, on ctx itself: the first action binds the browser's
	// life to its context. A hung start is cut by killing the browser (cancel), not by a
	// deadline on ctx.
	before := tabGoroutines()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting chromium %s: %v", path, err)
		}
	case <-time.After(startTimeout):
		cancel()
		<-started
		t.Fatalf("starting chromium %s: no tab after %v", path, startTimeout)
	}
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil {
		proc = c.Browser.Process()
	}
	tabs = tabGoroutines()
	for id := range before {
		delete(tabs, id)
	}
	return ctx
}

// stop closes the browser gracefully (bounded by stopTimeout), then cancels every context so
// chromedp kills what is left, and waits for the allocator: allocCancel returns only after
// the browser process has been reaped and its profile directory removed, so no goroutine of
// the allocator outlives the test. It then checks that the browser process is gone, and
// waits for the tab's event-loop goroutines (see waitGone).
func stop(t testing.TB, ctx context.Context, cancel, allocCancel context.CancelFunc, proc *os.Process, tabs map[int]bool) {
	tctx, tcancel := context.WithTimeout(ctx, stopTimeout)
	err := chromedp.Cancel(tctx)
	tcancel()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("closing chromium: %v", err)
	}
	cancel()
	allocCancel()
	if proc != nil {
		// Signal 0 probes for existence; the process was reaped by chromedp's Wait, so the
		// pid is free (or reused by an unrelated process, which this cannot tell apart).
		if err := proc.Signal(syscall.Signal(0)); err == nil {
			t.Errorf("chromium pid %d still running after cleanup", proc.Pid)
		}
	}
	waitGone(t, tabs)
}

// tabGoroutineFunc is chromedp's per-tab event loop. It and the reader goroutine it starts
// return when the context of the tab's first action is cancelled, but chromedp offers no way
// to wait for them, so goleak could catch them on their way out.
const tabGoroutineFunc = "github.com/chromedp/chromedp.(*Target).run"

// tabGoroutines returns the ids of the goroutines running tabGoroutineFunc or started by it.
// Goroutine ids are never reused, so New tells this browser's own by comparing the sets
// before and after the tab opened (a browser started at the same moment by a parallel test
// could be counted too; waitGone then only waits longer).
func tabGoroutines() map[int]bool {
	buf := make([]byte, 256<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	ids := map[int]bool{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, tabGoroutineFunc) {
			continue
		}
		var id int
		if _, err := fmt.Sscanf(g, "goroutine %d ", &id); err == nil {
			ids[id] = true
		}
	}
	return ids
}

// waitGone polls until none of the goroutines ids is running, so the test ends with no
// chromedp goroutine of its own and goleak needs no IgnoreTopFunction. The goroutines
// return at once after the cancellation; the bound only guards against a chromedp change.
func waitGone(t testing.TB, ids map[int]bool) {
	deadline := time.Now().Add(stopTimeout)
	for {
		left := 0
		for id := range tabGoroutines() {
			if ids[id] {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("%d chromedp tab goroutines still running %v after the browser stopped", left, stopTimeout)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// discardf drops chromedp's protocol chatter; failures reach the test through the errors of
// the actions it runs.
func discardf(string, ...any) {}
