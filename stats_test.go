package cacheme_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
)

// Each step moves exactly the counters it should, overall and for its tag.
func TestStats(t *testing.T) {
	rec := &errRecorder{}
	p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook, HerdRetryCount: 2, HerdRetryTime: time.Millisecond})
	ctx := context.Background()
	var paused atomic.Pointer[gate] // set: calls of argument 99 wait on it
	load := func(_ context.Context, n int) (int, error) {
		if n < 0 {
			return 0, errLoader
		}
		if g := paused.Load(); g != nil && n == 99 {
			g.wait()
		}
		return n, nil
	}
	fa := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "a" }, Tag: "a"}, load)
	fb := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "b" }, Tag: "b", Stale: cacheme.StaleOff}, load)
	fUnencodable := mustWrap(t, p, cacheme.Spec[int, func()]{Key: func(int) string { return "f" }, Tag: "f"},
		func(context.Context, int) (func(), error) { return func() {}, nil })

	// background runs f(99) paused, runs during, then lets f finish.
	background := func(f func(context.Context, int) (int, error), during func()) {
		t.Helper()
		g := newGate()
		defer g.open()
		paused.Store(g)
		res := goCall(f, 99)
		g.awaitStarted(t)
		paused.Store(nil)
		during()
		g.open()
		ok(t, recv(t, res).err)
	}

	var want struct{ total, a, b, f cacheme.Counters }
	check := func(step string) {
		t.Helper()
		st := p.Stats()
		for _, c := range []struct {
			name      string
			got, want cacheme.Counters
		}{
			{"total", st.Total, want.total},
			{"a", st.Tags["a"], want.a},
			{"b", st.Tags["b"], want.b},
			{"f", st.Tags["f"], want.f},
		} {
			if c.got != c.want {
				t.Fatalf("%s: %s counters got %+v; want %+v", step, c.name, c.got, c.want)
			}
		}
		if len(st.Tags) != 3 {
			t.Fatalf("%s: got tags %v; want a, b, f", step, st.Tags)
		}
	}
	check("start")

	call(t, fa, 1)
	want.a.Misses++
	want.total.Misses++
	check("miss")

	call(t, fa, 2)
	want.a.Hits++
	want.total.Hits++
	check("hit")

	_, err := fb(ctx, -1)
	isErr(t, err, errLoader)
	want.b.LoaderErrors++
	want.total.LoaderErrors++
	check("loader error")

	n, err := p.InvalidateTag(ctx, "a")
	ok(t, err)
	equals(t, n, 1)
	want.total.Invalidations++
	want.a.Invalidations++ // a tag's invalidations count for the tag
	check("invalidation")

	// f(99) recomputes a; meanwhile a reader gets the stale value.
	background(fa, func() { equals(t, call(t, fa, 3), 1) })
	want.a.Stale++
	want.total.Stale++
	want.a.Misses++
	want.total.Misses++
	check("stale")

	// f(99) computes b; meanwhile a reader waits for it in vain (2 polls of
	// 1ms) and computes itself.
	background(fb, func() { equals(t, call(t, fb, 4), 4) })
	want.b.HerdWaits++
	want.b.HerdTimeouts++
	want.b.Misses++
	want.total.HerdWaits++
	want.total.HerdTimeouts++
	want.total.Misses++
	check("herd timeout")

	ok(t, rdb.Set(ctx, cacheme.EntryKey(p, "a"), cacheme.EntryValue([]byte("garbage"), 0, ""), time.Minute).Err())
	equals(t, call(t, fa, 5), 5)
	want.a.Corrupt++
	want.a.Misses++
	want.total.Corrupt++
	want.total.Misses++
	check("corrupt")

	// An invalidation overtakes a computation: its result is not stored.
	n, err = p.InvalidateKeys(ctx, "a")
	ok(t, err)
	equals(t, n, 1)
	background(fa, func() {
		n, err := p.InvalidateKeys(ctx, "a")
		ok(t, err)
		equals(t, n, 1)
	})
	want.a.Misses++
	want.a.Conflicts++
	want.total.Misses++
	want.total.Conflicts++
	want.total.Invalidations += 2
	check("conflict")

	// A result that cannot be encoded is returned, reported and not
	// stored. It is not a Redis error.
	for range 2 {
		r, err := fUnencodable(ctx, 0)
		ok(t, err)
		if r == nil {
			t.Fatal("got nil function")
		}
		want.f.Misses++
		want.total.Misses++
	}
	check("unencodable")
	equals(t, len(rec.All()), 3) // corrupt value, unencodable twice
	if !rec.Has(cacheme.ErrCorrupt) {
		t.Fatalf("reported %v; want ErrCorrupt", rec.All())
	}
}

// Redis errors are counted overall and for the tag of the call; those of
// invalidations overall only.
func TestStatsRedisErrors(t *testing.T) {
	p := newPluginOn(t, deadRedis(t), cacheme.Settings{})
	ctx := context.Background()
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "k" }, Tag: "t"}, identity)
	equals(t, call(t, f, 1), 1)
	_, err := p.InvalidateKeys(ctx, "k")
	isErr(t, err, cacheme.ErrRedis)
	_, err = p.InvalidateGroups(ctx, "g")
	isErr(t, err, cacheme.ErrRedis)
	st := p.Stats()
	deepEquals(t, st.Tags, map[string]cacheme.Counters{"t": {RedisErrors: 1}})
	deepEquals(t, st.Total, cacheme.Counters{RedisErrors: 3})
}

// Tags lists every registered tag, sorted: wrapped functions' tags and node
// types' names, whether used or not.
func TestStatsTags(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	deepEquals(t, p.Tags(), []string{})
	mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "z" }, Tag: "zeta"}, identity)
	mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "a" }, Tag: "alpha"}, identity)
	mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "a2" }, Tag: "alpha"}, identity)
	mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "d" }}, tagDefaultFn)
	_, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, TestNodeDynamic, int]{
		Node: func(id int) TestNodeDynamic { return TestNodeDynamic{ID: id} },
	}, identity)
	ok(t, err)
	cacheme.Nodes[BasicNode, int](p)
	want := []string{"BasicNode", "TestNodeDynamic", "alpha", "cacheme_test.tagDefaultFn", "zeta"}
	deepEquals(t, p.Tags(), want)
	st := p.Stats()
	equals(t, len(st.Tags), len(want))
	for _, tag := range want {
		if c, found := st.Tags[tag]; !found || c != (cacheme.Counters{}) {
			t.Fatalf("Stats().Tags[%q] = %+v, %v; want zero counters", tag, c, found)
		}
	}
	// A registered tag can be invalidated before anything was cached.
	n, err := p.InvalidateTag(context.Background(), "BasicNode")
	ok(t, err)
	equals(t, n, 0)
}
