package dcs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PeerOptions configures Peers: the etcd connection (Options; OnView is not used), this
// instance's name and the address it offers its peers.
type PeerOptions struct {
	Options
	Name string // this instance: the key /<namespace>/<scope>/pgfront/<Name>
	Addr string // the key's value, e.g. the admin or peer listener's host:port
	// TTL of the registration's lease: a pgfront that dies leaves the list after it. 0 = 10 s.
	TTL time.Duration
	// OnPeers is told the registered instances (name → address, this one included) after
	// every change, on the Peers goroutine, in order. It must not block. A nil map means the
	// list is not current (etcd unreachable).
	OnPeers func(map[string]string)
}

// Peers registers one pgfront instance in Patroni's DCS, next to the cluster's keys, and
// follows the other instances registered there: discovery for a fleet of pgfront instances
// in front of one Patroni cluster. Start and Stop are called once each, from one goroutine.
type Peers struct {
	opts    PeerOptions
	prefix  string
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
	started bool
	delay   time.Duration // owned by run
	known   bool          // owned by run: the last report was a list (or nothing was reported yet)
}

// PeerPrefix is where pgfront instances register: /<namespace>/<scope>/pgfront/.
func PeerPrefix(namespace, scope string) string { return Prefix(namespace, scope) + "pgfront/" }

// NewPeers checks o and returns Peers that have not started.
func NewPeers(o PeerOptions) (*Peers, error) {
	if o.Name == "" || strings.Contains(o.Name, "/") {
		return nil, fmt.Errorf("dcs peers: name %q: want a non-empty name without '/'", o.Name)
	}
	if o.Scope == "" || len(o.Endpoints) == 0 {
		return nil, errors.New("dcs peers: scope and etcd endpoints are required")
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.OnPeers == nil {
		o.OnPeers = func(map[string]string) {}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Peers{opts: o, prefix: PeerPrefix(o.Namespace, o.Scope), log: log,
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start registers and starts following.
func (p *Peers) Start() {
	p.started = true
	go p.run()
}

// Stop withdraws the registration (revokes its lease, within DialTimeout) and waits for the
// goroutine; OnPeers is not called after it returns.
func (p *Peers) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	if p.started {
		<-p.done
	}
}

// run is the Peers goroutine: sessions until Stop, with a bounded backoff between them.
func (p *Peers) run() {
	defer close(p.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cancelOnStop(p.stop, ctx, cancel) // ends with run (cancel above) or at Stop
	var cli *clientv3.Client
	p.known = true
	for {
		var err error
		if cli == nil {
			if cli, err = clientv3.New(ClientConfig(ctx, p.opts.Options)); err != nil {
				cli = nil
			}
		}
		if cli != nil {
			err = p.session(ctx, cli)
		}
		if ctx.Err() != nil {
			break
		}
		if p.known {
			p.log.Warn("dcs peers: not registered; the peer list is not current", "prefix", p.prefix, "err", err)
			p.opts.OnPeers(nil)
			p.known = false
		}
		d := max(p.delay, minBackoff)
		p.delay = min(2*d, maxBackoff)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	if cli != nil {
		cli.Close()
	}
}

// session registers under a new lease, reads the peers, reports them and follows the
// prefix until the lease's keep-alive or the watch ends, or ctx does. On the way out it
// revokes the lease.
func (p *Peers) session(ctx context.Context, cli *clientv3.Client) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tctx, tcancel := context.WithTimeout(sctx, p.opts.DialTimeout)
	lease, err := cli.Grant(tctx, int64(max(p.opts.TTL/time.Second, 1)))
	tcancel()
	if err != nil {
		return fmt.Errorf("granting a lease: %w", err)
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), p.opts.DialTimeout)
		_, _ = cli.Revoke(rctx, lease.ID) // best effort: otherwise it expires after TTL
		rcancel()
	}()
	key := p.prefix + p.opts.Name
	tctx, tcancel = context.WithTimeout(sctx, p.opts.DialTimeout)
	_, err = cli.Put(tctx, key, p.opts.Addr, clientv3.WithLease(lease.ID))
	if err == nil {
		var resp *clientv3.GetResponse
		resp, err = cli.Get(tctx, p.prefix, clientv3.WithPrefix())
		tcancel()
		if err != nil {
			return fmt.Errorf("reading %s: %w", p.prefix, err)
		}
		keep, err := cli.KeepAlive(sctx, lease.ID)
		if err != nil {
			return fmt.Errorf("keeping the lease alive: %w", err)
		}
		peers := map[string]string{}
		for _, kv := range resp.Kvs {
			peers[strings.TrimPrefix(string(kv.Key), p.prefix)] = string(kv.Value)
		}
		p.delay, p.known = 0, true
		p.log.Info("dcs peers: registered", "key", key, "peers", len(peers))
		p.opts.OnPeers(maps.Clone(peers))
		wch := cli.Watch(clientv3.WithRequireLeader(sctx), p.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for {
			select {
			case _, ok := <-keep:
				if !ok {
					return errors.New("the lease's keep-alive ended")
				}
			case wr, ok := <-wch:
				if !ok {
					return errors.New("the watch ended")
				}
				if err := wr.Err(); err != nil {
					return fmt.Errorf("watching %s: %w", p.prefix, err)
				}
				for _, ev := range wr.Events {
					name := strings.TrimPrefix(string(ev.Kv.Key), p.prefix)
					if ev.Type == clientv3.EventTypeDelete {
						delete(peers, name)
					} else {
						peers[name] = string(ev.Kv.Value)
					}
				}
				if len(wr.Events) > 0 {
					p.opts.OnPeers(maps.Clone(peers))
				}
			}
		}
	}
	tcancel()
	return fmt.Errorf("registering %s: %w", key, err)
}
