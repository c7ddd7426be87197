package admin_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

var bg = context.Background()

// testRedis returns the Redis server named by CACHEME_TEST_REDIS when it is
// set (the test fails if it is unreachable), otherwise a miniredis.
func testRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	c, _ := testenv.Redis(t)
	return c
}

// newPlugin returns a plugin with a random prefix of its own, so that tests
// sharing a real Redis never see each other's keys.
func newPlugin(t *testing.T) *cacheme.Plugin {
	t.Helper()
	p, err := cacheme.New(cacheme.Settings{
		Redis:  testRedis(t),
		Prefix: testenv.Prefix(),
		TTL:    time.Minute,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// testDB is one database with the migrations applied.
type testDB struct {
	name    string
	db      *sql.DB
	dialect string
}

// testDBs returns a SQLite file in the test's temp dir and, when
// CACHEME_TEST_POSTGRES is set, a fresh schema on that server (dropped
// afterwards; the test fails if the server is unreachable). Both have the
// migrations applied.
func testDBs(t *testing.T) []testDB {
	t.Helper()
	var dbs []testDB
	for _, d := range testenv.SQLDBs(t) {
		if err := migrations.Up(bg, d.DB, d.Dialect); err != nil {
			t.Fatalf("%s: migrations.Up: %v", d.Name, err)
		}
		dbs = append(dbs, testDB{d.Name, d.DB, d.Dialect})
	}
	return dbs
}

func sqliteDB(t *testing.T) *sql.DB { return testenv.SQLite(t) }

// counter is a function to memoize that returns how often it ran.
type counter struct{ n atomic.Int64 }

func (c *counter) fn(context.Context, int) (int64, error) { return c.n.Add(1), nil }

// wrap memoizes c.fn under tag with keys "<tag>:<arg>" and, if groups is
// set, the invalidation groups it returns.
func wrap(t *testing.T, p *cacheme.Plugin, tag string, c *counter, groups func(int) []string) func(context.Context, int) (int64, error) {
	t.Helper()
	spec := cacheme.Spec[int, int64]{
		Key: func(a int) string { return tag + ":" + itoa(a) },
		Tag: tag,
	}
	if groups != nil {
		spec.InvalidKeys = func(a int, _ int64) []string { return groups(a) }
	}
	f, err := cacheme.Wrap(p, spec, c.fn)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return f
}

func itoa(i int) string { return strconv.Itoa(i) }

// call calls f(a) and checks the result.
func call(t *testing.T, f func(context.Context, int) (int64, error), a int, want int64) {
	t.Helper()
	got, err := f(bg, a)
	if err != nil || got != want {
		t.Fatalf("f(%d) = %d, %v; want %d, nil", a, got, err, want)
	}
}

// get serves a GET of target.
func get(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

// post serves a same-origin form POST, as a browser sends it from the page.
func post(h http.Handler, target string, form url.Values, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", "http://"+req.Host)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func form(kind, target string) url.Values { return url.Values{"kind": {kind}, "target": {target}} }

// logRow is one row of cacheme_invalidations.
type logRow struct {
	Actor, Kind, Target string
	Entries             int
}

// readLog returns the log, oldest first.
func readLog(t *testing.T, db *sql.DB) []logRow {
	t.Helper()
	rows, err := db.QueryContext(bg, "SELECT actor, kind, target, entries FROM cacheme_invalidations ORDER BY id")
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	defer rows.Close()
	var out []logRow
	for rows.Next() {
		var r logRow
		if err := rows.Scan(&r.Actor, &r.Kind, &r.Target, &r.Entries); err != nil {
			t.Fatalf("read log: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read log: %v", err)
	}
	return out
}
