package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/gormcacheme/cacheme"
)

// Go counterparts of upstream cacheme v0.1.1 tests/test_key.py (key mode).
// The stale cases (#17-#24) are in stale_test.go. #15 (pattern
// invalidation) and #16 (invalid_sources) have no counterpart: the plugin
// has no pattern invalidation and no sources.

// tagDefaultFn has no explicit tag: its tag is its name.
func tagDefaultFn(_ context.Context, n int) (int, error) { return n, nil }

// #1: no connection.
func TestNewWithoutRedis(t *testing.T) {
	p := cacheme.New(cacheme.Settings{})
	isErr(t, p.Err(), cacheme.ErrNoRedis)
}

// #3: a disabled plugin never caches and writes nothing.
func TestWrapDisabled(t *testing.T) {
	p, rdb := newPlugin(t, cacheme.Settings{Disabled: true})
	var runs atomic.Int64
	f := mustWrap(t, p, cacheme.Spec[int, int]{
		Key:    func(int) string { return "test>me" },
		Groups: func(int, int) []string { return []string{"test_invalid"} },
	}, func(_ context.Context, n int) (int, error) { runs.Add(1); return n, nil })
	for _, n := range []int{1, 2, 2} {
		equals(t, call(t, f, n), n)
	}
	equals(t, runs.Load(), 3)
	// Invalidations still run (and find nothing).
	n, err := p.InvalidateKeys(context.Background(), "test>me")
	ok(t, err)
	equals(t, n, 0)
	if keys := scanKeys(t, rdb, p.Settings().Prefix); len(keys) != 0 {
		t.Fatalf("got keys %v; want none", keys)
	}
	equals(t, p.Stats().Total.Misses, 0)
}

// #4, #5, #6: invalidation groups. Upstream accepted a string, a list or a
// nested list; in Go it is a []string, where empty names and duplicates
// are ignored.
func TestWrapInvalidKeys(t *testing.T) {
	tests := []struct {
		name   string
		groups []string
		want   map[string]int64 // group -> members before invalidation
	}{
		{"one name", []string{"test_invalid"}, map[string]int64{"test_invalid": 1}},
		{"duplicates and empty names", []string{"", "test_invalid", "", "test_invalid"}, map[string]int64{"test_invalid": 1}},
		{"several groups", []string{"other", "test_invalid"}, map[string]int64{"test_invalid": 1, "other": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rdb := newPlugin(t, cacheme.Settings{})
			ctx := context.Background()
			f := mustWrap(t, p, cacheme.Spec[int, int]{
				Key:    func(int) string { return "test>me" },
				Groups: func(int, int) []string { return tt.groups },
			}, identity)
			equals(t, call(t, f, 1), 1)
			equals(t, call(t, f, 2), 1)
			for g, want := range tt.want {
				n, err := rdb.ZCard(ctx, p.Settings().Prefix+g+":invalid").Result()
				ok(t, err)
				equals(t, n, want)
			}
			n, err := p.InvalidateGroups(ctx, "test_invalid")
			ok(t, err)
			equals(t, n, 1)
			equals(t, call(t, f, 2), 2)
			equals(t, call(t, f, 3), 2)
		})
	}
}

// The groups may depend on the result (django-cacheme D12).
func TestWrapInvalidKeysFromResult(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	var runs atomic.Int64
	f := mustWrap(t, p, cacheme.Spec[int, []int]{
		Key: func(int) string { return "books" },
		Groups: func(_ int, books []int) []string {
			var out []string
			for _, b := range books {
				out = append(out, "Book:"+strconv.Itoa(b))
			}
			return out
		},
	}, func(_ context.Context, b int) ([]int, error) { runs.Add(1); return []int{b}, nil })
	deepEquals(t, call(t, f, 1), []int{1})
	deepEquals(t, call(t, f, 2), []int{1})
	n, err := p.InvalidateGroups(ctx, "Book:2")
	ok(t, err)
	equals(t, n, 0)
	n, err = p.InvalidateGroups(ctx, "Book:1")
	ok(t, err)
	equals(t, n, 1)
	deepEquals(t, call(t, f, 2), []int{2})
	equals(t, runs.Load(), 2)
}

type keySelf struct{ PP int }

type keyArgs struct {
	Self   keySelf
	A      int
	Args   []int
	Kwargs map[string]int
}

// #7: the key is built from several parts of the arguments, and the result
// is stored under it.
func TestWrapArgumentBinding(t *testing.T) {
	p, rdb := newPlugin(t, cacheme.Settings{})
	var runs atomic.Int64
	f := mustWrap(t, p, cacheme.Spec[keyArgs, int]{
		Key: func(a keyArgs) string { return strconv.Itoa(a.Self.PP + a.A + a.Args[0] + a.Kwargs["ff"]) },
	}, func(_ context.Context, a keyArgs) (int, error) {
		runs.Add(1)
		return a.Self.PP + a.A + a.Args[0] + a.Kwargs["ff"], nil
	})
	equals(t, call(t, f, keyArgs{keySelf{2}, 3, []int{5, 100}, map[string]int{"ff": 10}}), 20)
	got, err := rdb.HGet(context.Background(), p.Settings().Prefix+"20", "v:base").Bytes()
	ok(t, err)
	payload, err := msgpack.Marshal(20)
	ok(t, err)
	// Stored form: format version 1, codec 1 (msgpack), payload.
	deepEquals(t, got, append([]byte{1, 1}, payload...))
	// Other arguments with the same key share the entry.
	equals(t, call(t, f, keyArgs{keySelf{10}, 10, []int{0}, nil}), 20)
	equals(t, runs.Load(), 1)
}

// #8: hit and miss callbacks.
func TestWrapHitMiss(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	type event struct {
		kind, key string
		arg, res  int
	}
	var events []event
	f := mustWrap(t, p, cacheme.Spec[int, int]{
		Key: func(n int) string { return "hm:" + strconv.Itoa(n%10) },
		Hit: func(_ context.Context, key string, n, r int) {
			events = append(events, event{"hit", key, n, r})
		},
		Miss: func(_ context.Context, key string, n int) {
			events = append(events, event{"miss", key, n, 0})
		},
	}, identity)
	equals(t, call(t, f, 1), 1)
	deepEquals(t, events, []event{{"miss", "hm:1", 1, 0}})
	equals(t, call(t, f, 11), 1)
	deepEquals(t, events, []event{{"miss", "hm:1", 1, 0}, {"hit", "hm:1", 11, 1}})
}

// #9: tags. Every wrapped function has one (its name by default);
// invalidating it returns how many entries it hit, and nothing the second
// time.
func TestWrapTags(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	f1 := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "t1" }}, tagDefaultFn)
	f2 := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "t2" }, Tag: "test_instance_sec"}, identity)
	f3 := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "t3" }, Tag: "three"}, identity)
	// Two functions may share a tag.
	f3b := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "t3b" }, Tag: "three"}, identity)
	// Defined, never called.
	mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "t4" }, Tag: "four"}, identity)
	for _, f := range []func(context.Context, int) (int, error){f1, f2, f3, f3b} {
		equals(t, call(t, f, 1), 1)
		equals(t, call(t, f, 2), 1)
	}
	deepEquals(t, p.Tags(), []string{"cacheme_test.tagDefaultFn", "four", "test_instance_sec", "three"})

	tests := []struct {
		tag  string
		want int
	}{
		{"cacheme_test.tagDefaultFn", 1},
		{"test_instance_sec", 1},
		{"three", 2},
		{"three", 0},
		{"four", 0},
	}
	for _, tt := range tests {
		n, err := p.InvalidateTag(ctx, tt.tag)
		ok(t, err)
		if n != tt.want {
			t.Fatalf("InvalidateTag(%q) = %d; want %d", tt.tag, n, tt.want)
		}
	}
	for _, f := range []func(context.Context, int) (int, error){f1, f2, f3, f3b} {
		equals(t, call(t, f, 3), 3)
	}
	_, err := p.InvalidateTag(ctx, "no-such-tag")
	isErr(t, err, cacheme.ErrUnknownTag)
}

type skipArg struct {
	Skip bool
	N    int
}

// #10, with upstream's bug fixed: SkipIf returning false caches as usual,
// true computes afresh and writes nothing.
func TestWrapSkip(t *testing.T) {
	t.Run("Skip", func(t *testing.T) {
		p, rdb := newPlugin(t, cacheme.Settings{})
		var c counter
		f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "skip" }, SkipIf: func(int) bool { return true }}, c.fn)
		equals(t, call(t, f, 1), 1)
		equals(t, call(t, f, 1), 2)
		if keys := scanKeys(t, rdb, p.Settings().Prefix); len(keys) != 0 {
			t.Fatalf("got keys %v; want none", keys)
		}
	})
	t.Run("SkipIf", func(t *testing.T) {
		p, rdb := newPlugin(t, cacheme.Settings{})
		f := mustWrap(t, p, cacheme.Spec[skipArg, int]{
			Key:    func(skipArg) string { return "skip" },
			SkipIf: func(a skipArg) bool { return a.Skip },
		}, func(_ context.Context, a skipArg) (int, error) { return a.N, nil })
		// Skipped calls before anything is cached write nothing.
		equals(t, call(t, f, skipArg{true, 1}), 1)
		if keys := scanKeys(t, rdb, p.Settings().Prefix); len(keys) != 0 {
			t.Fatalf("got keys %v after a skipped call; want none", keys)
		}
		steps := []struct {
			arg  skipArg
			want int
		}{
			{skipArg{false, 3}, 3},
			{skipArg{true, 4}, 4},
			{skipArg{false, 5}, 3},
			{skipArg{false, 6}, 3},
			{skipArg{true, 7}, 7},
			{skipArg{false, 8}, 3},
		}
		for i, s := range steps {
			if got := call(t, f, s.arg); got != s.want {
				t.Fatalf("step %d: f(%+v) = %d; want %d", i, s.arg, got, s.want)
			}
		}
	})
}

// #11: a value is valid for its TTL (the spec's, or the settings' default)
// and recomputed after it. TTLs are measured in milliseconds.
func TestWrapTTL(t *testing.T) {
	const ttl = 150 * time.Millisecond
	tests := []struct {
		name     string
		settings time.Duration
		spec     time.Duration
	}{
		{"spec TTL", time.Minute, ttl},
		{"settings TTL", ttl, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{TTL: tt.settings})
			short := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "CACHE:TO>test" }, TTL: tt.spec}, identity)
			long := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "CACHE:TO3>test" }, TTL: 10 * time.Second}, identity)
			before := time.Now()
			equals(t, call(t, short, 1), 1)
			stored := time.Now() // the short entry expires at most ttl after this
			equals(t, call(t, long, 1), 1)
			equals(t, call(t, short, 2), 1)
			equals(t, call(t, long, 2), 1)
			if d := time.Since(before); d >= ttl {
				t.Fatalf("the cached reads took %v, not under the TTL %v: cannot tell expiry from caching", d, ttl)
			}
			time.Sleep(time.Until(stored.Add(ttl + 30*time.Millisecond)))
			equals(t, call(t, short, 3), 3)
			equals(t, call(t, long, 3), 1)
			equals(t, call(t, short, 4), 3)
		})
	}
}

// #12: a key another caller is computing (upstream: pre-marked in
// progress). The caller polls HerdRetryCount times, then computes the value
// itself; it does not store it, since it has no lease: the lease holder's
// value is the one cached.
func TestWrapHerdWaitRunsOut(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	holder := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	waiter := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, HerdRetryCount: 3, HerdRetryTime: 10 * time.Millisecond})
	spec := cacheme.Spec[int, int]{Key: func(int) string { return "CACHE:TH" }}
	g := newGate()
	defer g.open()
	fh := mustWrap(t, holder, spec, func(_ context.Context, n int) (int, error) { g.wait(); return n, nil })
	var runs atomic.Int64
	fw := mustWrap(t, waiter, spec, func(_ context.Context, n int) (int, error) { runs.Add(1); return n, nil })

	held := goCall(fh, 7)
	g.awaitStarted(t)
	start := time.Now()
	equals(t, call(t, fw, 12), 12)
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("the waiter returned after %v; want at least 3 polls of 10ms", d)
	}
	equals(t, runs.Load(), 1)
	st := waiter.Stats().Total
	equals(t, st.HerdWaits, 1)
	equals(t, st.HerdTimeouts, 1)
	equals(t, st.Misses, 0)

	g.open()
	r := recv(t, held)
	ok(t, r.err)
	equals(t, r.v, 7)
	equals(t, call(t, fw, 15), 7)
	equals(t, runs.Load(), 1)
}

// #13: a waiter returns the value another caller stored while it waited,
// without running its own function or its hit callback.
func TestWrapHerdWaitSuccess(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	holder := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	waiter := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, HerdRetryCount: 100, HerdRetryTime: 10 * time.Millisecond})
	g := newGate()
	defer g.open()
	fh := mustWrap(t, holder, cacheme.Spec[int, string]{Key: func(int) string { return "CACHE:TH" }},
		func(context.Context, int) (string, error) { g.wait(); return "100", nil })
	var runs, hits atomic.Int64
	fw := mustWrap(t, waiter, cacheme.Spec[int, string]{
		Key: func(int) string { return "CACHE:TH" },
		Hit: func(context.Context, string, int, string) { hits.Add(1) },
	}, func(context.Context, int) (string, error) { runs.Add(1); return "waiter", nil })

	held := goCall(fh, 1)
	g.awaitStarted(t)
	waited := goCall(fw, 1)
	waitFor(t, "the waiter to wait", func() bool { return waiter.Stats().Total.HerdWaits == 1 })
	g.open()
	r := recv(t, held)
	ok(t, r.err)
	equals(t, r.v, "100")
	r = recv(t, waited)
	ok(t, r.err)
	equals(t, r.v, "100")
	equals(t, runs.Load(), 0)
	equals(t, hits.Load(), 0)
	equals(t, waiter.Stats().Total.HerdTimeouts, 0)
}

// #14: invalidation by key: one field ("hash>field") or a whole hash.
func TestInvalidateKeys(t *testing.T) {
	tests := []struct {
		name            string
		keys            []string
		want            int
		wantMe, wantYou int64 // values after the invalidation
	}{
		{"field", []string{"test>me"}, 1, 2, 1},
		{"whole hash", []string{"test"}, 2, 2, 2},
		{"both fields, repeated", []string{"test>me", "test>you", "test>me"}, 2, 2, 2},
		{"other field", []string{"test>other"}, 0, 1, 1},
		{"other hash", []string{"tes", "test:x", "other>me"}, 0, 1, 1},
		{"no keys", nil, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			var me, you counter
			fMe := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "test>me" }}, me.fn)
			fYou := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "test>you" }}, you.fn)
			equals(t, call(t, fMe, 0), 1)
			equals(t, call(t, fYou, 0), 1)
			n, err := p.InvalidateKeys(context.Background(), tt.keys...)
			ok(t, err)
			equals(t, n, tt.want)
			equals(t, call(t, fMe, 0), tt.wantMe)
			equals(t, call(t, fYou, 0), tt.wantYou)
			// Recomputed values are cached again.
			equals(t, call(t, fMe, 0), tt.wantMe)
			equals(t, call(t, fYou, 0), tt.wantYou)
		})
	}
}

// Only the first '>' splits a key: "a>b>c" is field "b>c" of hash "a"
// (upstream kept "b" only). A key without '>' is field "base".
func TestKeyHashField(t *testing.T) {
	p, rdb := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	prefix := p.Settings().Prefix
	var c counter
	f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "a>b>c" }}, c.fn)
	plain := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "plain" }}, identity)
	equals(t, call(t, f, 0), 1)
	equals(t, call(t, plain, 5), 5)

	fields, err := rdb.HKeys(ctx, prefix+"a").Result()
	ok(t, err)
	slices.Sort(fields)
	deepEquals(t, fields, []string{"s:b>c", "v:b>c", "x:b>c"}) // s: stale serving on
	fields, err = rdb.HKeys(ctx, prefix+"plain").Result()
	ok(t, err)
	slices.Sort(fields)
	deepEquals(t, fields, []string{"s:base", "v:base", "x:base"})

	n, err := p.InvalidateKeys(ctx, "a>b")
	ok(t, err)
	equals(t, n, 0)
	equals(t, call(t, f, 0), 1)
	n, err = p.InvalidateKeys(ctx, "a>b>c")
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, f, 0), 2)
	n, err = p.InvalidateKeys(ctx, "plain>base")
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, plain, 6), 6)
}

// Falsy results are cached like any other (upstream's wait loop ignored
// them). Nil and empty slices and maps stay distinct.
func TestWrapFalsyValues(t *testing.T) {
	type empty struct {
		Name string
		N    int
	}
	tests := []struct {
		name string
		run  func(t *testing.T, p *cacheme.Plugin)
	}{
		{"zero int", cachedTwice(0)},
		{"empty string", cachedTwice("")},
		{"false", cachedTwice(false)},
		{"zero float", cachedTwice(0.0)},
		{"empty slice", cachedTwice([]int{})},
		{"nil slice", cachedTwice([]int(nil))},
		{"empty map", cachedTwice(map[string]int{})},
		{"nil map", cachedTwice(map[string]int(nil))},
		{"nil pointer", cachedTwice((*empty)(nil))},
		{"zero struct", cachedTwice(empty{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			tt.run(t, p)
		})
	}
}

// cachedTwice returns a test that memoizes a function returning v, calls it
// twice, and checks that both calls return v and the second one is a hit.
func cachedTwice[R any](v R) func(t *testing.T, p *cacheme.Plugin) {
	return func(t *testing.T, p *cacheme.Plugin) {
		t.Helper()
		var runs atomic.Int64
		f := mustWrap(t, p, cacheme.Spec[int, R]{Key: func(int) string { return "falsy" }},
			func(context.Context, int) (R, error) { runs.Add(1); return v, nil })
		deepEquals(t, call(t, f, 1), v)
		deepEquals(t, call(t, f, 2), v)
		equals(t, runs.Load(), 1)
		equals(t, p.Stats().Total.Hits, 1)
	}
}

type book struct {
	ID    int
	Shelf string
}

// A "hash>field" key built from the arguments stores the result in that
// field of that hash.
func TestWrapKeyField(t *testing.T) {
	p, rdb := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	var runs atomic.Int64
	f := mustWrap(t, p, cacheme.Spec[book, int]{Key: func(b book) string { return fmt.Sprintf("book:%d>%s", b.ID, b.Shelf) }},
		func(_ context.Context, b book) (int, error) { runs.Add(1); return b.ID, nil })
	equals(t, call(t, f, book{7, "x"}), 7)
	equals(t, call(t, f, book{7, "x"}), 7)
	equals(t, runs.Load(), 1)
	n, err := rdb.HExists(ctx, p.Settings().Prefix+"book:7", "v:x").Result()
	ok(t, err)
	equals(t, n, true)

	// A key the plugin cannot use is an error, and the function does not run.
	empty := mustWrap(t, p, cacheme.Spec[book, int]{Key: func(book) string { return "" }},
		func(_ context.Context, b book) (int, error) { runs.Add(1); return b.ID, nil })
	_, err = empty(ctx, book{ID: 1})
	isErr(t, err, cacheme.ErrInvalidKey)
	equals(t, runs.Load(), 1)
}

// The default tag is stable: a named function's or method's name, and for
// a function literal the name of the function it is written in.
func TestWrapDefaultTag(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	key := func(int) string { return "k" }
	_, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: key}, func(_ context.Context, n int) (int, error) { return n, nil })
	ok(t, err)
	_, err = cacheme.Wrap(p, cacheme.Spec[int, int]{Key: key, Tag: "lit"}, func(_ context.Context, n int) (int, error) { return n, nil })
	ok(t, err)
	_, err = cacheme.Wrap(p, cacheme.Spec[int, int]{Key: key}, tagDefaultFn)
	ok(t, err)
	var c counter
	_, err = cacheme.Wrap(p, cacheme.Spec[int, int64]{Key: key}, c.fn)
	ok(t, err)
	deepEquals(t, p.Tags(), []string{"cacheme_test.TestWrapDefaultTag", "cacheme_test.counter.fn", "cacheme_test.tagDefaultFn", "lit"})
}

func TestWrapInvalidSpec(t *testing.T) {
	valid, _ := newPlugin(t, cacheme.Settings{})
	key := func(int) string { return "k" }
	tests := []struct {
		name string
		p    *cacheme.Plugin
		spec cacheme.Spec[int, int]
		fn   func(context.Context, int) (int, error)
	}{
		{"no key", valid, cacheme.Spec[int, int]{}, identity},
		{"negative TTL", valid, cacheme.Spec[int, int]{Key: key, TTL: -time.Second}, identity},
		{"nil function", valid, cacheme.Spec[int, int]{Key: key}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := cacheme.Wrap(tt.p, tt.spec, tt.fn)
			isErr(t, err, cacheme.ErrInvalidSpec)
			if f != nil {
				t.Fatalf("got a function; want nil")
			}
		})
	}
}

// Keys that are empty or would collide with the plugin's own group and tag
// sets are rejected, when caching and when invalidating.
func TestInvalidKeys(t *testing.T) {
	tests := []struct {
		key   string
		valid bool
	}{
		{"", false},
		{">f", false},
		{"a>", false},
		{"x:invalid", false},
		{"x:tag", false},
		{"x:invalid>f", false},
		{"x:tag>f", false},
		{"x>f:invalid", true},
		{"x>f:tag", true},
		{"x:invalidx", true},
		{"x:tags", true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			p, rdb := newPlugin(t, cacheme.Settings{})
			ctx := context.Background()
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return tt.key }},
				func(_ context.Context, n int) (int, error) { runs.Add(1); return n, nil })
			_, err := f(ctx, 1)
			_, ierr := p.InvalidateKeys(ctx, tt.key)
			if tt.valid {
				ok(t, err)
				ok(t, ierr)
				equals(t, runs.Load(), 1)
				return
			}
			isErr(t, err, cacheme.ErrInvalidKey)
			isErr(t, ierr, cacheme.ErrInvalidKey)
			equals(t, runs.Load(), 0)
			if keys := scanKeys(t, rdb, p.Settings().Prefix); len(keys) != 0 {
				t.Fatalf("got keys %v; want none", keys)
			}
		})
	}
	t.Run("empty group", func(t *testing.T) {
		p, _ := newPlugin(t, cacheme.Settings{})
		_, err := p.InvalidateGroups(context.Background(), "ok", "")
		isErr(t, err, cacheme.ErrInvalidKey)
	})
}

// A reserved key must not reach Redis: invalidating "g:invalid" as a key
// would otherwise run on the group's sorted set.
func TestInvalidateKeysReservedSuffix(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	f := mustWrap(t, p, cacheme.Spec[int, int]{
		Key:    func(int) string { return "k" },
		Groups: func(int, int) []string { return []string{"g"} },
		Tag:    "t",
	}, identity)
	equals(t, call(t, f, 1), 1)
	for _, k := range []string{"g:invalid", "t:tag"} {
		_, err := p.InvalidateKeys(ctx, k)
		isErr(t, err, cacheme.ErrInvalidKey)
		if errors.Is(err, cacheme.ErrRedis) {
			t.Fatalf("InvalidateKeys(%q) = %v; want no Redis error", k, err)
		}
	}
	equals(t, p.Stats().Total.RedisErrors, 0)
	n, err := p.InvalidateGroups(ctx, "g")
	ok(t, err)
	equals(t, n, 1)
}
