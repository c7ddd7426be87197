package admin_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/nodes"
)

var entryLink = regexp.MustCompile(`<a href="entry\?key=([^"]*)"><code>`)
var nextLink = regexp.MustCompile(`<a href="browse\?([^"]*)">Next page</a>`)

// listed returns the keys a Browse page links to.
func listed(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for _, m := range entryLink.FindAllStringSubmatch(body, -1) {
		k, err := url.QueryUnescape(m[1])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func TestBrowse(t *testing.T) {
	p := newPlugin(t)
	books := wrap(t, p, "books", new(counter), func(a int) []string { return []string{"shelf:" + itoa(a%2)} })
	for i := range admin.BrowseRows + 20 {
		call(t, books, i, int64(i+1))
	}
	script := wrap(t, p, "<script>alert(1)</script>", new(counter), nil) // keys "<script>alert(1)</script>:<n>"
	call(t, script, 1, 1)
	h := admin.Handler(p, admin.Options{InsecureNoAuth: true})

	// browseAll lists the entries of every page of a listing, following
	// "Next page" (a page holds what a bounded number of SCAN steps found:
	// on a Redis shared with other keys, a filtered listing may need
	// several).
	browseAll := func(query string) []string {
		var all []string
		target := "/browse" + query
		for pages := 0; ; pages++ {
			rec := get(h, target)
			if rec.Code != http.StatusOK || pages > 1000 {
				t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
			}
			body := rec.Body.String()
			all = append(all, listed(t, body)...)
			m := nextLink.FindStringSubmatch(body)
			if m == nil {
				break
			}
			target = "/browse?" + strings.ReplaceAll(m[1], "&amp;", "&")
		}
		slices.Sort(all)
		return all
	}
	// Every page, following "Next page", lists every entry once.
	all := browseAll("")
	if len(all) != admin.BrowseRows+21 || slices.Compact(slices.Clone(all)) == nil || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("listed %d keys (%d distinct); want %d", len(all), len(slices.Compact(slices.Clone(all))), admin.BrowseRows+21)
	}
	if !slices.Contains(all, "<script>alert(1)</script>:1") {
		t.Fatalf("the <script> key is not listed: %q", all[len(all)-3:])
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"?match=books:1?", []string{"books:10", "books:11", "books:12", "books:13", "books:14", "books:15", "books:16", "books:17", "books:18", "books:19"}},
		{"?tag=" + url.QueryEscape("<script>alert(1)</script>"), []string{"<script>alert(1)</script>:1"}},
		{"?group=shelf:1&match=books:?", []string{"books:1", "books:3", "books:5", "books:7", "books:9"}},
		{"?group=nothing", nil},
	}
	for _, tt := range tests {
		if got := browseAll(tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("GET /browse%s: %q; want %q", tt.query, got, tt.want)
		}
	}
	body := get(h, "/browse?tag="+url.QueryEscape("<script>alert(1)</script>")).Body.String()
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;:1") {
		t.Fatalf("the <script> key is not escaped: %s", body)
	}

	for _, bad := range []string{"?match=%3Ex", "?tag=a&group=b", "?cursor=nope", "?match=a%00"} {
		if rec := get(h, "/browse"+bad); rec.Code != http.StatusBadRequest {
			t.Errorf("GET /browse%s: got %d %s; want 400", bad, rec.Code, rec.Body)
		}
	}
	if rec := post(h, "/browse", nil); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /browse: got %d", rec.Code)
	}
	call(t, books, 1, 2) // browsing changed nothing: still cached
}

func TestEntryPage(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			f := wrap(t, p, "books", new(counter), func(a int) []string { return []string{"User:" + itoa(a) + ":books"} })
			call(t, f, 7, 1)
			h := admin.Handler(p, admin.Options{DB: d.DB, Dialect: d.Dialect, Authorize: byHeader})
			ann := []string{"X-User", "ann"}
			rec := get(h, "/entry?key=books:7", ann...)
			body := rec.Body.String()
			for _, want := range []string{"<h2>Entry <code>books:7</code></h2>", "<td>valid</td>", "<pre>1</pre>",
				`<a href="browse?group=User%3a7%3abooks"><code>User:7:books</code></a>`, `<input type="hidden" name="target" value="books:7">`} {
				if !strings.Contains(body, want) {
					t.Errorf("entry page lacks %s:\n%s", want, body)
				}
			}
			m := csrfField.FindStringSubmatch(body)
			fm := form("key", "books:7")
			fm.Set("csrf", m[1])
			if rec := post(h, "/invalidate", fm, ann...); rec.Code != http.StatusSeeOther {
				t.Fatalf("POST: %d %s", rec.Code, rec.Body)
			}
			info, err := p.Inspect(bg, "books:7")
			if err != nil || info.State == cacheme.EntryValid {
				t.Fatalf("after the POST: %+v, %v; want it no longer valid", info, err)
			}
			if got, want := readLog(t, d.DB), []logRow{{"ann", "key", "books:7", 1}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
			hist := get(h, "/history", ann...).Body.String()
			if !strings.Contains(hist, "<td>ann</td><td>key</td><td><code>books:7</code></td><td class=\"n\">1</td>") {
				t.Fatalf("History lacks the invalidation:\n%s", hist)
			}
			if rec := get(h, "/entry?key=books:99", ann...); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "No value.") {
				t.Fatalf("an absent entry: %d %s", rec.Code, rec.Body)
			}
			for _, bad := range []string{"/entry", "/entry?key=", "/entry?key=x:invalid"} {
				if rec := get(h, bad, ann...); rec.Code != http.StatusBadRequest {
					t.Errorf("GET %s: got %d; want 400", bad, rec.Code)
				}
			}
		})
	}
}

// TestPatternPage runs a pattern's dry run, then its confirmation, and a
// pattern that covers the whole namespace, which needs all=yes.
func TestPatternPage(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			var c counter
			f := wrap(t, p, "books", &c, nil)
			for i := range 12 {
				call(t, f, i, int64(i+1))
			}
			h := admin.Handler(p, open(d))
			fm := tform(t, h, "pattern", "books:1*")
			rec := post(h, "/invalidate", fm)
			body := rec.Body.String()
			if rec.Code != http.StatusOK || !strings.Contains(body, `matches <strong id="count">3</strong> entries`) ||
				!strings.Contains(body, `<input type="hidden" name="confirm" value="yes">`) || strings.Contains(body, `name="all"`) {
				t.Fatalf("dry run: %d %s", rec.Code, body)
			}
			call(t, f, 1, 2) // nothing invalidated yet
			if got := readLog(t, d.DB); len(got) != 0 {
				t.Fatalf("a dry run logged %v", got)
			}
			_, err := p.InvalidateKeys(bg, "books:1") // so that books:1 is recomputed below
			if err != nil {
				t.Fatal(err)
			}
			call(t, f, 1, 13)
			fm.Set("confirm", "yes")
			rec = post(h, "/invalidate", fm)
			if loc := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || loc != "./?done="+url.QueryEscape("pattern:books:1*:3") {
				t.Fatalf("confirmed: %d %q %s", rec.Code, loc, rec.Body)
			}
			call(t, f, 10, 14) // recomputed
			call(t, f, 2, 3)   // not matched: cached
			flash := get(h, "/?done="+url.QueryEscape("pattern:books:1*:3")).Body.String()
			if !strings.Contains(flash, "Invalidated pattern &#34;books:1*&#34;: 3 entries.") {
				t.Fatalf("no flash: %s", flash)
			}

			all := tform(t, h, "pattern", "*")
			body = post(h, "/invalidate", all).Body.String()
			if !strings.Contains(body, "covers the whole namespace") || !strings.Contains(body, `<input type="checkbox" name="all" value="yes" required>`) {
				t.Fatalf("the whole namespace's dry run: %s", body)
			}
			all.Set("confirm", "yes")
			if rec := post(h, "/invalidate", all); rec.Code != http.StatusBadRequest {
				t.Fatalf("unconfirmed *: %d %s", rec.Code, rec.Body)
			}
			call(t, f, 2, 3)
			all.Set("all", "yes")
			if rec := post(h, "/invalidate", all); rec.Code != http.StatusSeeOther {
				t.Fatalf("confirmed *: %d %s", rec.Code, rec.Body)
			}
			call(t, f, 2, 15)
			// * hit 10: books:1 and books:11 were stale (invalidated, not recomputed).
			if got, want := readLog(t, d.DB), []logRow{{"", "pattern", "books:1*", 3}, {"", "pattern", "*", 10}}; !slices.Equal(got, want) {
				t.Fatalf("log: got %v; want %v", got, want)
			}
		})
	}
}

func TestHistoryPaging(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p := newPlugin(t)
			h := admin.Handler(p, open(d))
			tok := token(t, h)
			n := admin.HistoryRows + 5
			for i := range n {
				f := form("key", "k:"+strconv.Itoa(i))
				f.Set("csrf", tok)
				if rec := post(h, "/invalidate", f); rec.Code != http.StatusSeeOther {
					t.Fatalf("POST: %d %s", rec.Code, rec.Body)
				}
			}
			overview := get(h, "/").Body.String()
			if strings.Count(overview, "<td><code>k:") != admin.LogRows || !strings.Contains(overview, `<a href="history">All invalidations</a>`) {
				t.Fatalf("the overview's log: %s", overview)
			}
			first := get(h, "/history").Body.String()
			if got := strings.Count(first, "<td><code>k:"); got != admin.HistoryRows {
				t.Fatalf("first page: %d rows", got)
			}
			if !strings.Contains(first, "<code>k:"+strconv.Itoa(n-1)+"</code>") {
				t.Fatal("the first page does not start with the newest row")
			}
			m := regexp.MustCompile(`<a href="history\?before=(\d+)">Older</a>`).FindStringSubmatch(first)
			if m == nil {
				t.Fatalf("no link to the older rows: %s", first)
			}
			second := get(h, "/history?before="+m[1]).Body.String()
			if got := strings.Count(second, "<td><code>k:"); got != 5 || strings.Contains(second, "Older") {
				t.Fatalf("second page: %d rows: %s", got, second)
			}
			for _, bad := range []string{"/history?before=x", "/history?before=-1"} {
				if rec := get(h, bad); rec.Code != http.StatusBadRequest {
					t.Errorf("GET %s: %d", bad, rec.Code)
				}
			}
		})
	}
	h := admin.Handler(newPlugin(t), admin.Options{InsecureNoAuth: true})
	if rec := get(h, "/history"); rec.Code != http.StatusNotFound {
		t.Fatalf("History without a DB: %d", rec.Code)
	}
}

// shelf is a node type for the page's node rows.
type shelf struct{ ID int }

func (s shelf) Key() string                     { return "shelf:" + strconv.Itoa(s.ID) }
func (shelf) InvalidNodes() []nodes.InvalidNode { return nil }

// TestFleetOverview checks the counters of all processes: two plugins
// publish, a third one (as the command line's page is) shows the sum and
// invalidates a tag and a node type it never registered.
func TestFleetOverview(t *testing.T) {
	rdb := testRedis(t)
	a := newPluginOn(t, rdb, "")
	prefix := a.Settings().Prefix
	b := newPluginOn(t, rdb, prefix)
	fa := wrap(t, a, "books", new(counter), nil)
	for i := range 4 {
		call(t, fa, i, int64(i+1))
	}
	call(t, fa, 0, 1)
	var sc counter
	shelves, err := cacheme.WrapNode(b, cacheme.NodeSpec[int, shelf, int64]{Node: func(i int) shelf { return shelf{i} }},
		func(ctx context.Context, i int) (int64, error) { return sc.fn(ctx, i) })
	if err != nil {
		t.Fatal(err)
	}
	call(t, shelves, 1, 1)
	call(t, shelves, 1, 1)
	for _, p := range []*cacheme.Plugin{a, b} {
		if err := p.PublishStats(bg); err != nil {
			t.Fatal(err)
		}
	}
	page := newPluginOn(t, rdb, prefix)
	h := admin.Handler(page, admin.Options{InsecureNoAuth: true})
	body := get(h, "/").Body.String()
	nodeTag := cacheme.Nodes[shelf, int64](b).Tag()
	for _, want := range []string{
		`2 processes published · served from the cache: <strong id="ratio">28.6%</strong>`, // 2 hits of 7 calls
		"<h3>Functions</h3>", "<h3>Nodes</h3>", "<title>",
		`<input type="hidden" name="kind" value="tag"><input type="hidden" name="target" value="books">`,
		`<input type="hidden" name="kind" value="node"><input type="hidden" name="target" value="` + nodeTag + `">`,
		"No tags registered in this process.",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %s", want)
		}
	}
	if rec := post(h, "/invalidate", tform(t, h, "tag", "books")); rec.Code != http.StatusSeeOther || !strings.Contains(rec.Header().Get("Location"), "books%3A4") {
		t.Fatalf("tag: %d %q %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	if rec := post(h, "/invalidate", tform(t, h, "node", nodeTag)); rec.Code != http.StatusSeeOther || !strings.HasSuffix(rec.Header().Get("Location"), "%3A1") {
		t.Fatalf("node: %d %q %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	call(t, shelves, 1, 2)
	if rec := post(h, "/invalidate", tform(t, h, "node", "books")); rec.Code != http.StatusBadRequest {
		t.Fatalf("a tag as a node: %d %s", rec.Code, rec.Body)
	}
}

// TestBrowseAuthorization checks that browsing is its own action.
func TestBrowseAuthorization(t *testing.T) {
	p := newPlugin(t)
	call(t, wrap(t, p, "books", new(counter), nil), 1, 1)
	h := admin.Handler(p, admin.Options{Authorize: func(r *http.Request, a admin.Action) (string, error) {
		if a == admin.ActionView {
			return "viewer", nil
		}
		return "", errors.New("counters only")
	}})
	if body := get(h, "/").Body.String(); strings.Contains(body, `href="browse"`) || strings.Contains(body, "<form") {
		t.Fatalf("the viewer is offered more than the counters: %s", body)
	}
	for _, path := range []string{"/browse", "/entry?key=books:1"} {
		if rec := get(h, path); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "browse refused: counters only") {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	ro := admin.Handler(p, admin.Options{InsecureNoAuth: true, ReadOnly: true})
	body := get(ro, "/entry?key=books:1").Body.String()
	if strings.Contains(body, `method="post"`) || !strings.Contains(body, "<pre>1</pre>") {
		t.Fatalf("read-only entry page: %s", body)
	}
	if rec := post(ro, "/invalidate", tform(t, admin.Handler(p, admin.Options{InsecureNoAuth: true}), "pattern", "*")); rec.Code != http.StatusForbidden {
		t.Fatalf("read-only pattern: %d", rec.Code)
	}
}
