package app

import (
	"fmt"
	"os"

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
	if g.fleetName == "" {
		if g.fleetName, err = os.Hostname(); err != nil {
			return fmt.Errorf("fleet.name: no name given and the host name is unknown: %w", err)
		}
	}
	for _, p := range fc.Peers {
		g.peers = append(g.peers, fleet.Peer{Addr: p})
	}
	return nil
}

// peerCancel is the admin listener's answer to a peer's forwarded CancelRequest: a session of
// this process, or of the draining predecessor it took over from (a peer restarted for an
// upgrade still owns its old sessions' keys). It never asks the peers back: no loops.
func (a *App) peerCancel(req fleet.Request) bool {
	err := a.frontend.CancelSession(req.Key)
	result := "forwarded"
	switch {
	case err == nil:
	case a.forwardCancel(req.Key):
		result = "forwarded_predecessor"
	default:
		result = "unknown"
	}
	a.log.Info("peer cancel request", "route", req.Route, "result", result)
	return result != "unknown"
}
