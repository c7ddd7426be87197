package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/gormcacheme/cacheme"
)

var errLoader = errors.New("loader failed")

// Many callers in two processes (two plugins sharing one Redis and prefix)
// ask for one cold key at once: the function runs exactly once and every
// caller gets its result.
func TestLoadThunderingHerd(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	s := cacheme.Settings{Prefix: prefix, HerdRetryCount: 100, HerdRetryTime: 10 * time.Millisecond}
	plugins := []*cacheme.Plugin{newPluginOn(t, rdb, s), newPluginOn(t, rdb, s)}
	var runs atomic.Int64
	load := func(context.Context, int) (int64, error) {
		time.Sleep(50 * time.Millisecond)
		return runs.Add(1), nil
	}
	var fs []func(context.Context, int) (int64, error)
	for _, p := range plugins {
		fs = append(fs, mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "cold" }}, load))
	}
	const perPlugin = 50
	start := make(chan struct{})
	results := make(chan result[int64], 2*perPlugin)
	var wg sync.WaitGroup
	for _, f := range fs {
		for range perPlugin {
			wg.Go(func() {
				<-start
				v, err := f(context.Background(), 0)
				results <- result[int64]{v, err}
			})
		}
	}
	close(start)
	wg.Wait()
	close(results)
	n := 0
	for r := range results {
		ok(t, r.err)
		equals(t, r.v, 1)
		n++
	}
	equals(t, n, 2*perPlugin)
	equals(t, runs.Load(), 1)
	var misses, hits, timeouts int64
	for _, p := range plugins {
		st := p.Stats().Total
		misses += st.Misses
		hits += st.Hits
		timeouts += st.HerdTimeouts
	}
	equals(t, misses, 1)
	equals(t, hits, 2*perPlugin-1)
	equals(t, timeouts, 0)
}

// A computation that fails (error or panic) gives its lease up at once: a
// caller waiting for it computes the value itself on its next poll, long
// before the lease would have run out.
func TestLoadFailureReleasesLease(t *testing.T) {
	const leaseTTL = 3 * time.Second
	tests := []struct {
		name string
		fail func() (int, error)
		// check the holder's outcome: its error, or the value it panicked with.
		check func(t *testing.T, err error, panicked any)
	}{
		{
			name: "error",
			fail: func() (int, error) { return 0, errLoader },
			check: func(t *testing.T, err error, panicked any) {
				isErr(t, err, errLoader)
				if panicked != nil {
					t.Fatalf("panicked with %v; want an error", panicked)
				}
			},
		},
		{
			name: "panic",
			fail: func() (int, error) { panic("boom") },
			check: func(t *testing.T, err error, panicked any) {
				pe, isPE := panicked.(*cacheme.PanicError)
				if !isPE {
					t.Fatalf("panicked with %#v; want a *cacheme.PanicError", panicked)
				}
				equals(t, pe.Value, any("boom"))
				if !strings.HasSuffix(pe.Key, "failing>base") {
					t.Fatalf("PanicError.Key = %q; want the entry key", pe.Key)
				}
				if !strings.Contains(pe.Error(), "boom") {
					t.Fatalf("PanicError.Error() = %q; want the panic value in it", pe.Error())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, _ := testRedis(t)
			prefix := uniquePrefix()
			// The waiter's retry budget (10s) outlasts the lease: only the
			// release lets it compute promptly.
			s := cacheme.Settings{Prefix: prefix, LeaseTTL: leaseTTL, HerdRetryCount: 2000, HerdRetryTime: 5 * time.Millisecond}
			holder := newPluginOn(t, rdb, s)
			waiter := newPluginOn(t, rdb, s)
			spec := cacheme.Spec[int, int]{Key: func(int) string { return "failing" }}
			g := newGate()
			defer g.open()
			fh := mustWrap(t, holder, spec, func(context.Context, int) (int, error) { g.wait(); return tt.fail() })
			var runs atomic.Int64
			fw := mustWrap(t, waiter, spec, func(_ context.Context, n int) (int, error) { runs.Add(1); return n, nil })

			type outcome struct {
				err      error
				panicked any
			}
			held := make(chan outcome, 1)
			go func() {
				var o outcome
				defer func() {
					o.panicked = recover()
					held <- o
				}()
				_, o.err = fh(context.Background(), 1)
			}()
			g.awaitStarted(t)
			waited := goCall(fw, 42)
			waitFor(t, "the waiter to wait", func() bool { return waiter.Stats().Total.HerdWaits == 1 })

			failed := time.Now()
			g.open()
			var o outcome
			select {
			case o = <-held:
			case <-time.After(5 * time.Second):
				t.Fatal("the holder did not return")
			}
			tt.check(t, o.err, o.panicked)
			r := recv(t, waited)
			ok(t, r.err)
			equals(t, r.v, 42)
			if d := time.Since(failed); d > leaseTTL/3 {
				t.Fatalf("the waiter took %v after the failure; want well under the lease TTL %v", d, leaseTTL)
			}
			equals(t, runs.Load(), 1)
			hs, ws := holder.Stats().Total, waiter.Stats().Total
			equals(t, hs.LoaderErrors, 1)
			equals(t, hs.Misses, 0)
			equals(t, ws.HerdTimeouts, 0)
			equals(t, ws.Misses, 1)
			// The waiter computed under the lease, so its value is cached.
			equals(t, call(t, fw, 7), 42)
			equals(t, runs.Load(), 1)
		})
	}
}

// A failed computation leaves nothing behind: the next caller computes at
// once, without waiting for a lease.
func TestLoadFailureNothingCached(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panic=%v", panics), func(t *testing.T) {
			p, rdb := newPlugin(t, cacheme.Settings{})
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "err>f" }},
				func(_ context.Context, n int) (int, error) {
					runs.Add(1)
					if n < 0 {
						if panics {
							panic("negative")
						}
						return n, errLoader
					}
					return n, nil
				})
			for range 2 {
				func() {
					defer func() {
						v := recover()
						if _, isPE := v.(*cacheme.PanicError); panics != isPE {
							t.Fatalf("recovered %#v; want a *PanicError: %v", v, panics)
						}
					}()
					_, err := f(context.Background(), -1)
					isErr(t, err, errLoader)
				}()
				if keys := scanKeys(t, rdb, p.Settings().Prefix); len(keys) != 0 {
					fields, _ := rdb.HGetAll(context.Background(), keys[0]).Result()
					t.Fatalf("after a failure got keys %v (%v); want none", keys, fields)
				}
			}
			start := time.Now()
			equals(t, call(t, f, 5), 5)
			if d := time.Since(start); d > time.Second {
				t.Fatalf("the call after a failure took %v", d)
			}
			equals(t, call(t, f, 6), 5)
			equals(t, runs.Load(), 3)
			st := p.Stats().Total
			equals(t, st.LoaderErrors, 2)
			equals(t, st.HerdWaits, 0)
			equals(t, st.Misses, 1)
		})
	}
}

// An invalidation that comes while a value is being computed wins: the
// result, which may have been computed from old data, is returned to its
// caller but not stored, and the next read computes afresh. This holds in
// stale and non-stale mode, by key, group and tag, whether or not the entry
// was cached before (a first computation is not yet a member of its group
// or tag when they are invalidated), on one server and on several (a Ring).
// On one server the order of lease and invalidation is exact. On several,
// the plugin compares ages instead of the servers' clocks, which is exact
// only beyond a round trip: there, the invalidation comes 20ms after the
// computation started.
func TestLoadNoStaleRefill(t *testing.T) {
	kinds := []struct {
		name       string
		invalidate func(ctx context.Context, p *cacheme.Plugin) (int, error)
		// What the invalidation returns while the computation runs, for an
		// entry never cached before and for one cached before. The
		// computation's lease counts as an entry hit, but only a member of
		// a group or tag is found through it.
		cold, warm int
	}{
		{"key", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateKeys(ctx, "refill>f")
		}, 1, 1},
		// A field joins its hash's index when it is stored: a first
		// computation is not found through it (but refused all the same).
		{"whole hash", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateKeys(ctx, "refill")
		}, 0, 1},
		{"group", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateGroups(ctx, "refill-group")
		}, 0, 1},
		{"tag", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateTag(ctx, "refill-tag")
		}, 0, 1},
	}
	for _, ring := range []bool{false, true} {
		for _, k := range kinds {
			for _, mode := range []cacheme.StaleMode{cacheme.StaleOn, cacheme.StaleOff} {
				for _, warm := range []bool{false, true} {
					name := fmt.Sprintf("ring=%v/%s/stale=%v/cached before=%v", ring, k.name, mode == cacheme.StaleOn, warm)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						rdb, _ := testRedis(t)
						if ring {
							rdb = ringOf(t, rdb)
						}
						testNoStaleRefill(t, newPluginOn(t, rdb, cacheme.Settings{}), mode, warm, ring,
							k.invalidate, map[bool]int{false: k.cold, true: k.warm}[warm])
					})
				}
			}
		}
	}
}

func testNoStaleRefill(t *testing.T, p *cacheme.Plugin, mode cacheme.StaleMode, warm, ring bool,
	invalidate func(context.Context, *cacheme.Plugin) (int, error), wantHits int) {
	ctx := context.Background()
	var runs atomic.Int64
	var paused atomic.Pointer[gate] // set: the function waits on it
	f := mustWrap(t, p, cacheme.Spec[int, int64]{
		Key:    func(int) string { return "refill>f" },
		Groups: func(int, int64) []string { return []string{"refill-group"} },
		Tag:    "refill-tag",
		Stale:  mode,
	}, func(context.Context, int) (int64, error) {
		n := runs.Add(1)
		if g := paused.Load(); g != nil {
			g.wait()
		}
		return n, nil
	})
	want := int64(1)
	if warm {
		// Cached, then invalidated by key: it stays a member of its group
		// and tag.
		equals(t, call(t, f, 0), 1)
		n, err := p.InvalidateKeys(ctx, "refill>f")
		ok(t, err)
		equals(t, n, 1)
		want = 2
	}
	g := newGate()
	defer g.open()
	paused.Store(g)
	slow := goCall(f, 0)
	g.awaitStarted(t)
	// Clearly after the lease's grant: within its millisecond the store
	// cannot order them, and the function runs once more (see
	// TestStoreRecomputesAfterCloseInvalidation).
	time.Sleep(2 * time.Millisecond)
	if ring {
		time.Sleep(20 * time.Millisecond)
	}
	n, err := invalidate(ctx, p)
	ok(t, err)
	if n != wantHits {
		t.Fatalf("the invalidation during the computation hit %d entries; want %d", n, wantHits)
	}
	paused.Store(nil)
	g.open()
	r := recv(t, slow)
	ok(t, r.err)
	equals(t, r.v, want)
	equals(t, p.Stats().Total.Conflicts, 1)
	if ring {
		// On several servers a computation that starts within about one
		// round trip of an invalidation is not stored either: start the
		// next one clearly later, so that it caches.
		time.Sleep(50 * time.Millisecond)
	}
	settle()
	// Not stored: the next read computes afresh, and caches.
	equals(t, call(t, f, 0), want+1)
	equals(t, call(t, f, 0), want+1)
}

// ringOf returns a Ring client with one shard: the server of rdb. The plugin
// treats it as several servers.
func ringOf(t *testing.T, rdb redis.UniversalClient) redis.UniversalClient {
	t.Helper()
	opt := rdb.(*redis.Client).Options()
	r := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"shard": opt.Addr}, DB: opt.DB})
	t.Cleanup(func() { r.Close() })
	return r
}

// Redis is down from the start (nothing listens on its port): fail-open
// calls the function and reports, fail-closed returns ErrRedis.
func TestLoadRedisDown(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailClosed=%v", failClosed), func(t *testing.T) {
			rec := &errRecorder{}
			p := newPluginOn(t, deadRedis(t), cacheme.Settings{FailClosed: failClosed, ErrorHook: rec.Hook})
			ctx := context.Background()
			var c counter
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "down" }, Tag: "down"}, c.fn)
			for i := range 2 {
				v, err := f(ctx, 0)
				if failClosed {
					isErr(t, err, cacheme.ErrRedis)
					equals(t, v, 0)
				} else {
					ok(t, err)
					equals(t, v, int64(i+1))
				}
			}
			st := p.Stats()
			equals(t, st.Total.RedisErrors, 2)
			equals(t, st.Tags["down"].RedisErrors, 2)
			equals(t, st.Total.Misses, 0)
			if failClosed {
				equals(t, c.n.Load(), 0)
				equals(t, len(rec.All()), 0)
			} else {
				equals(t, len(rec.All()), 2)
				for _, err := range rec.All() {
					isErr(t, err, cacheme.ErrRedis)
				}
			}
			// Invalidations and Get return the error whatever the mode.
			_, err := p.InvalidateKeys(ctx, "down")
			isErr(t, err, cacheme.ErrRedis)
			_, err = p.InvalidateGroups(ctx, "g")
			isErr(t, err, cacheme.ErrRedis)
			_, err = p.InvalidateTag(ctx, "down")
			isErr(t, err, cacheme.ErrRedis)
			_, err = cacheme.Nodes[NodeStale, int](p).Get(ctx, NodeStale{ID: 1})
			isErr(t, err, cacheme.ErrRedis)
		})
	}
}

// Redis fails after values were cached: with miniredis's SetError and with
// a client whose commands fail. Fail-open computes without the cache,
// fail-closed returns ErrRedis; nothing is written, so the cached value is
// back when Redis is.
func TestLoadRedisFails(t *testing.T) {
	type outage struct {
		name        string
		start, stop func()
	}
	for _, failClosed := range []bool{false, true} {
		rdb, m := testRedis(t)
		hook := &faultHook{}
		rdb.AddHook(hook)
		outages := []outage{{"client", func() { hook.on.Store(true) }, func() { hook.on.Store(false) }}}
		if m != nil {
			outages = append(outages, outage{"miniredis SetError",
				func() { m.SetError("ERR simulated outage") }, func() { m.SetError("") }})
		}
		for _, o := range outages {
			t.Run(fmt.Sprintf("%s/FailClosed=%v", o.name, failClosed), func(t *testing.T) {
				rec := &errRecorder{}
				p := newPluginOn(t, rdb, cacheme.Settings{FailClosed: failClosed, ErrorHook: rec.Hook})
				var c counter
				f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "fails" }}, c.fn)
				equals(t, call(t, f, 0), 1)
				o.start()
				v, err := f(context.Background(), 0)
				o.stop()
				if failClosed {
					isErr(t, err, cacheme.ErrRedis)
					equals(t, c.n.Load(), 1)
					equals(t, len(rec.All()), 0)
				} else {
					ok(t, err)
					equals(t, v, 2)
					if !rec.Has(cacheme.ErrRedis) {
						t.Fatalf("reported %v; want ErrRedis", rec.All())
					}
				}
				equals(t, p.Stats().Total.RedisErrors, 1)
				equals(t, call(t, f, 0), 1)
			})
		}
	}
}

// Redis fails while the function runs: the caller gets the result, the
// error is reported (in both modes) and nothing is cached.
func TestLoadRedisFailsDuringCompute(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailClosed=%v", failClosed), func(t *testing.T) {
			rdb, _ := testRedis(t)
			hook := &faultHook{}
			rdb.AddHook(hook)
			rec := &errRecorder{}
			p := newPluginOn(t, rdb, cacheme.Settings{FailClosed: failClosed, ErrorHook: rec.Hook})
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "mid" }},
				func(context.Context, int) (int64, error) {
					if runs.Add(1) == 1 {
						hook.on.Store(true)
					}
					return runs.Load(), nil
				})
			equals(t, call(t, f, 0), 1)
			hook.on.Store(false)
			if !rec.Has(cacheme.ErrRedis) {
				t.Fatalf("reported %v; want ErrRedis", rec.All())
			}
			st := p.Stats().Total
			equals(t, st.RedisErrors, 1)
			equals(t, st.Misses, 1)
			// Nothing was stored. The lease could not be released either
			// (Redis was down), so it would block callers until LeaseTTL;
			// invalidating the key revokes it now.
			n, err := p.InvalidateKeys(context.Background(), "mid")
			ok(t, err)
			equals(t, n, 1)
			equals(t, call(t, f, 0), 2)
			equals(t, call(t, f, 0), 2)
		})
	}
}

// A stored value that cannot be decoded is a miss: it is recomputed and
// overwritten, and reported as ErrCorrupt. It never panics.
func TestLoadCorruptValue(t *testing.T) {
	str, err := msgpack.Marshal("not an int")
	ok(t, err)
	tests := []struct {
		name string
		blob []byte
	}{
		{"garbage", []byte{0xff, 0x00, 0x13, 0x37}},
		{"empty", []byte{}},
		{"one byte", []byte{1}},
		{"other format version", []byte{2, 1, 0x01}},
		{"other codec", []byte{1, 9, 0x01}},
		{"bad payload", []byte{1, 1, 0xc1}},
		{"truncated payload", []byte{1, 1, 0xcd, 0x01}},
		{"wrong type", append([]byte{1, 1}, str...)},
	}
	for _, tt := range tests {
		for _, mode := range []cacheme.StaleMode{cacheme.StaleOn, cacheme.StaleOff} {
			t.Run(fmt.Sprintf("%s/stale=%v", tt.name, mode == cacheme.StaleOn), func(t *testing.T) {
				rec := &errRecorder{}
				p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
				var c counter
				f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "corrupt" }, Stale: mode}, c.fn)
				equals(t, call(t, f, 0), 1)
				ok(t, rdb.Set(context.Background(), cacheme.EntryKey(p, "corrupt"), cacheme.EntryValue(tt.blob, 0, ""), time.Minute).Err())
				equals(t, call(t, f, 0), 2)
				equals(t, call(t, f, 0), 2)
				if !rec.Has(cacheme.ErrCorrupt) {
					t.Fatalf("reported %v; want ErrCorrupt", rec.All())
				}
				st := p.Stats().Total
				equals(t, st.Corrupt, 1)
				equals(t, st.Misses, 2)
				equals(t, st.Hits, 1)
				equals(t, st.RedisErrors, 0)
			})
		}
	}
}

// Nothing the plugin writes grows without bound: group and tag sets drop
// invalidated members and prune expired ones, and every key has a TTL.
func TestLoadBoundedGrowth(t *testing.T) {
	ctx := context.Background()
	members := func(t *testing.T, rdb redis.UniversalClient, key string) []string {
		t.Helper()
		m, err := rdb.ZRange(ctx, key, 0, -1).Result()
		ok(t, err)
		return setMembers(m)
	}
	t.Run("invalidated members are dropped", func(t *testing.T) {
		p, rdb := newPlugin(t, cacheme.Settings{})
		prefix := p.Settings().Prefix
		f := mustWrap(t, p, cacheme.Spec[int, int]{
			Key:    func(n int) string { return "b:" + strconv.Itoa(n) },
			Groups: func(int, int) []string { return []string{"g"} },
			Tag:    "t",
		}, identity)
		for i := range 5 {
			call(t, f, i)
		}
		equals(t, len(members(t, rdb, prefix+"g:invalid")), 5)
		equals(t, len(members(t, rdb, prefix+"t:tag")), 5)
		n, err := p.InvalidateGroups(ctx, "g")
		ok(t, err)
		equals(t, n, 5)
		// Only the marker of the last invalidation is left, for one lease.
		deepEquals(t, members(t, rdb, prefix+"g:invalid"), []string{""})
		n, err = p.InvalidateTag(ctx, "t")
		ok(t, err)
		equals(t, n, 0) // already invalidated by the group
		deepEquals(t, members(t, rdb, prefix+"t:tag"), []string{""})
		for _, k := range []string{prefix + "g:invalid", prefix + "t:tag"} {
			d, err := rdb.PTTL(ctx, k).Result()
			ok(t, err)
			if d <= 0 || d > p.Settings().LeaseTTL {
				t.Fatalf("PTTL %s = %v; want at most the lease TTL %v", k, d, p.Settings().LeaseTTL)
			}
		}
		// Recomputed entries join again, once each.
		for range 2 {
			for i := range 5 {
				call(t, f, i)
			}
		}
		equals(t, len(members(t, rdb, prefix+"g:invalid")), 6)
		equals(t, len(members(t, rdb, prefix+"t:tag")), 6)
	})
	t.Run("expired members are pruned", func(t *testing.T) {
		// Members outlive their value by one lease TTL.
		p, rdb := newPlugin(t, cacheme.Settings{LeaseTTL: 20 * time.Millisecond})
		prefix := p.Settings().Prefix
		spec := func(ttl time.Duration) cacheme.Spec[int, int] {
			return cacheme.Spec[int, int]{
				Key:    func(n int) string { return "e:" + strconv.Itoa(n) },
				Groups: func(int, int) []string { return []string{"g"} },
				Tag:    "t",
				TTL:    ttl,
			}
		}
		short := mustWrap(t, p, spec(50*time.Millisecond), identity)
		long := mustWrap(t, p, spec(time.Minute), identity)
		call(t, short, 1)
		call(t, short, 2)
		equals(t, len(members(t, rdb, prefix+"g:invalid")), 2)
		time.Sleep(100 * time.Millisecond)
		call(t, long, 3)
		want := []string{prefix + "e:3>base"}
		deepEquals(t, members(t, rdb, prefix+"g:invalid"), want)
		deepEquals(t, members(t, rdb, prefix+"t:tag"), want)
	})
	t.Run("expired fields of a hash are swept", func(t *testing.T) {
		p, rdb := newPlugin(t, cacheme.Settings{})
		prefix := p.Settings().Prefix
		short := mustWrap(t, p, cacheme.Spec[int, int]{
			Key: func(n int) string { return "feed>" + strconv.Itoa(n) },
			TTL: 20 * time.Millisecond,
		}, identity)
		// 500 entries of one hash, 2 fields each, expire over time; without
		// sweeping the hash would keep all 1000 fields until it expires.
		for round := range 5 {
			for i := range 100 {
				call(t, short, round*100+i)
			}
			time.Sleep(30 * time.Millisecond)
		}
		if n := rdb.HLen(ctx, prefix+"feed").Val(); n >= 500 {
			t.Fatalf("HLEN = %d after 500 short-lived entries; want it bounded by the live ones (< 500)", n)
		}
	})
	t.Run("every key has a TTL", func(t *testing.T) {
		rec := &errRecorder{}
		p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook, HerdRetryCount: 1, HerdRetryTime: time.Millisecond})
		prefix := p.Settings().Prefix
		var failing atomic.Bool
		f := mustWrap(t, p, cacheme.Spec[int, int]{
			Key: func(n int) string { return "w:" + strconv.Itoa(n%10) + ">" + strconv.Itoa(n%3) },
			Groups: func(n int, _ int) []string {
				return []string{"g:" + strconv.Itoa(n%4), "all"}
			},
			Tag: "w",
		}, func(_ context.Context, n int) (int, error) {
			if failing.Load() {
				return 0, errLoader
			}
			return n, nil
		})
		for i := range 30 {
			call(t, f, i)
		}
		_, err := p.InvalidateKeys(ctx, "w:1>1", "w:2")
		ok(t, err)
		_, err = p.InvalidateGroups(ctx, "g:1", "never-used")
		ok(t, err)
		_, err = p.InvalidateTag(ctx, "w")
		ok(t, err)
		for i := range 5 {
			call(t, f, i)
		}
		failing.Store(true)
		for i := 5; i < 12; i++ {
			_, err := f(ctx, i)
			isErr(t, err, errLoader)
		}
		keys := scanKeys(t, rdb, prefix)
		if len(keys) < 15 {
			t.Fatalf("got %d keys %v; want at least 15", len(keys), keys)
		}
		for _, k := range keys {
			d, err := rdb.PTTL(ctx, k).Result()
			ok(t, err)
			if d <= 0 {
				t.Errorf("PTTL %s = %v; want a TTL", k, d)
			}
		}
		equals(t, len(rec.All()), 0)
	})
}

// Round trips per operation, after a warm-up that loads the scripts: a hit
// costs 1 (SET NX GET), a miss 2 (that, and the store that checks and joins
// the sets), and invalidations a constant number of round trips and script
// calls whatever how many entries they hit (one call per batch of keys).
func TestLoadRoundTrips(t *testing.T) {
	rdb, _ := testRedis(t)
	cc := &commandCounter{}
	rdb.AddHook(cc)
	p := newPluginOn(t, rdb, cacheme.Settings{})
	ctx := context.Background()
	f := mustWrap(t, p, cacheme.Spec[int, int]{
		Key: func(n int) string { return "rt:" + strconv.Itoa(n) },
		Groups: func(n int, _ int) []string {
			switch {
			case n < 0:
				return []string{"warm"}
			case n == 0:
				return []string{"one:0"}
			}
			return []string{"big"}
		},
		Tag: "rt",
	}, identity)

	// Warm-up: every script runs once.
	call(t, f, -1)
	call(t, f, -1)
	_, err := p.InvalidateKeys(ctx, "rt:-1")
	ok(t, err)
	call(t, f, -1)
	_, err = p.InvalidateGroups(ctx, "warm")
	ok(t, err)

	trips := func(t *testing.T, what string, want int, do func()) {
		t.Helper()
		cc.reset()
		do()
		cmds, rt := cc.get()
		if rt != want {
			t.Fatalf("%s: got %d round trips (%v); want %d", what, rt, cmds, want)
		}
	}
	trips(t, "miss", 2, func() { equals(t, call(t, f, 0), 0) })
	cmds, _ := cc.get()
	deepEquals(t, cmds, []string{"set", "evalsha"})
	trips(t, "hit", 1, func() { equals(t, call(t, f, 0), 0) })
	cmds, _ = cc.get()
	deepEquals(t, cmds, []string{"set"})

	const many = 200
	// fill computes the entries from..to, concurrently to save time.
	fill := func(from, to int) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := from + w; i <= to; i += 8 {
					if _, err := f(ctx, i); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	fill(0, many)
	keys := make([]string, 0, many)
	for i := 1; i <= many; i++ {
		keys = append(keys, "rt:"+strconv.Itoa(i))
	}
	// Each invalidation hits the entries from..to, which are recomputed
	// after it if the next one needs them. It runs one script for all the
	// entries, plus, with sets, one to mark them and one to drop their
	// members once their entries are marked (the tag set also holds the
	// warm-up entry).
	invalidations := []struct {
		name           string
		trips, scripts int
		from, to       int
		refill         bool
		do             func() (int, error)
	}{
		// A key without '>' names every field of its hash: its hash index
		// is marked in the same round trip.
		{"InvalidateKeys 1", 1, 2, 0, 0, true, func() (int, error) { return p.InvalidateKeys(ctx, "rt:0") }},
		{"InvalidateKeys 200", 1, 2, 1, many, true, func() (int, error) { return p.InvalidateKeys(ctx, keys...) }},
		{"InvalidateKeys 1 field", 1, 1, 0, 0, true, func() (int, error) { return p.InvalidateKeys(ctx, "rt:0>base") }},
		{"InvalidateGroups 1 member", 3, 3, 0, 0, true, func() (int, error) { return p.InvalidateGroups(ctx, "one:0") }},
		{"InvalidateGroups 200 members", 3, 3, 1, many, false, func() (int, error) { return p.InvalidateGroups(ctx, "big") }},
		{"InvalidateTag 202 members", 3, 3, 0, 0, false, func() (int, error) { return p.InvalidateTag(ctx, "rt") }},
	}
	for _, inv := range invalidations {
		var n int
		trips(t, inv.name, inv.trips, func() {
			var err error
			n, err = inv.do()
			ok(t, err)
		})
		if want := inv.to - inv.from + 1; n != want {
			t.Fatalf("%s hit %d entries; want %d", inv.name, n, want)
		}
		if cmds, _ := cc.get(); len(cmds) != inv.scripts {
			t.Fatalf("%s sent %d commands; want %d", inv.name, len(cmds), inv.scripts)
		}
		if inv.refill {
			fill(inv.from, inv.to)
		}
	}
}

// TestLoadCancelledContext checks that a call whose context is cancelled
// returns the context's error, without running the function and without
// counting a Redis error.
func TestLoadCancelledContext(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	var c counter
	f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "cancelled" }}, c.fn)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f(ctx, 1)
	isErr(t, err, context.Canceled)
	equals(t, c.n.Load(), int64(0))
	equals(t, p.Stats().Total.RedisErrors, int64(0))
}

// A computation whose lease was taken in the same millisecond as an
// invalidation of its group, before it (the lease's grant is known to the
// millisecond only), is computed once more, starting after the
// invalidation for sure, and that result is stored: a read right after a
// write still fills the cache. The server's clock is set by hand (its own
// miniredis, whatever CACHEME_TEST_REDIS says): the invalidation at
// T0+100µs, the lease at T0+300µs, the first store at T0+600µs. Stale
// serving is off, so that the invalidation deletes the value and the
// lease is taken by the hit path's SET NX (readScript's leases carry
// their grant time to the microsecond).
func TestStoreRecomputesAfterCloseInvalidation(t *testing.T) {
	tests := []struct {
		name string
		// again invalidates the group during the second computation.
		again bool
	}{
		{"stored", false},
		// No stale refill: the second computation is overtaken too, and
		// its result is not stored; the next call computes.
		{"invalidated again", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := miniredis.RunT(t)
			m.ClockTTL(true)
			t0 := time.Now().Truncate(time.Second).Add(time.Hour)
			m.SetTime(t0)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			p := newPluginOn(t, rdb, cacheme.Settings{NoStale: true})
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, string]{
				Key:    func(int) string { return "close" },
				Groups: func(int, string) []string { return []string{"g"} },
			}, func(context.Context, int) (string, error) {
				n := runs.Add(1)
				switch n {
				case 2: // the first computation after the invalidation
					time.Sleep(2 * time.Millisecond) // its start, bounded by this process's clock, is well before the invalidation
					m.SetTime(t0.Add(600 * time.Microsecond))
				case 3:
					if tt.again {
						m.SetTime(t0.Add(650 * time.Microsecond))
						if _, err := p.InvalidateGroups(bg, "g"); err != nil {
							return "", err
						}
					}
					m.SetTime(t0.Add(700 * time.Microsecond))
				}
				return fmt.Sprintf("v%d", n), nil
			})
			equals(t, call(t, f, 0), "v1")
			m.SetTime(t0.Add(100 * time.Microsecond))
			_, err := p.InvalidateGroups(bg, "g")
			ok(t, err)
			m.SetTime(t0.Add(300 * time.Microsecond))
			equals(t, call(t, f, 0), "v3") // computed twice
			st := p.Stats().Total
			equals(t, st.Misses, int64(2))
			if tt.again {
				equals(t, st.Conflicts, int64(1))
				m.SetTime(t0.Add(2 * time.Millisecond)) // a millisecond after the second invalidation
				equals(t, call(t, f, 0), "v4")          // v3 was not stored: computed
				equals(t, call(t, f, 0), "v4")          // and this one was
				return
			}
			equals(t, st.Conflicts, int64(0))
			equals(t, call(t, f, 0), "v3") // stored
			equals(t, runs.Load(), int64(3))
			equals(t, p.Stats().Total.Hits, int64(1))
		})
	}
}
