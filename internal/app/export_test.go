package app

import (
	"context"
	"net/netip"
)

// SetLookupIP replaces how a resolves fleet.dns_peers names; call it before Start.
func SetLookupIP(a *App, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	a.lookupIP = lookup
}
