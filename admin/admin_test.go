package admin_test

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open is the Options of a handler that admits everyone, with the log in d.
func open(d testenv.Database) admin.Options {
	return admin.Options{DB: d.DB, Dialect: d.Dialect, InsecureNoAuth: true}
}

// byHeader is an Authorize that names the actor by the X-User header and
// admits everyone.
func byHeader(r *http.Request, _ admin.Action) (string, error) { return r.Header.Get("X-User"), nil }

// fixed is the clock of the golden pages.
var fixed = time.Date(2024, 5, 31, 12, 30, 0, 0, time.UTC)

func TestPageListsTags(t *testing.T) {
	p := newPlugin(t)
	books := wrap(t, p, "books", new(counter), nil)
	call(t, books, 1, 1) // miss
	call(t, books, 1, 1) // hit
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			h := admin.Handler(p, open(d))
			rec := get(h, "/")
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /: got %d; want 200: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Fatalf("Content-Type: got %q", ct)
			}
			body := rec.Body.String()
			for _, want := range []string{
				`<td><code>books</code></td><td class="n">1</td><td class="n">1</td>`, // hits, misses
				`<input type="hidden" name="csrf" value="` + token(t, h) + `"><input type="hidden" name="kind" value="tag"><input type="hidden" name="target" value="books">`,
				`action="invalidate"`,
				`<h2>Log</h2>`,
				`Nothing invalidated here yet.`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %s", want)
				}
			}
		})
	}
}

func TestInvalidateTag(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			books := wrap(t, p, "books", new(counter), nil)
			call(t, books, 1, 1)
			call(t, books, 2, 2)
			call(t, books, 1, 1) // cached
			h := admin.Handler(p, admin.Options{DB: d.DB, Dialect: d.Dialect, Authorize: byHeader})
			rec := post(h, "/invalidate", tform(t, h, "tag", "books", "X-User", "ann"), "X-User", "ann")
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
			}
			if loc, want := rec.Header().Get("Location"), "./?done=tag%3Abooks%3A2"; loc != want {
				t.Fatalf("Location: got %q; want %q", loc, want)
			}
			call(t, books, 1, 3) // recomputed
			if got, want := readLog(t, d.DB), []logRow{{"ann", "tag", "books", 2}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
			if got := p.Stats().Tags["books"].Invalidations; got != 2 {
				t.Fatalf("books invalidations: got %d; want 2", got)
			}
			page := get(h, "/?done=tag%3Abooks%3A2", "X-User", "ann").Body.String()
			for _, want := range []string{
				`<p class="flash" role="status">Invalidated tag &#34;books&#34;: 2 entries.</p>`,
				`<td>ann</td><td>tag</td><td><code>books</code></td><td class="n">2</td>`,
			} {
				if !strings.Contains(page, want) {
					t.Errorf("page lacks %s", want)
				}
			}
		})
	}
}

func TestInvalidateGroup(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "shelf", new(counter), func(a int) []string { return []string{"User:" + itoa(a) + ":books"} })
			call(t, f, 1, 1)
			call(t, f, 2, 2)
			h := admin.Handler(p, open(d))
			rec := post(h, "/invalidate", tform(t, h, "group", " User:1:books "))
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
			}
			if loc, want := rec.Header().Get("Location"), "./?done="+url.QueryEscape("group:User:1:books:1"); loc != want {
				t.Fatalf("Location: got %q; want %q", loc, want)
			}
			call(t, f, 1, 3) // recomputed
			call(t, f, 2, 2) // another group: still cached
			if got, want := readLog(t, d.DB), []logRow{{"", "group", "User:1:books", 1}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
			flash := get(h, "/?done="+url.QueryEscape("group:User:1:books:1")).Body.String()
			if want := "Invalidated group &#34;User:1:books&#34;: 1 entry."; !strings.Contains(flash, want) {
				t.Fatalf("page lacks %s", want)
			}
		})
	}
}

func TestInvalidateKey(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "book", new(counter), nil) // keys book:1, book:2
			call(t, f, 1, 1)
			call(t, f, 2, 2)
			h := admin.Handler(p, open(d))
			tests := []struct {
				target string
				want   int
			}{
				{"book:2", 1},
				{"book:2", 0}, // already invalid
				{"book:9", 0}, // never cached
			}
			for _, tt := range tests {
				rec := post(h, "/invalidate", tform(t, h, "key", tt.target))
				if rec.Code != http.StatusSeeOther {
					t.Fatalf("POST %s: got %d; want 303: %s", tt.target, rec.Code, rec.Body)
				}
				if loc, want := rec.Header().Get("Location"), "./?done="+url.QueryEscape("key:"+tt.target+":"+itoa(tt.want)); loc != want {
					t.Fatalf("Location: got %q; want %q", loc, want)
				}
			}
			call(t, f, 1, 1) // another key: still cached
			call(t, f, 2, 3) // recomputed
			want := []logRow{{"", "key", "book:2", 1}, {"", "key", "book:2", 0}, {"", "key", "book:9", 0}}
			if got := readLog(t, d.DB); !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			h := admin.Handler(p, open(d))
			tok := "&csrf=" + token(t, h)
			tests := []struct {
				name   string
				method string
				path   string
				body   string
				code   int
				msg    string
			}{
				{"unknown tag", "POST", "/invalidate", "kind=tag&target=nope", 400, `unknown tag: "nope"`},
				{"bad kind", "POST", "/invalidate", "kind=wipe&target=CM:*", 400, `bad kind "wipe": want tag, group, key, node or pattern`},
				{"unknown node type", "POST", "/invalidate", "kind=node&target=books", 400, `unknown node type "books"`},
				{"bad pattern", "POST", "/invalidate", "kind=pattern&target=>x", 400, "invalid key"},
				{"whole namespace unconfirmed", "POST", "/invalidate", "kind=pattern&target=*&confirm=yes", 400, "covers the whole namespace"},
				{"two confirms", "POST", "/invalidate", "kind=pattern&target=b*&confirm=yes&confirm=yes", 400, `field "confirm" given 2 times`},
				{"no kind", "POST", "/invalidate", "target=books", 400, `bad kind ""`},
				{"two kinds", "POST", "/invalidate", "kind=key&kind=tag&target=books", 400, `field "kind" given 2 times`},
				{"two targets", "POST", "/invalidate", "kind=tag&target=books&target=nope", 400, `field "target" given 2 times`},
				{"empty target", "POST", "/invalidate", "kind=group&target=", 400, "empty target: name the group to invalidate"},
				{"blank target", "POST", "/invalidate", "kind=key&target=+++", 400, "empty target"},
				{"no target", "POST", "/invalidate", "kind=tag", 400, "empty target"},
				{"target in the query only", "POST", "/invalidate?kind=tag&target=books", "", 400, "bad kind"},
				{"reserved key", "POST", "/invalidate", "kind=key&target=book:1:invalid", 400, "invalid key"},
				{"reserved key suffix", "POST", "/invalidate", "kind=key&target=books:tag", 400, "invalid key"},
				{"bad form encoding", "POST", "/invalidate", "kind=%zz", 400, "bad form"},
				{"too large", "POST", "/invalidate", "kind=key&target=" + strings.Repeat("a", 70<<10), 413, "bad form"},
				{"GET invalidate", "GET", "/invalidate?kind=tag&target=books", "", 405, "use POST"},
				{"POST page", "POST", "/", "kind=tag&target=books", 405, "use GET, HEAD"},
				{"bad query encoding", "GET", "/?done=%zz", "", 400, "bad query"},
				{"unknown path", "GET", "/nope", "", 404, "404 page not found"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, request(tt.method, tt.path, tt.body+tok, "Content-Type", "application/x-www-form-urlencoded"))
					if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.msg) {
						t.Fatalf("got %d %q; want %d containing %q", rec.Code, rec.Body, tt.code, tt.msg)
					}
				})
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
		})
	}
}

// TestBadBytes checks that invalid UTF-8 and control characters anywhere
// in a form are refused before anything runs: not the authorizer, not the
// invalidation, not the log.
func TestBadBytes(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			var asked atomic.Int64
			h := admin.Handler(p, admin.Options{
				DB: d.DB, Dialect: d.Dialect,
				Authorize: func(r *http.Request, a admin.Action) (string, error) {
					if a.Mutates() {
						asked.Add(1)
					}
					return "ann", nil
				},
			})
			tok := "&csrf=" + token(t, h)
			asked.Store(0)
			tests := []struct {
				name, path, body, msg string
			}{
				{"invalid UTF-8 in a key", "/invalidate", "kind=key&target=books:1%ff", "is not valid UTF-8"},
				{"overlong UTF-8", "/invalidate", "kind=key&target=books%c0%ba1", "is not valid UTF-8"},
				{"NUL in a key", "/invalidate", "kind=key&target=books:1%00", "control character U+0000"},
				{"NUL in a tag", "/invalidate", "kind=tag&target=books%00", "control character U+0000"},
				{"NUL in a group", "/invalidate", "kind=group&target=%00User:1:books", "control character U+0000"},
				{"escape in a group", "/invalidate", "kind=group&target=User%1b[31m", "control character U+001B"},
				{"newline in a key", "/invalidate", "kind=key&target=books:1%0abooks:2", "control character U+000A"},
				{"tab in a tag", "/invalidate", "kind=tag&target=books%09", "control character U+0009"},
				{"DEL", "/invalidate", "kind=key&target=books:1%7f", "control character U+007F"},
				{"C1 control", "/invalidate", "kind=key&target=books:1%c2%85", "control character U+0085"},
				{"NUL in the kind", "/invalidate", "kind=tag%00&target=books", "control character U+0000"},
				{"NUL in a field name", "/invalidate", "kind=tag&target=books&x%00=1", "field name"},
				{"invalid UTF-8 in the token", "/invalidate", "kind=tag&target=books&csrf=%ff", "is not valid UTF-8"},
				{"NUL in the query", "/invalidate?x=%00", "kind=tag&target=books", "control character U+0000"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, request(http.MethodPost, tt.path, tt.body+tok,
						"Content-Type", "application/x-www-form-urlencoded", "Origin", "http://"+host))
					if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tt.msg) {
						t.Fatalf("got %d %q; want 400 containing %q", rec.Code, rec.Body, tt.msg)
					}
				})
			}
			for _, q := range []string{"/?done=tag:books%00:1", "/?done=tag:books%ff:1"} {
				if rec := get(h, q); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "bad query") {
					t.Errorf("GET %s: got %d %q; want 400", q, rec.Code, rec.Body)
				}
			}
			if n := asked.Load(); n != 0 {
				t.Fatalf("the authorizer was asked %d times; want never", n)
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := p.Stats().Tags["books"].Invalidations; got != 0 {
				t.Fatalf("books invalidations: got %d; want 0", got)
			}
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
		})
	}
}

func TestCrossSite(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{InsecureNoAuth: true})
	valid := tform(t, h, "tag", "books") // a valid token: the refusals do not depend on it
	tests := []struct {
		name   string
		header []string
	}{
		{"cross-site", []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site", []string{"Sec-Fetch-Site", "same-site"}},
		{"none", []string{"Sec-Fetch-Site", "none"}},
		{"foreign origin", []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
		{"null origin", []string{"Sec-Fetch-Site", "", "Origin", "null"}},
		{"origin on another port", []string{"Sec-Fetch-Site", "", "Origin", "http://localhost:8080"}},
		{"same origin, foreign Origin", []string{"Origin", "https://evil.example"}},
		{"foreign origin, same-host Referer", []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example", "Referer", "http://localhost/"}},
		{"Referer only, cross-site", []string{"Sec-Fetch-Site", "", "Origin", "", "Referer", "https://evil.example/page"}},
		{"Referer only, another port", []string{"Sec-Fetch-Site", "", "Origin", "", "Referer", "http://localhost:8080/"}},
		{"Referer only, not a URL", []string{"Sec-Fetch-Site", "", "Origin", "", "Referer", "no host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(h, "/invalidate", valid, tt.header...)
			if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "cross-site request refused") {
				t.Fatalf("got %d %q; want 403", rec.Code, rec.Body)
			}
		})
	}
	call(t, f, 1, 1) // still cached: nothing was invalidated
	if got := p.Stats().Tags["books"].Invalidations; got != 0 {
		t.Fatalf("books invalidations: got %d; want 0", got)
	}

	allowed := []struct {
		name   string
		header []string
	}{
		{"same-origin", nil},
		{"no headers (not a browser)", []string{"Sec-Fetch-Site", "", "Origin", ""}},
		{"matching origin only", []string{"Sec-Fetch-Site", "", "Origin", "http://LOCALHOST"}},
		{"matching Referer only", []string{"Sec-Fetch-Site", "", "Origin", "", "Referer", "http://localhost/cache/"}},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			if rec := post(h, "/invalidate", valid, tt.header...); rec.Code != http.StatusSeeOther {
				t.Fatalf("got %d %q; want 303", rec.Code, rec.Body)
			}
		})
	}
}

// TestDNSRebinding sends what a browser sends when a foreign name
// resolves to the server: the foreign name in both Host and Origin.
func TestDNSRebinding(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{InsecureNoAuth: true})
	valid := tform(t, h, "tag", "books")
	for _, evil := range []string{"evil.example", "evil.example:8080", "localhost.evil.example"} {
		rebound := []string{"Host", evil, "Origin", "http://" + evil, "Sec-Fetch-Site", "same-origin"}
		if rec := get(h, "/", rebound...); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "AllowedHosts") {
			t.Errorf("GET from %s: got %d %q; want 403", evil, rec.Code, rec.Body)
		}
		if rec := post(h, "/invalidate", valid, rebound...); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "AllowedHosts") {
			t.Errorf("POST from %s: got %d %q; want 403", evil, rec.Code, rec.Body)
		}
	}
	call(t, f, 1, 1) // nothing was invalidated
	if got := p.Stats().Tags["books"].Invalidations; got != 0 {
		t.Fatalf("books invalidations: got %d; want 0", got)
	}
}

func TestAllowedHosts(t *testing.T) {
	p := newPlugin(t)
	custom := []string{"Admin.Example.com", "example.com:8443"}
	tests := []struct {
		hosts []string
		host  string
		ok    bool
	}{
		{nil, "localhost", true},
		{nil, "LocalHost:8080", true},
		{nil, "localhost.", true},
		{nil, "127.0.0.1", true},
		{nil, "127.0.0.1:9000", true},
		{nil, "[::1]", true},
		{nil, "[::1]:3000", true},
		{nil, "", false},
		{nil, "example.com", false},
		{nil, "evil.localhost", false},
		{nil, "localhost.evil.example", false},
		{nil, "127.0.0.2", false},
		{nil, "0.0.0.0", false},
		{nil, "[::]:80", false},
		{nil, "localhost:", false},
		{nil, "localhost:http", false},
		{nil, "localhost:99999", false},
		{custom, "admin.example.com", true},
		{custom, "ADMIN.example.com:443", true},
		{custom, "example.com:8443", true},
		{custom, "example.com", false},
		{custom, "example.com:8444", false},
		{custom, "localhost", false},
		{[]string{"::1"}, "[::1]:80", true},
		{[]string{"[::1]:80"}, "[::1]:81", false},
	}
	for _, tt := range tests {
		h := admin.Handler(p, admin.Options{InsecureNoAuth: true, AllowedHosts: tt.hosts})
		rec := get(h, "/", "Host", tt.host)
		if got := rec.Code == http.StatusOK; got != tt.ok || !tt.ok && rec.Code != http.StatusForbidden {
			t.Errorf("AllowedHosts %q, Host %q: got %d; want allowed %v", tt.hosts, tt.host, rec.Code, tt.ok)
		}
	}
}

func TestWithoutDB(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{InsecureNoAuth: true, Dialect: "ignored without a DB"})
	if rec := post(h, "/invalidate", tform(t, h, "tag", "books")); rec.Code != http.StatusSeeOther {
		t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
	}
	call(t, f, 1, 2)
	rec := get(h, "/")
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "<h2>Log</h2>") {
		t.Fatalf("GET /: got %d, log shown %v; want 200 and no log", rec.Code, strings.Contains(rec.Body.String(), "Log"))
	}
}

// TestMisconfigured checks that a handler without a valid configuration,
// in particular one that says nothing about authorization, serves nothing.
func TestMisconfigured(t *testing.T) {
	db := sqliteDB(t)
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	anyone := func(*http.Request, admin.Action) (string, error) { return "", nil }
	tests := []struct {
		name string
		p    *cacheme.Plugin
		opts admin.Options
		is   error
		msg  string
	}{
		{"nil plugin", nil, admin.Options{InsecureNoAuth: true}, nil, "nil *cacheme.Plugin"},
		{"no authorization", p, admin.Options{}, admin.ErrNoAuth, "no authorization configured"},
		{"no authorization, read-only", p, admin.Options{ReadOnly: true, DB: db, Dialect: migrations.SQLite}, admin.ErrNoAuth, "no authorization configured"},
		{"two authorizations", p, admin.Options{Authorize: anyone, InsecureNoAuth: true}, nil, "set only one of"},
		{"basic auth without a password", p, admin.Options{BasicAuth: &admin.BasicAuth{User: "ann"}}, nil, "needs a User and a Password"},
		{"basic auth user with a colon", p, admin.Options{BasicAuth: &admin.BasicAuth{User: "a:b", Password: "x"}}, nil, "may not contain ':'"},
		{"basic auth realm with a quote", p, admin.Options{BasicAuth: &admin.BasicAuth{User: "a", Password: "x", Realm: `a"b`}}, nil, "Realm"},
		{"wildcard host", p, admin.Options{InsecureNoAuth: true, AllowedHosts: []string{"*"}}, nil, `bad host "*"`},
		{"URL as a host", p, admin.Options{InsecureNoAuth: true, AllowedHosts: []string{"http://localhost/"}}, nil, "bad host"},
		{"empty host", p, admin.Options{InsecureNoAuth: true, AllowedHosts: []string{""}}, nil, "bad host"},
		{"short CSRF key", p, admin.Options{InsecureNoAuth: true, CSRFKey: []byte("short")}, nil, "CSRFKey has 5 bytes"},
		{"DB without dialect", p, admin.Options{InsecureNoAuth: true, DB: db}, migrations.ErrUnknownDialect, "unknown dialect"},
		{"DB with unknown dialect", p, admin.Options{InsecureNoAuth: true, DB: db, Dialect: "mysql"}, migrations.ErrUnknownDialect, `unknown dialect "mysql"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := admin.New(tt.p, tt.opts); err == nil || !strings.Contains(err.Error(), tt.msg) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("New: got %v; want an error containing %q (is %v)", err, tt.msg, tt.is)
			}
			h := admin.Handler(tt.p, tt.opts)
			for _, rec := range []*httptest.ResponseRecorder{get(h, "/"), post(h, "/invalidate", form("tag", "books"))} {
				if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), tt.msg) {
					t.Fatalf("got %d %q; want 500 containing %q", rec.Code, rec.Body, tt.msg)
				}
			}
		})
	}
	call(t, f, 1, 1) // nothing was invalidated
}

func TestBasicAuth(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			h := admin.Handler(p, admin.Options{DB: d.DB, Dialect: d.Dialect, BasicAuth: &admin.BasicAuth{User: "ann", Password: "s3cret"}})
			good := basic("ann", "s3cret")
			valid := tform(t, h, "tag", "books", "Authorization", good)
			bad := []struct{ name, auth string }{
				{"none", ""},
				{"wrong password", basic("ann", "s3cre")},
				{"password with more", basic("ann", "s3cret!")},
				{"wrong user", basic("bob", "s3cret")},
				{"empty password", basic("ann", "")},
				{"user case", basic("Ann", "s3cret")},
				{"not basic", "Bearer s3cret"},
				{"not base64", "Basic !!!"},
			}
			for _, tt := range bad {
				t.Run(tt.name, func(t *testing.T) {
					for _, rec := range []*httptest.ResponseRecorder{
						get(h, "/", "Authorization", tt.auth),
						post(h, "/invalidate", valid, "Authorization", tt.auth),
					} {
						if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "books") {
							t.Fatalf("got %d %q; want 401", rec.Code, rec.Body)
						}
						if got, want := rec.Header().Get("WWW-Authenticate"), `Basic realm="cacheme admin", charset="UTF-8"`; got != want {
							t.Fatalf("WWW-Authenticate: got %q; want %q", got, want)
						}
					}
				})
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
			if rec := get(h, "/", "Authorization", good); rec.Code != http.StatusOK {
				t.Fatalf("GET with good credentials: got %d %q", rec.Code, rec.Body)
			}
			if rec := post(h, "/invalidate", valid, "Authorization", good); rec.Code != http.StatusSeeOther {
				t.Fatalf("POST with good credentials: got %d %q", rec.Code, rec.Body)
			}
			call(t, f, 1, 2)
			if got, want := readLog(t, d.DB), []logRow{{"ann", "tag", "books", 1}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

// TestAuthorizePerAction checks an authorizer that lets bob view and
// invalidate keys, but not groups or tags.
func TestAuthorizePerAction(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			var (
				mu    sync.Mutex
				asked []admin.Action
			)
			h := admin.Handler(p, admin.Options{
				DB: d.DB, Dialect: d.Dialect,
				Authorize: func(r *http.Request, a admin.Action) (string, error) {
					mu.Lock()
					asked = append(asked, a)
					mu.Unlock()
					if r.Header.Get("X-User") != "bob" {
						return "", errors.New("who are you?")
					}
					switch a {
					case admin.ActionView, admin.ActionInvalidateKey:
						return "bob", nil
					case admin.ActionInvalidateTag, admin.ActionInvalidateGroup:
						return "", errors.New("ask the on-call engineer")
					}
					return "", errors.New("unknown action")
				},
			})
			bob := []string{"X-User", "bob"}
			if rec := get(h, "/", "X-User", "eve"); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "admin: view refused: who are you?") {
				t.Fatalf("GET as eve: got %d %q; want 403", rec.Code, rec.Body)
			}
			rec := get(h, "/", bob...)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET as bob: got %d %q", rec.Code, rec.Body)
			}
			body := rec.Body.String()
			for _, bad := range []string{`name="kind" value="tag"`, `<option value="group">`} {
				if strings.Contains(body, bad) {
					t.Errorf("page offers %s, which bob may not do", bad)
				}
			}
			if !strings.Contains(body, `<select name="kind"><option value="key">key</option></select>`) {
				t.Errorf("page does not offer to invalidate a key: %s", body)
			}

			for _, kind := range []string{"tag", "group"} {
				rec := post(h, "/invalidate", tform(t, h, kind, "books", bob...), bob...)
				want := "admin: invalidate-" + kind + " refused: ask the on-call engineer"
				if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), want) {
					t.Fatalf("POST %s: got %d %q; want 403 %q", kind, rec.Code, rec.Body, want)
				}
				mu.Lock()
				last := asked[len(asked)-1]
				mu.Unlock()
				if last != admin.Action("invalidate-"+kind) {
					t.Fatalf("POST %s: the authorizer was last asked about %q", kind, last)
				}
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
			if rec := post(h, "/invalidate", tform(t, h, "key", "books:1", bob...), bob...); rec.Code != http.StatusSeeOther {
				t.Fatalf("POST key: got %d %q; want 303", rec.Code, rec.Body)
			}
			call(t, f, 1, 2)
			if got, want := readLog(t, d.DB), []logRow{{"bob", "key", "books:1", 1}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

func TestActions(t *testing.T) {
	tests := []struct {
		a       admin.Action
		s       string
		mutates bool
	}{
		{admin.ActionView, "view", false},
		{admin.ActionInvalidateKey, "invalidate-key", true},
		{admin.ActionInvalidateGroup, "invalidate-group", true},
		{admin.ActionInvalidateTag, "invalidate-tag", true},
		{admin.ActionInvalidateNode, "invalidate-node", true},
		{admin.ActionInvalidatePattern, "invalidate-pattern", true},
		{admin.ActionBrowse, "browse", false},
		{admin.Action("from-the-future"), "from-the-future", true},
	}
	for _, tt := range tests {
		if string(tt.a) != tt.s || tt.a.Mutates() != tt.mutates {
			t.Errorf("%q: Mutates %v; want %q, %v", tt.a, tt.a.Mutates(), tt.s, tt.mutates)
		}
	}
}

func TestInsecureNoAuth(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			h := admin.Handler(p, open(d))
			if rec := get(h, "/"); rec.Code != http.StatusOK {
				t.Fatalf("GET: got %d %q", rec.Code, rec.Body)
			}
			if rec := post(h, "/invalidate", tform(t, h, "tag", "books")); rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: got %d %q", rec.Code, rec.Body)
			}
			call(t, f, 1, 2)
			if got, want := readLog(t, d.DB), []logRow{{"", "tag", "books", 1}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			key := bytes.Repeat([]byte{7}, 32)
			opts := open(d)
			opts.CSRFKey = key
			rw := admin.Handler(p, opts) // the same key: its tokens are valid in ro
			opts.ReadOnly = true
			ro := admin.Handler(p, opts)

			rec := get(ro, "/")
			if body := rec.Body.String(); rec.Code != http.StatusOK || strings.Contains(body, "<form") || !strings.Contains(body, "Read-only") || !strings.Contains(body, "<code>books</code>") {
				t.Fatalf("GET: got %d; want 200, the counters, a read-only notice and no forms: %s", rec.Code, body)
			}
			for _, f := range []url.Values{tform(t, rw, "tag", "books"), tform(t, rw, "group", "x"), tform(t, rw, "key", "books:1")} {
				rec := post(ro, "/invalidate", f)
				if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "read-only") {
					t.Fatalf("POST %v: got %d %q; want 403", f, rec.Code, rec.Body)
				}
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			opts := admin.Options{DB: d.DB, Dialect: d.Dialect, Authorize: byHeader}
			h := admin.Handler(p, opts)
			other := admin.Handler(p, opts) // a key of its own
			ann := []string{"X-User", "ann"}
			with := func(tokens ...string) url.Values {
				f := form("tag", "books")
				f["csrf"] = tokens
				return f
			}
			good := token(t, h, ann...)
			tests := []struct {
				name string
				form url.Values
				code int
			}{
				{"missing", form("tag", "books"), 403},
				{"empty", with(""), 403},
				{"wrong", with("AAAA"), 403},
				{"truncated", with(good[:len(good)-1]), 403},
				{"another actor's", with(token(t, h, "X-User", "mallory")), 403},
				{"another handler's", with(token(t, other, ann...)), 403},
				{"twice", with(good, good), 400},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					rec := post(h, "/invalidate", tt.form, ann...)
					if rec.Code != tt.code || tt.code == 403 && !strings.Contains(rec.Body.String(), "CSRF token") {
						t.Fatalf("got %d %q; want %d", rec.Code, rec.Body, tt.code)
					}
				})
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := p.Stats().Tags["books"].Invalidations; got != 0 {
				t.Fatalf("books invalidations: got %d; want 0", got)
			}
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}

			// Handlers sharing a CSRFKey accept each other's tokens.
			opts.CSRFKey = bytes.Repeat([]byte("k"), 32)
			a, b := admin.Handler(p, opts), admin.Handler(p, opts)
			if rec := post(b, "/invalidate", tform(t, a, "tag", "books", ann...), ann...); rec.Code != http.StatusSeeOther {
				t.Fatalf("shared key: got %d %q; want 303", rec.Code, rec.Body)
			}
			call(t, f, 1, 2)
		})
	}
}

// TestLogAndActionTogether checks that an invalidation and its log row
// succeed or fail together.
func TestLogAndActionTogether(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			t.Run("invalidation fails", func(t *testing.T) {
				p, rdb, m := newPluginRedis(t)
				f := wrap(t, p, "books", new(counter), nil)
				call(t, f, 1, 1)
				h := admin.Handler(p, open(d))
				valid := tform(t, h, "tag", "books")
				if m != nil {
					m.SetError("ERR injected failure")
					defer m.SetError("")
				} else {
					rdb.Close()
				}
				rec := post(h, "/invalidate", valid)
				if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "redis error") || !strings.Contains(rec.Body.String(), "nothing logged") {
					t.Fatalf("got %d %q; want 503 naming the Redis error", rec.Code, rec.Body)
				}
				if got := readLog(t, d.DB); len(got) != 0 {
					t.Fatalf("log: got %v; want no rows", got)
				}
			})
			t.Run("log insert fails", func(t *testing.T) {
				p := newPlugin(t)
				f := wrap(t, p, "books", new(counter), nil)
				call(t, f, 1, 1)
				h := admin.Handler(p, open(d))
				forms := []url.Values{tform(t, h, "tag", "books"), tform(t, h, "key", "books:1"), tform(t, h, "group", "books")}
				if _, err := d.DB.ExecContext(bg, "DROP TABLE "+migrations.InvalidationsTable); err != nil {
					t.Fatal(err)
				}
				for _, f := range forms {
					rec := post(h, "/invalidate", f)
					if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "nothing invalidated: the log row for ") {
						t.Fatalf("POST %v: got %d %q; want 500", f, rec.Code, rec.Body)
					}
				}
				call(t, f, 1, 1) // still cached
				if got := p.Stats().Tags["books"].Invalidations; got != 0 {
					t.Fatalf("books invalidations: got %d; want 0", got)
				}
			})
		})
	}
}

// TestLogUnreadable checks that a log that cannot be read leaves the page
// usable and says why.
func TestLogUnreadable(t *testing.T) {
	db := sqliteDB(t) // no migrations: the table does not exist
	h := admin.Handler(newPlugin(t), admin.Options{DB: db, Dialect: migrations.SQLite, InsecureNoAuth: true})
	rec := get(h, "/")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "The log could not be read: ") {
		t.Fatalf("got %d; want 200 and the reason: %s", rec.Code, rec.Body)
	}
}

// TestMountedUnderPrefix mounts the handler under /cache and follows its
// relative links and redirects.
func TestMountedUnderPrefix(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{InsecureNoAuth: true})
	mux := http.NewServeMux()
	mux.Handle("/cache/", http.StripPrefix("/cache", h))
	mux.Handle("/cache", http.StripPrefix("/cache", h))
	base, _ := url.Parse("http://localhost/")
	resolve := func(from, loc string) string {
		u, err := base.Parse(from)
		if err != nil {
			t.Fatal(err)
		}
		to, err := u.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		return to.RequestURI()
	}

	rec := get(mux, "/cache?x=1")
	if got := resolve("/cache?x=1", rec.Header().Get("Location")); rec.Code != http.StatusMovedPermanently || got != "/cache/?x=1" {
		t.Fatalf("GET /cache: got %d to %q; want 301 to /cache/?x=1", rec.Code, got)
	}
	rec = get(mux, "/cache/")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /cache/: got %d", rec.Code)
	}
	body := rec.Body.String()
	if strings.Contains(body, `action="/`) || strings.Contains(body, `href="/`) {
		t.Fatalf("page has an absolute link: %s", body)
	}
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("page has no CSRF token: %s", body)
	}
	action := resolve("/cache/", "invalidate")
	fm := form("tag", "books")
	fm.Set("csrf", m[1])
	rec = post(mux, action, fm, "Referer", "http://localhost/cache/")
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("POST %s: got %d; want 303: %s", action, rec.Code, rec.Body)
	}
	back := resolve(action, rec.Header().Get("Location"))
	if want := "/cache/?done=tag%3Abooks%3A1"; back != want {
		t.Fatalf("redirect: got %q; want %q", back, want)
	}
	if rec := get(mux, back); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "Invalidated tag") {
		t.Fatalf("GET %s: got %d: %s", back, rec.Code, rec.Body)
	}
	call(t, f, 1, 2)
}

func TestHeaders(t *testing.T) {
	h := admin.Handler(newPlugin(t), admin.Options{InsecureNoAuth: true})
	rec := get(h, "/")
	for k, want := range map[string]string{
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s: got %q; want %q", k, got, want)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q does not forbid framing", csp)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, request(http.MethodHead, "/", ""))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD /: got %d; want 200", rec.Code)
	}
}

// TestGolden compares the page for a fixed state with testdata/*.golden;
// go test ./admin -run Golden -update rewrites them.
func TestGolden(t *testing.T) {
	key := bytes.Repeat([]byte("golden"), 6) // fixed CSRF tokens
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			books := wrap(t, p, "books", new(counter), func(a int) []string { return []string{"User:" + itoa(a) + ":books"} })
			authors := wrap(t, p, "authors", new(counter), nil)
			call(t, books, 1, 1)
			call(t, books, 1, 1)
			call(t, books, 2, 2)
			call(t, authors, 1, 1)
			now := fixed
			h := admin.Handler(p, admin.Options{
				DB: d.DB, Dialect: d.Dialect,
				Authorize: func(*http.Request, admin.Action) (string, error) { return "ann <admin>", nil },
				CSRFKey:   key,
				Now:       func() time.Time { now = now.Add(time.Minute); return now },
			})
			tok := token(t, h) // one actor, one token
			for _, f := range []url.Values{form("group", "User:1:books"), form("key", "authors:1"), form("tag", "books")} {
				f.Set("csrf", tok)
				if rec := post(h, "/invalidate", f); rec.Code != http.StatusSeeOther {
					t.Fatalf("POST %v: got %d: %s", f, rec.Code, rec.Body)
				}
			}
			golden(t, "page", mask(p, get(h, "/?done="+url.QueryEscape("tag:books:1")).Body.Bytes()))
			golden(t, "history", mask(p, get(h, "/history").Body.Bytes()))
			call(t, books, 3, 3)
			call(t, books, 4, 4)
			golden(t, "browse", mask(p, get(h, "/browse?tag=books").Body.Bytes())) // one ZSCAN: the same on a shared Redis
			golden(t, "entry", mask(p, get(h, "/entry?key=books:3").Body.Bytes()))
			f := form("pattern", "books:*")
			f.Set("csrf", tok)
			golden(t, "confirm", mask(p, post(h, "/invalidate", f).Body.Bytes()))
		})
	}
	t.Run("empty", func(t *testing.T) {
		p := newPlugin(t)
		h := admin.Handler(p, admin.Options{InsecureNoAuth: true, CSRFKey: key, Now: func() time.Time { return fixed }})
		golden(t, "empty", mask(p, get(h, "/").Body.Bytes()))
	})
	t.Run("readonly", func(t *testing.T) {
		p := newPlugin(t)
		call(t, wrap(t, p, "books", new(counter), nil), 1, 1)
		h := admin.Handler(p, admin.Options{InsecureNoAuth: true, ReadOnly: true, Now: func() time.Time { return fixed }})
		golden(t, "readonly", mask(p, get(h, "/").Body.Bytes()))
	})
}

// mask replaces the plugin's random key prefix, and durations (TTLs).
func mask(p *cacheme.Plugin, b []byte) []byte {
	b = durations.ReplaceAll(b, []byte("<d>"))
	return bytes.ReplaceAll(b, []byte(p.Settings().Prefix), []byte("PREFIX:"))
}

var durations = regexp.MustCompile(`\b\d+m\d+s\b|\b\d+s\b`)

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./admin -run Golden -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from %s (go test ./admin -run Golden -update rewrites it):\n%s", name, path, got)
	}
}
