package main

// The dcs run (-dcs): pgfront follows Patroni's leader key from etcd (clusters.X.dcs), and
// the bench measures pgfront's own share of the write gap. It watches the leader key itself
// with the etcd client (the moment the DCS shows a new leader) and, for every new holder,
// polls that node directly until it answers pg_is_in_recovery() = false (the moment it is
// writable). pgfront's share runs from the later of the two to the first write through
// pgfront acknowledged by the new leader; the time before is Patroni's.

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgfront/pgfront/internal/patronitest"
)

const (
	probeEvery = time.Millisecond // writable probe of a new leader
	probeFor   = 30 * time.Second
	dcsTarget  = 50 * time.Millisecond
)

// leaderEvent is one change of the leader key seen from the watch, and when its holder was
// first seen writable (zero: not seen, or no holder).
type leaderEvent struct {
	at       time.Time
	leader   string // "" deleted
	writable time.Time
}

type dcsTimeline struct {
	mu     sync.Mutex
	events []*leaderEvent
}

func (d *dcsTimeline) snapshot() []leaderEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]leaderEvent, len(d.events))
	for i, e := range d.events {
		out[i] = *e
	}
	return out
}

// watchDCS follows the leader key until ctx ends; wg counts it and its probes.
func watchDCS(ctx context.Context, c *patronitest.Cluster, key string, wg *sync.WaitGroup) (*dcsTimeline, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.EtcdAddr()}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cli.Get(gctx, key)
	cancel()
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	d := &dcsTimeline{}
	wch := cli.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cli.Close()
		for wr := range wch {
			at := time.Now()
			for _, ev := range wr.Events {
				e := &leaderEvent{at: at}
				if ev.Type == clientv3.EventTypePut {
					e.leader = string(ev.Kv.Value)
				}
				d.mu.Lock()
				d.events = append(d.events, e)
				d.mu.Unlock()
				if n := nodeByName(c, e.leader); n != nil {
					wg.Add(1)
					go func() { defer wg.Done(); probeWritable(ctx, n, e, d) }()
				}
			}
		}
	}()
	return d, nil
}

func nodeByName(c *patronitest.Cluster, name string) *patronitest.Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// probeWritable polls n directly until it is out of recovery and records when.
func probeWritable(ctx context.Context, n *patronitest.Node, e *leaderEvent, d *dcsTimeline) {
	ctx, cancel := context.WithTimeout(ctx, probeFor)
	defer cancel()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			c, err := pgx.Connect(cctx, n.DSN())
			ccancel()
			if err != nil {
				sleepCtx(ctx, 5*time.Millisecond)
				continue
			}
			conn = c
		}
		var rec bool
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		err := conn.QueryRow(qctx, "SELECT pg_is_in_recovery()").Scan(&rec)
		qcancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		if !rec {
			d.mu.Lock()
			e.writable = time.Now()
			d.mu.Unlock()
			return
		}
		sleepCtx(ctx, probeEvery)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// dcsShare splits a scenario's gap for the pgfront writer: Patroni's share (event → the DCS
// shows the new leader and it is writable) and pgfront's (→ the first write through pgfront
// acknowledged by it).
type dcsShare struct {
	dcsAt, writableAt, ackAt time.Time
	patroni, pgfront         time.Duration
	ok                       bool
}

func (b *bench) dcsShare(sc *scenario, events []leaderEvent) dcsShare {
	var s dcsShare
	if sc.new == nil {
		return s
	}
	for _, e := range events {
		if e.at.After(sc.event) && e.leader == sc.new.Name {
			s.dcsAt, s.writableAt = e.at, e.writable
			break
		}
	}
	atts, _ := b.writers[proxyPgfront].snapshot()
	for _, a := range atts {
		if a.ok && a.port == sc.new.PGPort && a.end.After(sc.event) {
			s.ackAt = a.end
			break
		}
	}
	if s.dcsAt.IsZero() || s.writableAt.IsZero() || s.ackAt.IsZero() {
		return s
	}
	ready := s.dcsAt
	if s.writableAt.After(ready) {
		ready = s.writableAt
	}
	s.patroni, s.pgfront, s.ok = ready.Sub(sc.event), s.ackAt.Sub(ready), true
	return s
}

// reportDCS prints each scenario's split of the gap.
func (b *bench) reportDCS(out io.Writer, scs []*scenario) {
	events := b.dcs.snapshot()
	fmt.Fprintf(out, "\ndcs role source: pgfront follows the leader key from etcd (clusters.patroni.dcs), node checks as above\n")
	fmt.Fprintf(out, "  %-11s %-22s %-22s %-22s %12s %12s  %s\n", "scenario", "DCS new leader", "new leader writable", "first ack via pgfront", "Patroni ms", "pgfront ms", "target <= 50 ms")
	for _, sc := range scs {
		s := b.dcsShare(sc, events)
		if !s.ok {
			fmt.Fprintf(out, "  %-11s not measured (dcs %v, writable %v, ack %v)\n", sc.name, !s.dcsAt.IsZero(), !s.writableAt.IsZero(), !s.ackAt.IsZero())
			continue
		}
		fmt.Fprintf(out, "  %-11s %-22s %-22s %-22s %12s %12s  %s\n", sc.name, rel(s.dcsAt, sc.event), rel(s.writableAt, sc.event), rel(s.ackAt, sc.event),
			ms(s.patroni), ms(s.pgfront), verdict(s.pgfront <= dcsTarget))
	}
	fmt.Fprintf(out, "  (times relative to the event; pgfront ms = first ack - max(DCS new leader, writable); Patroni ms = that max - event)\n")
}
