package cacheme_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gormcacheme/cacheme"
)

// Garbage in an entry's metadata (its expiry, its lease time, the hash's
// sweep size) is corrupt: the entry is treated as absent or its lease as
// run out, recomputed and repaired, counted as Corrupt and reported as
// ErrCorrupt. No script fails.
func TestCorruptMetadata(t *testing.T) {
	ctx := context.Background()
	garbage := []string{"garbage", "", "nan", "inf", "-inf", "1e400", "12abc"}
	cases := []struct {
		name   string
		fields func(v string) []any // written after the first call
		field  string               // must be a number (or gone) afterwards
	}{
		{"expiry", func(v string) []any { return []any{"x:base", v} }, "x:base"},
		{"lease time", func(v string) []any { return []any{"d:base", "1", "l:base", "someone", "t:base", v} }, "t:base"},
		{"sweep size", func(v string) []any { return []any{"d:base", "1", "#s", v} }, "#s"},
	}
	for _, c := range cases {
		for _, g := range garbage {
			for _, mode := range []cacheme.StaleMode{cacheme.StaleOn, cacheme.StaleOff} {
				t.Run(c.name+"/"+strconv.Quote(g)+"/stale="+strconv.FormatBool(mode == cacheme.StaleOn), func(t *testing.T) {
					rec := &errRecorder{}
					p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
					var n counter
					f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "meta" }, Stale: mode}, n.fn)
					equals(t, call(t, f, 0), 1)
					hash := p.Settings().Prefix + "meta"
					ok(t, rdb.HSet(ctx, hash, c.fields(g)...).Err())
					equals(t, call(t, f, 0), 2)
					equals(t, call(t, f, 0), 2)
					st := p.Stats().Total
					equals(t, st.Corrupt, 1)
					equals(t, st.RedisErrors, 0)
					equals(t, st.Hits, 1)
					if !rec.Has(cacheme.ErrCorrupt) {
						t.Fatalf("reported %v; want ErrCorrupt", rec.All())
					}
					if rec.Has(cacheme.ErrRedis) {
						t.Fatalf("reported %v; want no Redis error", rec.All())
					}
					if s, err := rdb.HGet(ctx, hash, c.field).Result(); err == nil {
						if _, err := strconv.ParseFloat(s, 64); err != nil || strings.Contains(s, "n") {
							t.Fatalf("%s is still %q", c.field, s)
						}
					}
				})
			}
		}
	}
}

// A lease whose time is corrupt cannot store: the computation holding it
// keeps its result to itself, and one that took the lease over stores.
// Whatever was written to t:, no value computed before an invalidation is
// stored after it.
func TestCorruptLeaseCannotStore(t *testing.T) {
	ctx := context.Background()
	for _, takeOver := range []bool{false, true} {
		t.Run("takeover="+strconv.FormatBool(takeOver), func(t *testing.T) {
			p, rdb := newPlugin(t, cacheme.Settings{})
			hash := p.Settings().Prefix + "lease"
			g := newGate()
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "lease" }, Stale: cacheme.StaleOff},
				func(_ context.Context, n int) (int64, error) {
					r := runs.Add(1)
					if r == 1 {
						g.wait()
					}
					return r, nil
				})
			first := goCall(f, 0)
			g.awaitStarted(t)
			ok(t, rdb.HSet(ctx, hash, "t:base", "garbage").Err())
			if takeOver {
				equals(t, call(t, f, 0), 2) // took the lease over, stored
			}
			g.open()
			r := recv(t, first)
			ok(t, r.err)
			equals(t, r.v, 1) // the caller gets its result, unstored
			st := p.Stats().Total
			equals(t, st.Conflicts, 1)
			if takeOver {
				equals(t, call(t, f, 0), 2)
				equals(t, st.Corrupt, 1)
			} else {
				equals(t, call(t, f, 0), 2)
			}
			equals(t, p.Stats().Total.RedisErrors, 0)
		})
	}
}
