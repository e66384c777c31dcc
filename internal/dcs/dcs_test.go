package dcs

import (
	"context"
	"crypto/tls"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgfront/pgfront/internal/certtest"
)

func TestParseMember(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       Member
		addr, api  string
		primary    bool
	}{
		{"node1", `{"conn_url":"postgres://10.0.0.1:5433/postgres","api_url":"http://10.0.0.1:8009/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":50331808,"timeline":3,"tags":{"noloadbalance":true,"nofailover":"true","clonefrom":true}}`,
			Member{Name: "node1", ConnURL: "postgres://10.0.0.1:5433/postgres", APIURL: "http://10.0.0.1:8009/patroni", State: "running", Role: "master",
				XLogLoc: 50331808, Timeline: 3, Tags: Tags{NoLoadBalance: true, NoFailover: true}},
			"10.0.0.1:5433", "10.0.0.1:8009", true},
		{"n2", `{"conn_url":"postgres://db2/postgres","api_url":"http://db2/patroni","role":"replica","state":"streaming"}`,
			Member{Name: "n2", ConnURL: "postgres://db2/postgres", APIURL: "http://db2/patroni", State: "streaming", Role: "replica"},
			"db2:5432", "db2:8008", false},
		{"n3", `{"conn_url":"postgres://[::1]:6000/postgres","role":"primary"}`,
			Member{Name: "n3", ConnURL: "postgres://[::1]:6000/postgres", Role: "primary"}, "[::1]:6000", "", true},
	} {
		m, err := ParseMember(tc.name, []byte(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, m, tc.want)
		}
		if m.Addr() != tc.addr || m.APIAddr() != tc.api || m.Primary() != tc.primary {
			t.Errorf("%s: addr %q api %q primary %v", tc.name, m.Addr(), m.APIAddr(), m.Primary())
		}
	}
	if _, err := ParseMember("x", []byte("not json")); err == nil {
		t.Error("bad JSON parsed")
	}
}

func TestParseSync(t *testing.T) {
	for in, want := range map[string]Sync{
		`{"leader":"a","sync_standby":"c,b"}`: {Leader: "a", SyncStandbys: []string{"b", "c"}},
		`{"leader":"a","sync_standby":null}`:  {Leader: "a"},
		`{"leader":null}`:                     {},
		`{"leader":"a","sync_standby":["b"]}`: {Leader: "a", SyncStandbys: []string{"b"}},
	} {
		got, err := ParseSync([]byte(in))
		if err != nil || got.Leader != want.Leader || !slices.Equal(got.SyncStandbys, want.SyncStandbys) {
			t.Errorf("%s: got %+v %v, want %+v", in, got, err, want)
		}
	}
}

func TestPrefix(t *testing.T) {
	for _, tc := range [][3]string{{"", "pg", "/service/pg/"}, {"/service/", "pg", "/service/pg/"}, {"db", "x", "/db/x/"}} {
		if got := Prefix(tc[0], tc[1]); got != tc[2] {
			t.Errorf("Prefix(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// views collects a watcher's reports; OnView never blocks (the buffer outlasts any test).
type views chan View

func (vs views) onView(v View) {
	select {
	case vs <- v:
	default:
		panic("views: buffer full")
	}
}

// next waits for a view that satisfies ok, skipping others.
func (vs views) next(t *testing.T, what string, ok func(View) bool) View {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case v := <-vs:
			if ok(v) {
				return v
			}
		case <-timeout:
			t.Fatalf("no view where %s within 20s", what)
		}
	}
}

const member1 = `{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","xlog_location":1}`
const member2 = `{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","xlog_location":1,"tags":{"noloadbalance":true}}`

// TestWatch follows a scope through leader and member changes, the loss of etcd (reported
// once) and its return (read again, watched again).
func TestWatch(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := context.Background()
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, "/service/pg/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("members/node1", member1)
	put("leader", "node1")
	put("config", `{"ttl":30}`)
	put("../other/leader", "x") // another scope: not seen

	vs := make(views, 1000)
	w, err := New(Options{Endpoints: []string{e.Endpoint()}, Scope: "pg", OnView: vs.onView,
		Probe: 100 * time.Millisecond, DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	defer w.Stop()

	v := vs.next(t, "the first read", func(View) bool { return true })
	if !v.Known || v.Leader != "node1" || len(v.Members) != 1 || !v.Members[0].Primary() {
		t.Fatalf("first view %+v", v)
	}
	put("members/node2", member2)
	v = vs.next(t, "node2 joined", func(v View) bool { return len(v.Members) == 2 })
	if m, _ := v.Member("node2"); !m.Tags.NoLoadBalance || m.Addr() != "127.0.0.1:5433" {
		t.Errorf("node2: %+v", m)
	}
	// xlog_location alone is no change; the leader's change is.
	put("members/node2", member2[:len(member2)-len(`"xlog_location":1,"tags":{"noloadbalance":true}}`)]+`"xlog_location":2,"tags":{"noloadbalance":true}}`)
	put("leader", "node2")
	v = vs.next(t, "the new leader", func(View) bool { return true })
	if v.Leader != "node2" {
		t.Errorf("after the leader's change: %+v (a change of xlog_location alone was reported)", v)
	}
	if _, err := cli.Delete(ctx, "/service/pg/leader"); err != nil {
		t.Fatal(err)
	}
	v = vs.next(t, "no leader", func(View) bool { return true })
	if !v.Known || v.Leader != "" {
		t.Errorf("after the leader key's delete: %+v", v)
	}
	put("sync", `{"leader":"node1","sync_standby":"node2"}`)
	vs.next(t, "sync standby node2", func(v View) bool { return slices.Equal(v.Sync.SyncStandbys, []string{"node2"}) })
	if _, err := cli.Delete(ctx, "/service/pg/members/node2"); err != nil {
		t.Fatal(err)
	}
	vs.next(t, "node2 left", func(v View) bool { return len(v.Members) == 1 })

	e.Stop()
	v = vs.next(t, "etcd gone", func(View) bool { return true })
	if v.Known || v.Err == nil {
		t.Fatalf("after etcd stopped: %+v", v)
	}
	e.Start()
	put("leader", "node1")
	v = vs.next(t, "the view again", func(v View) bool { return v.Known && v.Leader == "node1" })
	if len(v.Members) != 1 {
		t.Errorf("after etcd came back: %+v", v)
	}
	// Reported once per loss: nothing unknown between.
	select {
	case v := <-vs:
		if !v.Known {
			t.Errorf("a second loss reported: %+v", v)
		}
	default:
	}
}

// TestWatchUnreachable: a watcher whose etcd never answers reports the loss once and keeps
// trying until Stop.
func TestWatchUnreachable(t *testing.T) {
	vs := make(views, 100)
	w, err := New(Options{Endpoints: []string{"unix://" + t.TempDir() + "/none.sock"}, Scope: "pg", OnView: vs.onView,
		DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	v := vs.next(t, "the loss", func(View) bool { return true })
	if v.Known {
		t.Fatalf("%+v", v)
	}
	w.Stop()
	if len(vs) != 0 {
		t.Errorf("%d more reports of the same loss", len(vs))
	}
}

// TestWatchAuth: with etcd's authentication on, the watcher logs in with its username and
// password; without them it has no view.
func TestWatchAuth(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/service/pg/leader", "node1"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "pgfront"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "pgfront", "/service/pg/", clientv3.GetPrefixRangeEnd("/service/pg/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "pgfront", "s3cret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "pgfront", "pgfront"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	watch := func(user, pw string) View {
		vs := make(views, 100)
		w, err := New(Options{Endpoints: []string{e.Endpoint()}, Scope: "pg", Username: user, Password: pw,
			OnView: vs.onView, DialTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		w.Start()
		defer w.Stop()
		return vs.next(t, "a report", func(View) bool { return true })
	}
	if v := watch("pgfront", "s3cret"); !v.Known || v.Leader != "node1" {
		t.Errorf("with the password: %+v", v)
	}
	if v := watch("pgfront", "wrong"); v.Known {
		t.Errorf("with a wrong password: %+v", v)
	}
	if v := watch("", ""); v.Known {
		t.Errorf("without credentials: %+v", v)
	}
}

// TestWatchTLS: the watcher talks TLS to etcd, verifying its certificate against the CA it
// is given. (A client certificate is plain tls.Config and not tested here: etcd 3.4 with a
// trusted CA checks its own gateway's certificate as a client's, which certtest's
// server-only leaves cannot pass.)
func TestWatchTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := certtest.NewCA("etcd CA")
	if err != nil {
		t.Fatal(err)
	}
	// The client names a unixs:// endpoint's server by its socket file: client.sock.
	srv, err := ca.Issue(certtest.LeafOptions{CommonName: "etcd", Hosts: []string{"localhost", "127.0.0.1", "client.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	srvCrt, srvKey, err := srv.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	other, err := certtest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	e := startEtcdTLS(t, []string{"--cert-file=" + srvCrt, "--key-file=" + srvKey}, clientTLS)
	if _, err := e.Client().Put(context.Background(), "/service/pg/leader", "node2"); err != nil {
		t.Fatal(err)
	}
	watch := func(tc *tls.Config) View {
		vs := make(views, 100)
		w, err := New(Options{Endpoints: []string{e.Endpoint()}, Scope: "pg", TLS: tc, OnView: vs.onView, DialTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		w.Start()
		defer w.Stop()
		return vs.next(t, "a report", func(View) bool { return true })
	}
	if v := watch(clientTLS); !v.Known || v.Leader != "node2" {
		t.Errorf("with etcd's CA: %+v", v)
	}
	if v := watch(&tls.Config{RootCAs: other.Pool(), ServerName: "localhost"}); v.Known {
		t.Errorf("with another CA: %+v", v)
	}
}
