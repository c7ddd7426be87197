package cacheme_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// shelfBook is what the inspection tests memoize.
type shelfBook struct {
	ID    int
	Title string
}

// inspectEnv memoizes n books under the tag "ibooks" with keys "ibook:<i>"
// (groups "shelf:<i%3>"), and a field "reader:<i>>books" for i < 5 (tag
// "ireaders"), all computed once.
type inspectEnv struct {
	p       *cacheme.Plugin
	rdb     redis.UniversalClient
	books   func(context.Context, int) (shelfBook, error)
	readers func(context.Context, int) ([]int, error)
	mu      sync.Mutex
	runs    map[string]int // key -> computations
}

func newInspectEnv(t *testing.T, rdb redis.UniversalClient, n int, s cacheme.Settings) *inspectEnv {
	t.Helper()
	e := &inspectEnv{rdb: rdb, runs: map[string]int{}}
	e.p = newPluginOn(t, rdb, s)
	e.books = mustWrap(t, e.p, cacheme.Spec[int, shelfBook]{
		Key:    func(i int) string { return "ibook:" + strconv.Itoa(i) },
		Groups: func(i int, _ shelfBook) []string { return []string{"shelf:" + strconv.Itoa(i%3)} },
		Tag:    "ibooks",
	}, func(_ context.Context, i int) (shelfBook, error) {
		e.ran("ibook:" + strconv.Itoa(i))
		return shelfBook{ID: i, Title: "Book " + strconv.Itoa(i)}, nil
	})
	e.readers = mustWrap(t, e.p, cacheme.Spec[int, []int]{
		Key: func(i int) string { return "reader:" + strconv.Itoa(i) + ">books" },
		Tag: "ireaders",
	}, func(_ context.Context, i int) ([]int, error) {
		e.ran("reader:" + strconv.Itoa(i) + ">books")
		return []int{i, i + 1}, nil
	})
	for i := range n {
		call(t, e.books, i)
	}
	for i := range 5 {
		call(t, e.readers, i)
	}
	return e
}

func (e *inspectEnv) ran(key string) {
	e.mu.Lock()
	e.runs[key]++
	e.mu.Unlock()
}

// computed returns how often key was computed.
func (e *inspectEnv) computed(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[key]
}

// scanAll pages through ScanEntries with o and returns the keys listed,
// sorted, failing on a key listed twice.
func scanAll(t *testing.T, p *cacheme.Plugin, o cacheme.ScanOptions) ([]string, []cacheme.EntryInfo) {
	t.Helper()
	var keys []string
	var infos []cacheme.EntryInfo
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("ScanEntries never ends")
		}
		page, err := p.ScanEntries(bg, o)
		ok(t, err)
		for _, in := range page.Entries {
			if seen[in.Key] {
				t.Fatalf("%s listed twice", in.Key)
			}
			seen[in.Key] = true
			keys = append(keys, in.Key)
			infos = append(infos, in)
		}
		if page.Next == "" {
			break
		}
		o.Cursor = page.Next
	}
	slices.Sort(keys)
	return keys, infos
}

func bookKeys(ids ...int) []string {
	var out []string
	for _, i := range ids {
		out = append(out, "ibook:"+strconv.Itoa(i))
	}
	slices.Sort(out)
	return out
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestScanEntries(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 60, cacheme.Settings{})
	readers := []string{"reader:0>books", "reader:1>books", "reader:2>books", "reader:3>books", "reader:4>books"}
	var shelf0 []int
	for i := 0; i < 60; i += 3 {
		shelf0 = append(shelf0, i)
	}
	tests := []struct {
		name string
		o    cacheme.ScanOptions
		want []string
	}{
		{"everything", cacheme.ScanOptions{Limit: 7}, append(bookKeys(span(0, 60)...), readers...)},
		{"glob", cacheme.ScanOptions{Match: "ibook:1?", Limit: 3}, bookKeys(span(10, 20)...)},
		{"class", cacheme.ScanOptions{Match: "ibook:[1-2]"}, bookKeys(1, 2)},
		{"field glob", cacheme.ScanOptions{Match: "reader:*>books"}, readers},
		{"field glob, no match", cacheme.ScanOptions{Match: "reader:*>users"}, nil},
		{"base field", cacheme.ScanOptions{Match: "ibook:5*>base"}, bookKeys(5, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59)},
		{"tag", cacheme.ScanOptions{Tag: "ireaders", Limit: 2}, readers},
		{"group", cacheme.ScanOptions{Group: "shelf:0", Limit: 4}, bookKeys(shelf0...)},
		{"group and glob", cacheme.ScanOptions{Group: "shelf:0", Match: "ibook:?"}, bookKeys(0, 3, 6, 9)},
		{"unknown group", cacheme.ScanOptions{Group: "shelf:9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := scanAll(t, e.p, tt.o)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q; want %q", got, tt.want)
			}
		})
	}
	// Listing changes nothing: every entry is still a hit.
	for i := range 60 {
		call(t, e.books, i)
		equals(t, e.computed("ibook:"+strconv.Itoa(i)), 1)
	}
}

func TestScanEntriesDescribes(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 3, cacheme.Settings{})
	_, err := e.p.InvalidateKeys(bg, "ibook:1")
	ok(t, err)
	_, infos := scanAll(t, e.p, cacheme.ScanOptions{Match: "ibook:*"})
	byKey := map[string]cacheme.EntryInfo{}
	for _, in := range infos {
		byKey[in.Key] = in
	}
	valid, stale := byKey["ibook:0"], byKey["ibook:1"]
	equals(t, valid.State, cacheme.EntryValid)
	equals(t, valid.RedisKey, e.p.Settings().Prefix+"ibook:0>base>")
	equals(t, valid.Field, "base")
	deepEquals(t, valid.Groups, []string{"shelf:0"})
	if valid.TTL <= 50*time.Second || valid.TTL > time.Minute || valid.Size < 3 || valid.Leased {
		t.Fatalf("ibook:0: %+v; want a TTL under a minute, a size, no lease", valid)
	}
	equals(t, stale.State, cacheme.EntryStale)
	if stale.TTL <= 0 || stale.TTL > cacheme.DefaultStaleTTL {
		t.Fatalf("stale TTL %v; want within StaleTTL", stale.TTL)
	}
	if valid.Preview != "" {
		t.Fatalf("a listing has no preview: %q", valid.Preview)
	}
}

func TestInspect(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 2, cacheme.Settings{})
	in, err := e.p.Inspect(bg, "ibook:1")
	ok(t, err)
	equals(t, in.Key, "ibook:1")
	equals(t, in.State, cacheme.EntryValid)
	equals(t, in.Preview, `{"ID":1,"Title":"Book 1"}`)
	equals(t, in.PreviewErr, "")
	deepEquals(t, in.Groups, []string{"shelf:1"})
	in, err = e.p.Inspect(bg, "ibook:1>base") // the same entry
	ok(t, err)
	equals(t, in.Key, "ibook:1")
	equals(t, in.Preview, `{"ID":1,"Title":"Book 1"}`)
	in, err = e.p.Inspect(bg, "reader:2>books")
	ok(t, err)
	equals(t, in.Preview, `[2,3]`)
	equals(t, in.Field, "books")

	in, err = e.p.Inspect(bg, "ibook:99")
	ok(t, err)
	equals(t, in.State, cacheme.EntryAbsent)
	equals(t, in.Key, "ibook:99")

	_, err = e.p.Inspect(bg, "shelf:1:invalid")
	isErr(t, err, cacheme.ErrInvalidKey)
	_, err = e.p.Inspect(bg, "")
	isErr(t, err, cacheme.ErrInvalidKey)

	// A computation in progress holds the lease.
	g := newGate()
	slow := mustWrap(t, e.p, cacheme.Spec[int, int]{Key: func(int) string { return "slow" }, Tag: "slow"},
		func(_ context.Context, i int) (int, error) { g.wait(); return i, nil })
	ch := goCall(slow, 7)
	g.awaitStarted(t)
	in, err = e.p.Inspect(bg, "slow")
	ok(t, err)
	if in.State != cacheme.EntryAbsent || !in.Leased || in.LeaseTTL <= 0 || in.LeaseTTL > cacheme.DefaultLeaseTTL {
		t.Fatalf("during the computation: %+v; want absent and leased", in)
	}
	g.open()
	ok(t, recv(t, ch).err)
	in, err = e.p.Inspect(bg, "slow")
	ok(t, err)
	if in.State != cacheme.EntryValid || in.Leased {
		t.Fatalf("after the computation: %+v; want valid, no lease", in)
	}
}

// TestInspectCodecs checks the preview with another codec, and of a value
// written by a codec the plugin does not use.
func TestInspectCodecs(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	js := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, Codec: cacheme.JSONCodec{}})
	f := mustWrap(t, js, cacheme.Spec[int, map[string]int]{Key: func(int) string { return "m" }, Tag: "m"},
		func(context.Context, int) (map[string]int, error) { return map[string]int{"a": 1}, nil })
	call(t, f, 0)
	in, err := js.Inspect(bg, "m")
	ok(t, err)
	equals(t, in.Preview, `{"a":1}`)
	mp := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	in, err = mp.Inspect(bg, "m")
	ok(t, err)
	equals(t, in.Preview, "")
	equals(t, in.PreviewErr, "written by codec 2; this plugin's codec is 1")
	equals(t, in.State, cacheme.EntryValid)
}

func TestInvalidatePattern(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 30, cacheme.Settings{NoStale: true})
	// A plugin with another prefix: a pattern never reaches its keys.
	other := newInspectEnv(t, rdb, 30, cacheme.Settings{})

	var mu sync.Mutex
	var steps [][2]int
	progress := func(done, total int) {
		mu.Lock()
		steps = append(steps, [2]int{done, total})
		mu.Unlock()
	}
	n, err := e.p.InvalidatePattern(bg, "ibook:1*", true, progress)
	ok(t, err)
	equals(t, n, 11) // ibook:1, ibook:10..19
	for i := range 30 {
		call(t, e.books, i) // a dry run changes nothing
		equals(t, e.computed("ibook:"+strconv.Itoa(i)), 1)
	}
	if len(steps) == 0 {
		t.Fatal("no progress reported")
	}
	for i, s := range steps {
		if s[0] > s[1] || i > 0 && s[0] < steps[i-1][0] {
			t.Fatalf("progress %v is not monotone within its total", steps)
		}
	}
	if last := steps[len(steps)-1]; last[0] != last[1] || last[1] < 30 {
		t.Fatalf("last progress %v; want done == total >= 30", last)
	}

	n, err = e.p.InvalidatePattern(bg, "ibook:1*", false, nil)
	ok(t, err)
	equals(t, n, 11)
	n, err = e.p.InvalidatePattern(bg, "ibook:1*", true, nil)
	ok(t, err)
	equals(t, n, 0) // nothing left to hit
	for i := range 30 {
		call(t, e.books, i)
		want := 1
		if strings.HasPrefix(strconv.Itoa(i), "1") {
			want = 2
		}
		equals(t, e.computed("ibook:"+strconv.Itoa(i)), want)
		call(t, other.books, i)
		equals(t, other.computed("ibook:"+strconv.Itoa(i)), 1)
	}

	// A field pattern invalidates that field only.
	n, err = e.p.InvalidatePattern(bg, "reader:[0-2]>books", false, nil)
	ok(t, err)
	equals(t, n, 3)
	for i := range 5 {
		call(t, e.readers, i)
		equals(t, e.computed("reader:"+strconv.Itoa(i)+">books"), 1+btoi(i <= 2))
	}
	n, err = e.p.InvalidatePattern(bg, "reader:*>users", false, nil)
	ok(t, err)
	equals(t, n, 0)

	// The whole namespace.
	n, err = e.p.InvalidatePattern(bg, "*", true, nil)
	ok(t, err)
	equals(t, n, 35)
	n, err = e.p.InvalidatePattern(bg, "*", false, nil)
	ok(t, err)
	equals(t, n, 35)
	got, _ := scanAll(t, e.p, cacheme.ScanOptions{})
	if len(got) != 0 {
		t.Fatalf("entries left after *: %q", got)
	}
	for i := range 30 {
		call(t, other.books, i)
		equals(t, other.computed("ibook:"+strconv.Itoa(i)), 1)
	}
	equals(t, e.p.Stats().Total.Invalidations, int64(11+3+35))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestInspectBadInput(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	tests := []struct {
		name string
		o    cacheme.ScanOptions
		is   error
	}{
		{"negative limit", cacheme.ScanOptions{Limit: -1}, cacheme.ErrInvalidSpec},
		{"limit too large", cacheme.ScanOptions{Limit: cacheme.MaxScanLimit + 1}, cacheme.ErrInvalidSpec},
		{"tag and group", cacheme.ScanOptions{Tag: "a", Group: "b"}, cacheme.ErrInvalidSpec},
		{"bad cursor", cacheme.ScanOptions{Cursor: "x"}, cacheme.ErrInvalidSpec},
		{"negative skip", cacheme.ScanOptions{Cursor: "0.0.-1"}, cacheme.ErrInvalidSpec},
		{"set cursor with a node", cacheme.ScanOptions{Tag: "a", Cursor: "1.0.0"}, cacheme.ErrInvalidSpec},
		{"NUL in a glob", cacheme.ScanOptions{Match: "a\x00"}, cacheme.ErrInvalidKey},
		{"empty field glob", cacheme.ScanOptions{Match: "a>"}, cacheme.ErrInvalidKey},
		{"empty key glob", cacheme.ScanOptions{Match: ">a"}, cacheme.ErrInvalidKey},
		{"bad tag", cacheme.ScanOptions{Tag: "a\xff"}, cacheme.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.ScanEntries(bg, tt.o)
			isErr(t, err, tt.is)
		})
	}
	for _, pat := range []string{"", "a\x00*", ">*", "\xff"} {
		_, err := p.InvalidatePattern(bg, pat, true, nil)
		isErr(t, err, cacheme.ErrInvalidKey)
	}
	var nilPlugin *cacheme.Plugin
	_, err := nilPlugin.ScanEntries(bg, cacheme.ScanOptions{})
	isErr(t, err, cacheme.ErrInvalidSpec)
	ok(t, p.Close(bg))
	_, err = p.InvalidatePattern(bg, "*", false, nil)
	isErr(t, err, cacheme.ErrClosed)
}

func TestPatternCoversAll(t *testing.T) {
	for pat, want := range map[string]bool{
		"*": true, "**": true, "*>*": true, "***>**": true,
		"*>base": false, "a*": false, "?*": false, `\*`: false, "*>": false, "": false,
	} {
		if got := cacheme.PatternCoversAll(pat); got != want {
			t.Errorf("PatternCoversAll(%q) = %v; want %v", pat, got, want)
		}
	}
}

// TestGlob checks the field globs, which the plugin matches itself, against
// the key globs, which Redis matches (SCAN MATCH): each pattern selects
// the same keys both ways.
func TestGlob(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 0, cacheme.Settings{})
	names := []string{"a", "ab", "abc", "a*c", "a?c", "a[c", "b", "ba", "x-y", "a\\b"}
	f := mustWrap(t, e.p, cacheme.Spec[string, int]{Key: func(s string) string { return "g>" + s }, Tag: "g"},
		func(context.Context, string) (int, error) { return 1, nil })
	h := mustWrap(t, e.p, cacheme.Spec[string, int]{Key: func(s string) string { return "h:" + s }, Tag: "h"},
		func(context.Context, string) (int, error) { return 1, nil })
	for _, n := range names {
		call(t, f, n)
		call(t, h, n)
	}
	for _, pat := range []string{"*", "a*", "a?", "a?c", `a\*c`, `a\?c`, "a[bc]*", "a[^b]*", "[a-b]", "*c", "a*b*c", "?", "??", `a[\[]c`, "x[-]y"} {
		t.Run(pat, func(t *testing.T) {
			byRedis, _ := scanAll(t, e.p, cacheme.ScanOptions{Match: "h:" + pat})
			byField, _ := scanAll(t, e.p, cacheme.ScanOptions{Match: "g>" + pat})
			for i, k := range byRedis {
				byRedis[i] = strings.TrimPrefix(k, "h:")
			}
			for i, k := range byField {
				byField[i] = strings.TrimPrefix(k, "g>")
			}
			if !slices.Equal(byRedis, byField) {
				t.Fatalf("Redis matches %q, the field glob %q", byRedis, byField)
			}
		})
	}
}

func TestInvalidateStoredTag(t *testing.T) {
	rdb, _ := testRedis(t)
	e := newInspectEnv(t, rdb, 4, cacheme.Settings{})
	tool := newPluginOn(t, rdb, cacheme.Settings{Prefix: e.p.Settings().Prefix}) // registers nothing
	_, err := tool.InvalidateTag(bg, "ibooks")
	isErr(t, err, cacheme.ErrUnknownTag)
	n, err := tool.InvalidateStoredTag(bg, "ibooks")
	ok(t, err)
	equals(t, n, 4)
	call(t, e.books, 0)
	equals(t, e.computed("ibook:0"), 2)
	_, err = tool.InvalidateStoredTag(bg, "nope")
	isErr(t, err, cacheme.ErrUnknownTag)
	_, err = tool.InvalidateStoredTag(bg, "bad\x00")
	isErr(t, err, cacheme.ErrInvalidKey)
	// A registered tag goes through InvalidateTag and is counted for it.
	n, err = e.p.InvalidateStoredTag(bg, "ireaders")
	ok(t, err)
	equals(t, n, 5)
	equals(t, e.p.Stats().Tags["ireaders"].Invalidations, int64(5))
}

// TestInspectCluster lists and invalidates by pattern over every master of
// a Redis Cluster (CACHEME_TEST_REDIS_CLUSTER; one node otherwise).
func TestInspectCluster(t *testing.T) {
	rdb, cluster := clusterRedis(t)
	e := newInspectEnv(t, rdb, 200, cacheme.Settings{NoStale: true})
	if cluster != nil {
		// The keys are spread over every master.
		var mu sync.Mutex
		perNode := map[string]int{}
		prefix := e.p.Settings().Prefix
		ok(t, cluster.ForEachMaster(bg, func(ctx context.Context, c *redis.Client) error {
			n := 0
			iter := c.Scan(ctx, 0, prefix+"ibook:*", 100).Iterator()
			for iter.Next(ctx) {
				n++
			}
			mu.Lock()
			perNode[c.Options().Addr] = n
			mu.Unlock()
			return iter.Err()
		}))
		for addr, n := range perNode {
			if n == 0 {
				t.Fatalf("no key on %s: %v", addr, perNode)
			}
		}
	}
	got, _ := scanAll(t, e.p, cacheme.ScanOptions{Match: "ibook:*", Limit: 9})
	deepEquals(t, got, bookKeys(span(0, 200)...))
	got, _ = scanAll(t, e.p, cacheme.ScanOptions{Group: "shelf:2", Limit: 9})
	equals(t, len(got), 66)
	n, err := e.p.InvalidatePattern(bg, "ibook:1*", true, nil)
	ok(t, err)
	equals(t, n, 111) // 1, 10-19, 100-199
	n, err = e.p.InvalidatePattern(bg, "ibook:1*", false, nil)
	ok(t, err)
	equals(t, n, 111)
	for i := range 200 {
		call(t, e.books, i)
		want := 1 + btoi(strings.HasPrefix(strconv.Itoa(i), "1"))
		if c := e.computed("ibook:" + strconv.Itoa(i)); c != want {
			t.Fatalf("ibook:%d computed %d times; want %d", i, c, want)
		}
	}
}

// TestInvalidatePatternFails checks that a pattern invalidation that Redis
// refuses says so.
func TestInvalidatePatternFails(t *testing.T) {
	p := newPluginOn(t, deadRedis(t), cacheme.Settings{})
	_, err := p.InvalidatePattern(bg, "*", false, nil)
	if !errors.Is(err, cacheme.ErrRedis) {
		t.Fatalf("got %v; want ErrRedis", err)
	}
	_, err = p.ScanEntries(bg, cacheme.ScanOptions{})
	isErr(t, err, cacheme.ErrRedis)
	_, err = p.Inspect(bg, "a")
	isErr(t, err, cacheme.ErrRedis)
}
