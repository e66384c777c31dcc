package patronitest

import (
	"context"
	"testing"
)

// New starts a cluster for the test and cleans it up when the test ends; a failing test
// logs the tail of every log. It skips the test, with Available's message, when the
// packages are missing.
func New(t testing.TB, o Options) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("patronitest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("patronitest: etcd:%s", logTail(c.EtcdLog))
			for _, n := range c.Nodes {
				t.Logf("patronitest: %s:%s", n.Name, logTail(n.LogFile))
			}
		}
		if err := c.Cleanup(); err != nil {
			t.Errorf("patronitest: %v", err)
		}
	})
	return c
}
