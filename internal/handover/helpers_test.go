package handover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait of the tests.
const waitLimit = 20 * time.Second

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "h.sock")
}

func listenTCP(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// tagged serves listeners by answering every connection with its tag and closing it, so a
// client learns which process accepted it.
type tagged struct {
	tag  string
	ls   []Listener
	wg   sync.WaitGroup
	once sync.Once
}

func serveTagged(tag string, ls []Listener) *tagged {
	s := &tagged{tag: tag, ls: ls}
	for _, l := range ls {
		s.wg.Add(1)
		go s.acceptLoop(l.Ln)
	}
	return s
}

func (s *tagged) acceptLoop(ln *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by stop
		}
		c.Write([]byte(s.tag))
		c.Close()
	}
}

// stop closes the listeners, as handedOver or a shutdown would, and waits for the loops.
func (s *tagged) stop() {
	s.once.Do(func() {
		for _, l := range s.ls {
			l.Ln.Close()
		}
		s.wg.Wait()
	})
}

func (s *tagged) addrs() []string {
	var as []string
	for _, l := range s.ls {
		as = append(as, l.Ln.Addr().String())
	}
	return as
}

// dialTag dials addr and returns the tag of the process that accepted the connection.
func dialTag(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("reading the tag: %w", err)
	}
	if len(b) == 0 {
		return "", errors.New("connection closed without a tag")
	}
	return string(b), nil
}

// load dials the addresses in turn without pause from several goroutines, before, during
// and after a hand-over.
type load struct {
	addrs    []string
	warm     chan struct{} // closed after warmDials dials
	warmOnce sync.Once
	after    chan struct{} // closed by the test once the hand-over is complete
	done     chan struct{} // closed when every dialler has returned
	wg       sync.WaitGroup

	// mu guards the results, written by the diallers.
	mu          sync.Mutex
	errs        []error
	before      map[string]int // tags of dials started before after was closed
	afterTags   map[string]int // and of those started after
	total       int
	reachedRest int // diallers that made all their dials after the hand-over
}

const (
	diallers          = 4
	warmDials         = 30
	afterDialsEach    = 25
	maxDialsPerDialer = 5000
)

func startLoad(addrs []string) *load {
	l := &load{
		addrs: addrs, warm: make(chan struct{}), after: make(chan struct{}), done: make(chan struct{}),
		before: map[string]int{}, afterTags: map[string]int{},
	}
	for i := range diallers {
		l.wg.Add(1)
		go l.dialLoop(i)
	}
	go func() {
		l.wg.Wait()
		close(l.done)
	}()
	return l
}

// dialLoop is bounded in dials and time; it stops afterDialsEach dials after the hand-over.
func (l *load) dialLoop(first int) {
	defer l.wg.Done()
	stopAt := time.Now().Add(waitLimit)
	rest := -1
	for i := first; i < first+maxDialsPerDialer && rest != 0 && time.Now().Before(stopAt); i++ {
		handedOver := false
		select {
		case <-l.after:
			handedOver = true
			if rest < 0 {
				rest = afterDialsEach
			}
			rest--
		default:
		}
		addr := l.addrs[i%len(l.addrs)]
		tag, err := dialTag(addr)
		l.mu.Lock()
		l.total++
		switch {
		case err != nil:
			l.errs = append(l.errs, fmt.Errorf("dial to %s: %w", addr, err))
		case handedOver:
			l.afterTags[tag]++
		default:
			l.before[tag]++
		}
		if l.total >= warmDials {
			l.warmOnce.Do(func() { close(l.warm) })
		}
		l.mu.Unlock()
	}
	if rest == 0 {
		l.mu.Lock()
		l.reachedRest++
		l.mu.Unlock()
	}
}

func (l *load) waitWarm(t *testing.T) {
	t.Helper()
	select {
	case <-l.warm:
	case <-l.done:
		t.Fatalf("the diallers stopped early: %v", l.errs)
	case <-time.After(waitLimit):
		t.Fatal("the dialler did not warm up")
	}
}

// check waits for the dialler and checks that no dial failed, that the old process
// served before and only the new one after.
func (l *load) check(t *testing.T, oldTag, newTag string) {
	t.Helper()
	close(l.after)
	<-l.done
	for _, err := range l.errs[:min(len(l.errs), 5)] {
		t.Error(err)
	}
	if len(l.errs) > 0 {
		t.Fatalf("%d of %d dials failed", len(l.errs), l.total)
	}
	if l.reachedRest != diallers {
		t.Fatalf("%d of %d diallers hit their bounds before %d dials after the hand-over", diallers-l.reachedRest, diallers, afterDialsEach)
	}
	if l.before[oldTag] < warmDials {
		t.Errorf("before the hand-over %v, want at least %d from %q", l.before, warmDials, oldTag)
	}
	if len(l.afterTags) != 1 || l.afterTags[newTag] != diallers*afterDialsEach {
		t.Errorf("after the hand-over %v, want %d from %q only", l.afterTags, diallers*afterDialsEach, newTag)
	}
	t.Logf("%d dials, before the hand-over completed %v, after %v", l.total, l.before, l.afterTags)
}

// claimAll claims every received listener by its description.
func claimAll(t *testing.T, tk *Taken) []Listener {
	t.Helper()
	var ls []Listener
	for _, l := range tk.Listeners() {
		ln, ok := tk.Claim(l.Kind, l.Name, l.Config)
		if !ok {
			t.Fatalf("claiming %s %q %s: none", l.Kind, l.Name, l.Config)
		}
		t.Cleanup(func() { ln.Close() })
		ls = append(ls, Listener{Kind: l.Kind, Name: l.Name, Config: l.Config, Ln: ln})
	}
	return ls
}

func takeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkFDs fails the test if it leaves more or fewer descriptors open than it found.
// Call it first, so that its check runs after every other cleanup.
func checkFDs(t *testing.T) {
	t.Helper()
	// The runtime opens its poller's descriptors on first use: warm it up before counting.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := openFDs(t)
	t.Cleanup(func() {
		if after := openFDs(t); !slices.Equal(before, after) {
			t.Errorf("open descriptors changed:\nbefore %s\nafter  %s", strings.Join(before, " "), strings.Join(after, " "))
		}
	})
}

func openFDs(t *testing.T) []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		fds = append(fds, e.Name()+"="+target)
	}
	return fds
}

// recorder is a slog handler that keeps the records, for tests to wait on.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
	changed chan struct{} // closed and replaced on every record
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) logger() *slog.Logger { return slog.New(r) }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// waitFor waits for a record with message msg and returns its "err" attribute.
func (r *recorder) waitFor(t *testing.T, msg string) error {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		r.mu.Lock()
		changed := r.changed
		for _, rec := range r.records {
			if rec.Message != msg {
				continue
			}
			var err error
			rec.Attrs(func(a slog.Attr) bool {
				if a.Key == "err" {
					err, _ = a.Value.Any().(error)
				}
				return true
			})
			r.mu.Unlock()
			return err
		}
		r.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no log record %q in %s", msg, r.dump())
		}
	}
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range r.records {
		fmt.Fprintf(&b, "\n  %s %s", rec.Level, rec.Message)
		rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
	}
	return b.String()
}

// fakeServer answers one hand-over request at path with reply, as a process of another
// version, or a broken one, would.
func fakeServer(t *testing.T, path string, reply func(c *net.UnixConn)) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitLimit))
		buf := make([]byte, 1024)
		if _, err := c.Read(buf); err != nil {
			return
		}
		reply(c)
		c.Read(buf) // until the taker hangs up
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}

// rawDial connects to a hand-over socket without the package's client.
func rawDial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitLimit))
	return c
}
