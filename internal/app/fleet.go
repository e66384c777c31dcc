package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/fleet"
)

// minFleetSecret is the shortest fleet secret accepted: it keys the cancel keys' permutation
// and authenticates the peer channel.
const minFleetSecret = 32

// buildFleet reads the fleet secret and resolves the instance name and static peers into g.
func buildFleet(g *generation, fc config.Fleet) error {
	secret, err := readToken("fleet.secret", fc.SecretFile, fc.SecretEnv)
	if err != nil {
		return err
	}
	if secret != nil && len(secret) < minFleetSecret {
		// The length only: the secret itself is never logged.
		return fmt.Errorf("fleet.secret: %d bytes; at least %d are required", len(secret), minFleetSecret)
	}
	g.fleetSecret = secret
	g.fleetName = fc.Name
	g.advertise = fc.Advertise
	if g.fleetName == "" {
		if g.fleetName, err = os.Hostname(); err != nil {
			return fmt.Errorf("fleet.name: no name given and the host name is unknown: %w", err)
		}
	}
	for _, p := range fc.Peers {
		g.peers = append(g.peers, fleet.Peer{Addr: p})
	}
	g.dnsPeers = fc.DNSPeers
	return nil
}

// peerCancel is the admin listener's answer to a peer's forwarded CancelRequest: a session of
// this process, or of the draining predecessor it took over from (a peer restarted for an
// upgrade still owns its old sessions' keys). It never asks the peers back: no loops.
func (a *App) peerCancel(req fleet.Request) bool {
	start := time.Now()
	log := func(result string, level slog.Level, err error) {
		attrs := []slog.Attr{slog.String("route", req.Route), slog.String("result", result), slog.String("from", req.From),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000)}
		if err != nil {
			attrs = append(attrs, slog.String("err", err.Error()))
		}
		a.log.LogAttrs(context.Background(), level, "peer cancel request", attrs...)
	}
	// The peer is answered once the owner is known; the line is written when the server has
	// taken the cancel (or not).
	err := a.frontend.StartCancel(req.Key, func(err error) {
		if err != nil {
			log("failed", slog.LevelWarn, err) // the session is here; its server did not take the cancel
			return
		}
		log("forwarded", slog.LevelInfo, nil)
	})
	switch {
	case err == nil:
		return true
	case a.forwardCancel(req.Key):
		log("forwarded_predecessor", slog.LevelInfo, nil)
		return true
	}
	log("unknown", slog.LevelInfo, nil)
	return false
}

// fleetStatus is this instance's fleet view for the admin API and the stats page.
func (a *App) fleetStatus() admin.Fleet {
	a.reloadMu.Lock()
	name := a.gen.fleetName
	a.reloadMu.Unlock()
	c := a.fleet.Counters()
	out := admin.Fleet{Name: name, Tag: int(a.fleet.Tag()), Secret: a.fleet.HasSecret(),
		DroppedOut: c.DroppedOut, DroppedIn: c.DroppedIn, Refused: c.Refused}
	for _, p := range a.fleet.PeerStatuses() {
		out.Peers = append(out.Peers, admin.Peer{Addr: p.Addr, Name: p.Name, Source: p.Source, Tag: p.Tag})
	}
	return out
}
