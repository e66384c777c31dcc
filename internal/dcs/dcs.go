// Package dcs owns pgfront's view of Patroni's distributed configuration store (etcd v3):
// which member holds the leader key, the members Patroni registered and the synchronous
// standbys. A Watcher reads the scope's keys once, then follows them with a watch from the
// next revision; when the watch breaks or etcd stops answering it says so (View.Known
// false), reads again and watches again, with a bounded backoff.
//
//	w, err := dcs.New(dcs.Options{
//		Endpoints: []string{"127.0.0.1:2379"},
//		Scope:     "pg-main",
//		OnView:    func(v dcs.View) { /* must not block */ },
//	})
//	if err != nil { ... }
//	w.Start()
//	defer w.Stop()
package dcs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultNamespace   = "/service"
	defaultDialTimeout = 2 * time.Second
	defaultProbe       = time.Second
	minBackoff         = 100 * time.Millisecond
	maxBackoff         = 5 * time.Second
)

// Options configures a Watcher.
type Options struct {
	Endpoints []string // host:port or URLs of etcd's client API
	Namespace string   // Patroni's namespace; "" = "/service"
	Scope     string   // Patroni's scope (the cluster name); required
	TLS       *tls.Config
	Username  string
	Password  string
	// DialTimeout bounds connecting and each read; 0 = 2 s.
	DialTimeout time.Duration
	// Probe is how often the watcher asks etcd whether it still answers (a watch on a dead
	// connection says nothing); a probe that fails within DialTimeout ends the watch. 0 = 1 s.
	Probe  time.Duration
	Logger *slog.Logger // nil = discard
	// OnView is told every new view, on the watcher's goroutine, in order. It must not block:
	// the next event waits for it.
	OnView func(View)
}

// View is what the DCS says of the scope at one revision.
type View struct {
	// Known is false when the watcher has no current view: etcd does not answer or the
	// watch broke. The other fields are then empty.
	Known    bool
	Revision int64
	// Leader is the member holding the leader key; "" when nobody does (an election).
	Leader  string
	Members []Member // sorted by name
	Sync    Sync
	Err     error // when !Known: why
}

// Member returns the member named name and whether there is one.
func (v View) Member(name string) (Member, bool) {
	i := slices.IndexFunc(v.Members, func(m Member) bool { return m.Name == name })
	if i < 0 {
		return Member{}, false
	}
	return v.Members[i], true
}

// Prefix returns the key prefix of a scope: "/<namespace>/<scope>/".
func Prefix(namespace, scope string) string {
	if namespace = strings.Trim(namespace, "/"); namespace == "" {
		namespace = strings.Trim(DefaultNamespace, "/")
	}
	return "/" + namespace + "/" + strings.Trim(scope, "/") + "/"
}

// Watcher follows one Patroni scope in etcd. Start and Stop are called once each, from one
// goroutine; Start runs one goroutine (run) until Stop.
type Watcher struct {
	opts    Options
	prefix  string
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
	started bool

	// Owned by run.
	known    bool          // the last report was a view
	reported bool          // anything was reported
	delay    time.Duration // next backoff; 0 = minBackoff
}

// New checks opts and returns a Watcher that has not started.
func New(opts Options) (*Watcher, error) {
	if opts.Scope == "" {
		return nil, errors.New("dcs: scope is required")
	}
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("dcs: no etcd endpoints")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.Probe <= 0 {
		opts.Probe = defaultProbe
	}
	if opts.OnView == nil {
		opts.OnView = func(View) {}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{opts: opts, prefix: Prefix(opts.Namespace, opts.Scope), log: log,
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Prefix is the watched key prefix.
func (w *Watcher) Prefix() string { return w.prefix }

// Start starts following the DCS.
func (w *Watcher) Start() {
	w.started = true
	go w.run()
}

// Stop ends the watcher and waits for its goroutine; OnView is not called after it returns.
func (w *Watcher) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	if w.started {
		<-w.done
	}
}

// ClientConfig is the etcd client configuration for opts; ctx bounds the client's life.
func ClientConfig(ctx context.Context, opts Options) clientv3.Config {
	dt := opts.DialTimeout
	if dt <= 0 {
		dt = defaultDialTimeout
	}
	return clientv3.Config{
		Endpoints:            opts.Endpoints,
		DialTimeout:          dt,
		DialKeepAliveTime:    dt,
		DialKeepAliveTimeout: dt,
		TLS:                  opts.TLS,
		Username:             opts.Username,
		Password:             opts.Password,
		Context:              ctx,
		Logger:               zap.NewNop(),
		PermitWithoutStream:  true,
	}
}

// run is the watcher's goroutine: sessions (read, then watch) until Stop, with a bounded
// backoff between failed ones.
func (w *Watcher) run() {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cancelOnStop(w.stop, ctx, cancel) // ends with run (cancel above) or at Stop
	var cli *clientv3.Client
	for {
		var err error
		if cli == nil {
			cli, err = clientv3.New(ClientConfig(ctx, w.opts))
			if err != nil {
				cli = nil
				err = fmt.Errorf("connecting to etcd: %w", err)
			}
		}
		if cli != nil {
			err = w.session(ctx, cli)
		}
		if ctx.Err() != nil {
			break
		}
		w.lost(err)
		if !w.sleep(ctx, w.backoff()) {
			break
		}
	}
	if cli != nil {
		cli.Close()
	}
}

// session reads the scope's keys, reports the view and follows the watch until it breaks,
// a probe fails or ctx ends.
func (w *Watcher) session(ctx context.Context, cli *clientv3.Client) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	gctx, gcancel := context.WithTimeout(sctx, w.opts.DialTimeout)
	resp, err := cli.Get(gctx, w.prefix, clientv3.WithPrefix())
	gcancel()
	if err != nil {
		return fmt.Errorf("reading %s: %w", w.prefix, err)
	}
	st := newScope(w.prefix)
	for _, kv := range resp.Kvs {
		st.put(kv)
	}
	rev := resp.Header.Revision
	if !w.known {
		w.log.Info("dcs: following the leader key", "prefix", w.prefix, "revision", rev)
	}
	w.known, w.reported, w.delay = true, true, 0
	w.opts.OnView(st.view(rev))

	probed := make(chan struct{})
	go w.probe(sctx, cli, cancel, probed)
	defer func() {
		cancel(nil)
		<-probed
	}()
	wch := cli.Watch(clientv3.WithRequireLeader(sctx), w.prefix, clientv3.WithPrefix(),
		clientv3.WithRev(rev+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if wr.CompactRevision != 0 {
				return fmt.Errorf("watch compacted at revision %d: %w", wr.CompactRevision, err)
			}
			return fmt.Errorf("watching %s: %w", w.prefix, err)
		}
		if wr.Canceled {
			return fmt.Errorf("watching %s: canceled by etcd", w.prefix)
		}
		changed := false
		for _, ev := range wr.Events {
			if st.apply(ev) {
				changed = true
			}
		}
		if changed {
			w.opts.OnView(st.view(wr.Header.Revision))
		}
	}
	if err := context.Cause(sctx); err != nil {
		return err
	}
	return fmt.Errorf("watching %s: watch closed", w.prefix)
}

// probe asks etcd every Probe interval whether it answers (a count of the leader key) and
// ends the session when it does not within DialTimeout. It runs on its own goroutine for the
// life of one session and closes done when it returns.
func (w *Watcher) probe(ctx context.Context, cli *clientv3.Client, end context.CancelCauseFunc, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(w.opts.Probe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, w.opts.DialTimeout)
		_, err := cli.Get(pctx, w.prefix+"leader", clientv3.WithCountOnly())
		cancel()
		if err != nil && ctx.Err() == nil {
			end(fmt.Errorf("etcd not answering: %w", err))
			return
		}
	}
}

// cancelOnStop cancels ctx when stop closes; it returns then or when ctx ends otherwise.
func cancelOnStop(stop <-chan struct{}, ctx context.Context, cancel context.CancelFunc) {
	select {
	case <-stop:
		cancel()
	case <-ctx.Done():
	}
}

// lost reports the loss of the view: the log line and OnView once per loss.
func (w *Watcher) lost(err error) {
	if w.known || !w.reported {
		w.log.Warn("dcs: no current view of the leader; node checks decide", "prefix", w.prefix, "err", err)
		w.opts.OnView(View{Err: err})
	}
	w.known, w.reported = false, true
}

// backoff returns the wait before the next attempt and doubles it, up to maxBackoff.
func (w *Watcher) backoff() time.Duration {
	d := w.delay
	if d == 0 {
		d = minBackoff
	}
	w.delay = min(2*d, maxBackoff)
	return d
}

// sleep waits d or until ctx ends; false when ctx ended.
func (w *Watcher) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// scope is the watched keys' content, as the run goroutine keeps it.
type scope struct {
	prefix  string
	leader  string
	members map[string]Member
	sync    Sync
}

func newScope(prefix string) *scope { return &scope{prefix: prefix, members: map[string]Member{}} }

// put records one key's value and reports whether anything the view shows changed.
func (s *scope) put(kv *mvccpb.KeyValue) bool {
	rel := strings.TrimPrefix(string(kv.Key), s.prefix)
	switch {
	case rel == "leader":
		name := strings.TrimSpace(string(kv.Value))
		changed := name != s.leader
		s.leader = name
		return changed
	case rel == "sync":
		sy, err := ParseSync(kv.Value)
		if err != nil {
			return false
		}
		changed := sy.Leader != s.sync.Leader || !slices.Equal(sy.SyncStandbys, s.sync.SyncStandbys)
		s.sync = sy
		return changed
	case strings.HasPrefix(rel, "members/"):
		name := strings.TrimPrefix(rel, "members/")
		m, err := ParseMember(name, kv.Value)
		if err != nil || name == "" {
			return false
		}
		old, ok := s.members[name]
		s.members[name] = m
		// xlog_location moves on every Patroni loop: not a change of the view.
		old.XLogLoc = m.XLogLoc
		return !ok || old != m
	}
	return false
}

// del forgets one key and reports whether anything the view shows changed.
func (s *scope) del(key []byte) bool {
	rel := strings.TrimPrefix(string(key), s.prefix)
	switch {
	case rel == "leader":
		changed := s.leader != ""
		s.leader = ""
		return changed
	case rel == "sync":
		changed := s.sync.Leader != "" || len(s.sync.SyncStandbys) > 0
		s.sync = Sync{}
		return changed
	case strings.HasPrefix(rel, "members/"):
		name := strings.TrimPrefix(rel, "members/")
		_, ok := s.members[name]
		delete(s.members, name)
		return ok
	}
	return false
}

// apply applies one watch event.
func (s *scope) apply(ev *clientv3.Event) bool {
	if ev.Type == clientv3.EventTypeDelete {
		return s.del(ev.Kv.Key)
	}
	return s.put(ev.Kv)
}

// view is the scope at revision rev.
func (s *scope) view(rev int64) View {
	v := View{Known: true, Revision: rev, Leader: s.leader, Sync: s.sync}
	for _, name := range slices.Sorted(maps.Keys(s.members)) {
		v.Members = append(v.Members, s.members[name])
	}
	v.Sync.SyncStandbys = slices.Clone(s.sync.SyncStandbys)
	return v
}
