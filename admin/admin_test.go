package admin_test

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/migrations"
)

var update = flag.Bool("update", false, "rewrite the golden files in ../testdata/admin")

// fixed is the clock of the golden pages.
var fixed = time.Date(2024, 5, 31, 12, 30, 0, 0, time.UTC)

func TestPageListsTags(t *testing.T) {
	p := newPlugin(t)
	books := wrap(t, p, "books", new(counter), nil)
	call(t, books, 1, 1) // miss
	call(t, books, 1, 1) // hit
	for _, d := range testDBs(t) {
		t.Run(d.name, func(t *testing.T) {
			h := admin.Handler(p, admin.Options{DB: d.db, Dialect: d.dialect})
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
				`<input type="hidden" name="kind" value="tag"><input type="hidden" name="target" value="books">`,
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
		t.Run(d.name, func(t *testing.T) {
			p := newPlugin(t)
			books := wrap(t, p, "books", new(counter), nil)
			call(t, books, 1, 1)
			call(t, books, 2, 2)
			call(t, books, 1, 1) // cached
			h := admin.Handler(p, admin.Options{
				DB: d.db, Dialect: d.dialect,
				Actor: func(r *http.Request) string { return r.Header.Get("X-User") },
			})
			rec := post(h, "/invalidate", form("tag", "books"), "X-User", "ann")
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
			}
			if loc, want := rec.Header().Get("Location"), "./?done=tag%3Abooks%3A2"; loc != want {
				t.Fatalf("Location: got %q; want %q", loc, want)
			}
			call(t, books, 1, 3) // recomputed
			if got, want := readLog(t, d.db), []logRow{{"ann", "tag", "books", 2}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
			if got := p.Stats().Tags["books"].Invalidations; got != 2 {
				t.Fatalf("books invalidations: got %d; want 2", got)
			}
			page := get(h, "/?done=tag%3Abooks%3A2").Body.String()
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
		t.Run(d.name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "shelf", new(counter), func(a int) []string { return []string{"User:" + itoa(a) + ":books"} })
			call(t, f, 1, 1)
			call(t, f, 2, 2)
			h := admin.Handler(p, admin.Options{DB: d.db, Dialect: d.dialect})
			rec := post(h, "/invalidate", form("group", " User:1:books "))
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
			}
			if loc, want := rec.Header().Get("Location"), "./?done="+url.QueryEscape("group:User:1:books:1"); loc != want {
				t.Fatalf("Location: got %q; want %q", loc, want)
			}
			call(t, f, 1, 3) // recomputed
			call(t, f, 2, 2) // another group: still cached
			if got, want := readLog(t, d.db), []logRow{{"", "group", "User:1:books", 1}}; !slices.Equal(got, want) {
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
		t.Run(d.name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "book", new(counter), nil) // keys book:1, book:2
			call(t, f, 1, 1)
			call(t, f, 2, 2)
			h := admin.Handler(p, admin.Options{DB: d.db, Dialect: d.dialect})
			tests := []struct {
				target string
				want   int
			}{
				{"book:2", 1},
				{"book:2", 0}, // already invalid
				{"book:9", 0}, // never cached
			}
			for _, tt := range tests {
				rec := post(h, "/invalidate", form("key", tt.target))
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
			if got := readLog(t, d.db); !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), nil)
			call(t, f, 1, 1)
			h := admin.Handler(p, admin.Options{DB: d.db, Dialect: d.dialect})
			tests := []struct {
				name   string
				method string
				path   string
				body   string
				code   int
				msg    string
			}{
				{"unknown tag", "POST", "/invalidate", "kind=tag&target=nope", 400, `unknown tag: "nope"`},
				{"bad kind", "POST", "/invalidate", "kind=pattern&target=CM:*", 400, `bad kind "pattern": want tag, group or key`},
				{"no kind", "POST", "/invalidate", "target=books", 400, `bad kind ""`},
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
				{"unknown path", "GET", "/nope", "", 404, "404 page not found"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.msg) {
						t.Fatalf("got %d %q; want %d containing %q", rec.Code, rec.Body, tt.code, tt.msg)
					}
				})
			}
			call(t, f, 1, 1) // nothing was invalidated
			if got := readLog(t, d.db); len(got) != 0 {
				t.Fatalf("log: got %v; want no rows", got)
			}
		})
	}
}

func TestCrossSite(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{})
	tests := []struct {
		name   string
		header []string
		code   int
	}{
		{"cross-site", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"same-site", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"none", []string{"Sec-Fetch-Site", "none"}, 403},
		{"foreign origin", []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}, 403},
		{"null origin", []string{"Sec-Fetch-Site", "", "Origin", "null"}, 403},
		{"origin on another port", []string{"Sec-Fetch-Site", "", "Origin", "http://example.com:8080"}, 403},
		{"same origin, foreign Origin", []string{"Origin", "https://evil.example"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(h, "/invalidate", form("tag", "books"), tt.header...)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), "cross-site request refused") {
				t.Fatalf("got %d %q; want %d", rec.Code, rec.Body, tt.code)
			}
		})
	}
	call(t, f, 1, 1) // still cached: nothing was invalidated

	allowed := []struct {
		name   string
		header []string
	}{
		{"same-origin", nil},
		{"no headers (not a browser)", []string{"Sec-Fetch-Site", "", "Origin", ""}},
		{"matching origin only", []string{"Sec-Fetch-Site", "", "Origin", "http://EXAMPLE.com"}},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			if rec := post(h, "/invalidate", form("tag", "books"), tt.header...); rec.Code != http.StatusSeeOther {
				t.Fatalf("got %d %q; want 303", rec.Code, rec.Body)
			}
		})
	}
}

func TestWithoutDB(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	h := admin.Handler(p, admin.Options{Dialect: "ignored without a DB"})
	if rec := post(h, "/invalidate", form("tag", "books")); rec.Code != http.StatusSeeOther {
		t.Fatalf("POST: got %d; want 303: %s", rec.Code, rec.Body)
	}
	call(t, f, 1, 2)
	rec := get(h, "/")
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "<h2>Log</h2>") {
		t.Fatalf("GET /: got %d, log shown %v; want 200 and no log", rec.Code, strings.Contains(rec.Body.String(), "Log"))
	}
}

func TestMisconfigured(t *testing.T) {
	db := sqliteDB(t)
	tests := []struct {
		name string
		p    *cacheme.Plugin
		opts admin.Options
		msg  string
	}{
		{"nil plugin", nil, admin.Options{}, "nil *cacheme.Plugin"},
		{"DB without dialect", newPlugin(t), admin.Options{DB: db}, "unknown dialect"},
		{"DB with unknown dialect", newPlugin(t), admin.Options{DB: db, Dialect: "mysql"}, `unknown dialect "mysql"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := admin.Handler(tt.p, tt.opts)
			for _, rec := range []*httptest.ResponseRecorder{get(h, "/"), post(h, "/invalidate", form("tag", "x"))} {
				if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), tt.msg) {
					t.Fatalf("got %d %q; want 500 containing %q", rec.Code, rec.Body, tt.msg)
				}
			}
		})
	}
}

// TestLogUnreadable checks that a log that cannot be read leaves the page
// usable and says why.
func TestLogUnreadable(t *testing.T) {
	db := sqliteDB(t) // no migrations: the table does not exist
	h := admin.Handler(newPlugin(t), admin.Options{DB: db, Dialect: migrations.SQLite})
	rec := get(h, "/")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "The log could not be read: ") {
		t.Fatalf("got %d; want 200 and the reason: %s", rec.Code, rec.Body)
	}
}

// TestServerErrors checks the answers when Redis or the log fails: server
// errors, not bad requests.
func TestServerErrors(t *testing.T) {
	t.Run("redis down", func(t *testing.T) {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		p, err := cacheme.New(cacheme.Settings{Redis: rdb})
		if err != nil {
			t.Fatal(err)
		}
		f := wrap(t, p, "books", new(counter), nil)
		call(t, f, 1, 1)
		m.Close()
		db := testDBs(t)[0]
		h := admin.Handler(p, admin.Options{DB: db.db, Dialect: db.dialect})
		rec := post(h, "/invalidate", form("tag", "books"))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "redis error") {
			t.Fatalf("got %d %q; want 503 naming the Redis error", rec.Code, rec.Body)
		}
		if got := readLog(t, db.db); len(got) != 0 {
			t.Fatalf("log: got %v; want no rows", got)
		}
	})
	t.Run("log not writable", func(t *testing.T) {
		p := newPlugin(t)
		f := wrap(t, p, "books", new(counter), nil)
		call(t, f, 1, 1)
		db := sqliteDB(t) // no migrations: the table does not exist
		h := admin.Handler(p, admin.Options{DB: db, Dialect: migrations.SQLite})
		rec := post(h, "/invalidate", form("tag", "books"))
		if want := `invalidated tag "books" (1 entries), but the log row could not be written`; rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), want) {
			t.Fatalf("got %d %q; want 500 containing %q", rec.Code, rec.Body, want)
		}
		call(t, f, 1, 2) // the invalidation itself happened
	})
}

// TestMountedUnderPrefix mounts the handler under /cache and follows its
// relative links and redirects.
func TestMountedUnderPrefix(t *testing.T) {
	p := newPlugin(t)
	f := wrap(t, p, "books", new(counter), nil)
	call(t, f, 1, 1)
	mux := http.NewServeMux()
	mux.Handle("/cache/", http.StripPrefix("/cache", admin.Handler(p, admin.Options{})))
	mux.Handle("/cache", http.StripPrefix("/cache", admin.Handler(p, admin.Options{})))
	base, _ := url.Parse("http://example.com/")
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
	action := resolve("/cache/", "invalidate")
	rec = post(mux, action, form("tag", "books"))
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
	h := admin.Handler(newPlugin(t), admin.Options{})
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
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD /: got %d; want 200", rec.Code)
	}
}

// TestGolden compares the page for a fixed state with
// ../testdata/admin/*.golden; go test ./admin -run Golden -update
// rewrites them.
func TestGolden(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.name, func(t *testing.T) {
			p := newPlugin(t)
			books := wrap(t, p, "books", new(counter), func(a int) []string { return []string{"User:" + itoa(a) + ":books"} })
			authors := wrap(t, p, "authors", new(counter), nil)
			call(t, books, 1, 1)
			call(t, books, 1, 1)
			call(t, books, 2, 2)
			call(t, authors, 1, 1)
			now := fixed
			h := admin.Handler(p, admin.Options{
				DB: d.db, Dialect: d.dialect,
				Actor: func(*http.Request) string { return "ann <admin>" },
				Now:   func() time.Time { now = now.Add(time.Minute); return now },
			})
			for _, f := range []url.Values{form("group", "User:1:books"), form("key", "authors:1"), form("tag", "books")} {
				if rec := post(h, "/invalidate", f); rec.Code != http.StatusSeeOther {
					t.Fatalf("POST %v: got %d: %s", f, rec.Code, rec.Body)
				}
			}
			golden(t, "page", mask(p, get(h, "/?done="+url.QueryEscape("tag:books:1")).Body.Bytes()))
		})
	}
	t.Run("empty", func(t *testing.T) {
		p := newPlugin(t)
		h := admin.Handler(p, admin.Options{Now: func() time.Time { return fixed }})
		golden(t, "empty", mask(p, get(h, "/").Body.Bytes()))
	})
}

// mask replaces the plugin's random key prefix.
func mask(p *cacheme.Plugin, b []byte) []byte {
	return bytes.ReplaceAll(b, []byte(p.Settings().Prefix), []byte("PREFIX:"))
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "admin", name+".golden")
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
