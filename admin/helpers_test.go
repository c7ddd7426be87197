package admin_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
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

// newPluginRedis is newPlugin, also returning its Redis client and, when
// it is one, the miniredis.
func newPluginRedis(t *testing.T) (*cacheme.Plugin, redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	c, m := testenv.Redis(t)
	p := cacheme.New(cacheme.Settings{Redis: c, Prefix: testenv.Prefix(), TTL: time.Minute, StatsInterval: -1})
	if err := p.Err(); err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(bg) })
	return p, c, m
}

// newPlugin returns a plugin with a random prefix of its own, so that tests
// sharing a real Redis never see each other's keys.
func newPlugin(t *testing.T) *cacheme.Plugin {
	t.Helper()
	return newPluginOn(t, testRedis(t), "")
}

// newPluginOn returns a plugin on rdb with prefix (a random one if empty).
// Its counters are published only by PublishStats, so that the pages
// show what the tests publish.
func newPluginOn(t *testing.T, rdb redis.UniversalClient, prefix string) *cacheme.Plugin {
	t.Helper()
	if prefix == "" {
		prefix = testenv.Prefix()
	}
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, TTL: time.Minute, StatsInterval: -1})
	if err := p.Err(); err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(bg) })
	return p
}

// testDBs returns a SQLite file in the test's temp dir and, when
// CACHEME_TEST_POSTGRES is set, a fresh schema on that server (dropped
// afterwards; the test fails if the server is unreachable). Both have the
// migrations applied.
func testDBs(t *testing.T) []testenv.Database {
	t.Helper()
	dbs := testenv.SQLDBs(t)
	for _, d := range dbs {
		if err := migrations.Up(bg, d.DB, d.Dialect); err != nil {
			t.Fatalf("%s: migrations.Up: %v", d.Name, err)
		}
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
		spec.Groups = func(a int, _ int64) []string { return groups(a) }
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

// host is the Host of the test requests: one of the default Options.AllowedHosts.
const host = "localhost"

// request makes a request to host. header holds pairs of names and
// values; an empty value deletes the header, and the name "Host" sets the
// request's Host.
func request(method, target string, body string, header ...string) *http.Request {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		switch {
		case header[i] == "Host":
			req.Host = header[i+1]
		case header[i+1] == "":
			req.Header.Del(header[i])
		default:
			req.Header.Set(header[i], header[i+1])
		}
	}
	return req
}

// get serves a GET of target.
func get(h http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request(http.MethodGet, target, "", header...))
	return rec
}

// post serves a same-origin form POST, as a browser sends it from the page,
// with header applied last (see request).
func post(h http.Handler, target string, form url.Values, header ...string) *httptest.ResponseRecorder {
	std := []string{
		"Content-Type", "application/x-www-form-urlencoded",
		"Sec-Fetch-Site", "same-origin",
		"Origin", "http://" + host,
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request(http.MethodPost, target, form.Encode(), append(std, header...)...))
	return rec
}

func form(kind, target string) url.Values { return url.Values{"kind": {kind}, "target": {target}} }

var csrfField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]*)">`)

// token returns the CSRF token of the page h shows to a GET with header.
func token(t *testing.T, h http.Handler, header ...string) string {
	t.Helper()
	rec := get(h, "/", header...)
	m := csrfField.FindStringSubmatch(rec.Body.String())
	if rec.Code != http.StatusOK || m == nil {
		t.Fatalf("GET /: got %d and no CSRF token: %s", rec.Code, rec.Body)
	}
	return m[1]
}

// tform is form with the CSRF token of the page h shows to a GET with
// header, as the page's forms send it.
func tform(t *testing.T, h http.Handler, kind, target string, header ...string) url.Values {
	t.Helper()
	f := form(kind, target)
	f.Set("csrf", token(t, h, header...))
	return f
}

// basic is the Authorization header of basic auth.
func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

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
