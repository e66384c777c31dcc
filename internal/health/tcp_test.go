package health

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTCP(t *testing.T) {
	c := NewTCP(hangingServer(t))
	obs := checkWithin(c, 5*time.Second)
	if !obs.OK || obs.Role != RoleUnknown || obs.LagSeconds != -1 || obs.Err != nil || obs.Duration <= 0 {
		t.Errorf("check of a listening server: %+v", obs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	obs = c.Check(ctx)
	if obs.OK || !errors.Is(obs.Err, context.Canceled) || obs.LagSeconds != -1 {
		t.Errorf("check with a cancelled context: %+v", obs)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}
