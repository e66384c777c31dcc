package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestQueriesThroughRoute runs ordinary traffic through pgfront: simple and extended queries,
// a large result, COPY in both directions and LISTEN/NOTIFY across two sessions.
func TestQueriesThroughRoute(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.connect("rw")

	var one int
	if err := c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&one); err != nil || one != 42 {
		t.Fatalf("extended query: %v %d", err, one)
	}

	// A large result: 200k rows of 100 bytes, ~20 MB, crosses many relay buffers.
	var n, total int64
	rows, err := c.Query(ctx, "SELECT i, repeat('x', 100) FROM generate_series(1, 200000) i")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var i int64
		var s string
		if err := rows.Scan(&i, &s); err != nil {
			t.Fatal(err)
		}
		n++
		total += int64(len(s))
	}
	if rows.Err() != nil || n != 200000 || total != 200000*100 {
		t.Fatalf("large result: %v rows=%d bytes=%d", rows.Err(), n, total)
	}

	// COPY FROM STDIN and COPY TO STDOUT.
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE t (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	src := make([][]any, 5000)
	for i := range src {
		src[i] = []any{i, strings.Repeat("y", i%50)}
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "v"}, pgx.CopyFromRows(src))
	if err != nil || copied != 5000 {
		t.Fatalf("copy from: %v %d", err, copied)
	}
	var out strings.Builder
	tag, err := c.PgConn().CopyTo(ctx, &out, "COPY t TO STDOUT")
	if err != nil || tag.RowsAffected() != 5000 || strings.Count(out.String(), "\n") != 5000 {
		t.Fatalf("copy to: %v %v lines=%d", err, tag, strings.Count(out.String(), "\n"))
	}

	// LISTEN on one session through pgfront, NOTIFY from another.
	listener := e.connect("rw")
	if _, err := listener.Exec(ctx, "LISTEN pgfront_test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT pg_notify('pgfront_test', 'hello')"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	note, err := listener.WaitForNotification(wctx)
	if err != nil || note.Channel != "pgfront_test" || note.Payload != "hello" {
		t.Fatalf("notification: %v %+v", err, note)
	}

	// A transaction: status T then back to I.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (-1, 'in tx')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = -1").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rollback through proxy: %v %d", err, n)
	}
}
