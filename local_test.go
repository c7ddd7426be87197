package cacheme_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// localSettings is the local layer the tests turn on: a short heartbeat,
// so that a lost connection shows within a fraction of a second.
var localSettings = cacheme.LocalSettings{MaxBytes: 1 << 20, MaxEntries: 1000, Heartbeat: 200 * time.Millisecond}

// waitLocal waits until p's local layer serves (its subscription is
// confirmed) after more than purges purges.
func waitLocal(t testing.TB, p *cacheme.Plugin, purges int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		live, n := cacheme.LocalLive(p)
		if live && n > purges {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local layer is not live (live %v, purges %d; want more than %d)", live, n, purges)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// countingClient returns another client of rdb's server whose commands
// (not the subscription's) are counted.
func countingClient(t *testing.T, rdb redis.UniversalClient) (*redis.Client, *commandCounter) {
	t.Helper()
	c := secondClient(t, rdb)
	cc := &commandCounter{}
	c.AddHook(cc)
	return c, cc
}

// A local hit costs no Redis command: the first call computes, the second
// is a Redis hit that fills the local layer, the third is served from it.
func TestLocalHit(t *testing.T) {
	rdb, _ := testRedis(t)
	c, cc := countingClient(t, rdb)
	p := newPluginOn(t, c, cacheme.Settings{Local: localSettings, StatsInterval: -1})
	waitLocal(t, p, 0)
	var cnt counter
	f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "local:hit" }}, cnt.fn)
	equals(t, call(t, f, 0), int64(1))
	equals(t, call(t, f, 0), int64(1))
	_, before := cc.get()
	for range 100 {
		equals(t, call(t, f, 0), int64(1))
	}
	cmds, after := cc.get()
	if after != before {
		t.Fatalf("100 local hits made %d round trips: %v", after-before, cmds[len(cmds)-(after-before):])
	}
	st := p.Stats()
	equals(t, st.Total.Hits, int64(1))
	equals(t, st.Total.LocalHits, int64(100))
	equals(t, st.Total.Misses, int64(1))
	equals(t, st.Tags["local:hit"].LocalHits, int64(0)) // tags are the function's, not the key
	if st.Tags[p.Tags()[0]].LocalHits != 100 {
		t.Fatalf("tag %s counts %d local hits; want 100", p.Tags()[0], st.Tags[p.Tags()[0]].LocalHits)
	}
	// The same process's invalidation evicts at once.
	_, err := p.InvalidateKeys(bg, "local:hit")
	ok(t, err)
	equals(t, cacheme.LocalHas(p, "local:hit"), false)
	equals(t, call(t, f, 0), int64(2))
}

// twoProcesses returns plugins A and B on one prefix, each with a client of
// its own (two processes); B has the local layer on, and is live.
func twoProcesses(t *testing.T, a, b cacheme.Settings) (pa, pb *cacheme.Plugin) {
	t.Helper()
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	a.Prefix, b.Prefix = prefix, prefix
	if b.Local == (cacheme.LocalSettings{}) {
		b.Local = localSettings
	}
	b.NoStale = true
	pa = newPluginOn(t, secondClient(t, rdb), a)
	pb = newPluginOn(t, secondClient(t, rdb), b)
	waitLocal(t, pb, 0)
	return pa, pb
}

// An invalidation in another process (by key, by group, by tag; the
// admin page and the command line call these) evicts the local entries it
// names, and only those.
func TestLocalCrossProcess(t *testing.T) {
	pa, pb := twoProcesses(t, cacheme.Settings{}, cacheme.Settings{})
	var truth sync.Map // key -> version
	version := func(k int) int64 { v, _ := truth.LoadOrStore(k, int64(1)); return v.(int64) }
	spec := cacheme.Spec[int, int64]{
		Key:    func(k int) string { return fmt.Sprintf("x:%d", k) },
		Groups: func(k int, _ int64) []string { return []string{fmt.Sprintf("g:%d", k%2)} },
		Tag:    "local-cross",
	}
	fb := mustWrap(t, pb, spec, func(_ context.Context, k int) (int64, error) { return version(k), nil })
	// A registers the tag too, as the process that invalidates it would.
	_ = mustWrap(t, pa, spec, func(_ context.Context, k int) (int64, error) { return version(k), nil })
	fill := func() {
		t.Helper()
		for k := range 4 {
			call(t, fb, k)
			call(t, fb, k)
			if !cacheme.LocalHas(pb, fmt.Sprintf("x:%d", k)) {
				t.Fatalf("x:%d is not in B's local layer after a Redis hit", k)
			}
		}
	}
	bump := func(ks ...int) {
		for _, k := range ks {
			truth.Store(k, version(k)+1)
		}
	}
	check := func(how string, changed ...int) {
		t.Helper()
		for k := range 4 {
			want := version(k)
			is := false
			for _, c := range changed {
				is = is || c == k
			}
			waitFor(t, fmt.Sprintf("B to see x:%d's new value after %s", k, how), func() bool {
				if is {
					return !cacheme.LocalHas(pb, fmt.Sprintf("x:%d", k))
				}
				return true
			})
			equals(t, call(t, fb, k), want)
			if !is && !cacheme.LocalHas(pb, fmt.Sprintf("x:%d", k)) {
				t.Fatalf("%s evicted x:%d, which it does not name", how, k)
			}
		}
	}
	fill()
	bump(1)
	_, err := pa.InvalidateKeys(bg, "x:1")
	ok(t, err)
	check("InvalidateKeys", 1)

	fill()
	bump(0, 2)
	_, err = pa.InvalidateGroups(bg, "g:0")
	ok(t, err)
	check("InvalidateGroups", 0, 2)

	fill()
	bump(0, 1, 2, 3)
	_, err = pa.InvalidateTag(bg, "local-cross")
	ok(t, err)
	check("InvalidateTag", 0, 1, 2, 3)

	fill()
	bump(3)
	_, err = pa.InvalidatePattern(bg, "x:3", false, nil)
	ok(t, err)
	check("InvalidatePattern", 3)
	if pb.Stats().Total.LocalHits == 0 {
		t.Fatal("B counted no local hit")
	}
}

