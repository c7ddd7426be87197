package cacheme_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/gormcacheme/cacheme"
)

// entryValue returns a valid stored value of v (msgpack) for tests that
// write entries by hand.
func entryValue(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	ok(t, err)
	return cacheme.EntryValue(append([]byte{1, 1}, b...), 0, "")
}

// patch returns v with s written at offset off.
func patch(v []byte, off int, s string) []byte {
	out := append([]byte(nil), v...)
	copy(out[off:], s)
	return out
}

// Garbage in an entry's key (its header's magic, state, times, token,
// counts, or a key of another type) is corrupt: the entry is treated as
// absent, recomputed and overwritten, counted as Corrupt and reported as
// ErrCorrupt. No script fails.
func TestCorruptMetadata(t *testing.T) {
	ctx := context.Background()
	good := entryValue(t, int64(99))
	cases := []struct {
		name  string
		value []byte
	}{
		{"magic", patch(good, 0, "XX")},
		{"state", patch(good, cacheme.OffState, "?")},
		{"expiry", patch(good, cacheme.OffExpiry, "12abc")},
		{"lease time", patch(good, cacheme.OffLease, "-inf")},
		{"grant time", patch(good, cacheme.OffGrant, "nan")},
		{"keep", patch(good, cacheme.OffKeep, " 1e400")},
		{"waiters", patch(good, cacheme.OffWaiters, "x")},
		{"groups length", patch(good, cacheme.OffGroups, "99999999")},
		{"short", good[:cacheme.HeaderLen-1]},
		{"empty", nil},
	}
	for _, c := range cases {
		for _, mode := range []cacheme.StaleMode{cacheme.StaleOn, cacheme.StaleOff} {
			t.Run(c.name+"/stale="+strconv.FormatBool(mode == cacheme.StaleOn), func(t *testing.T) {
				rec := &errRecorder{}
				p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
				var c2 counter
				f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "m" }, Stale: mode}, c2.fn)
				key := cacheme.EntryKey(p, "m")
				ok(t, rdb.Set(ctx, key, c.value, 0).Err())
				equals(t, call(t, f, 0), 1)
				equals(t, call(t, f, 0), 1)
				st := p.Stats().Total
				equals(t, st.Corrupt, 1)
				equals(t, st.RedisErrors, 0)
				if !rec.Has(cacheme.ErrCorrupt) {
					t.Fatalf("reported %v; want ErrCorrupt", rec.All())
				}
				d, err := rdb.PTTL(ctx, key).Result()
				ok(t, err)
				if d <= 0 {
					t.Fatalf("PTTL %v: the repaired entry has no TTL", d)
				}
			})
		}
	}
	t.Run("wrong type", func(t *testing.T) {
		rec := &errRecorder{}
		p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
		var c2 counter
		f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "m" }}, c2.fn)
		ok(t, rdb.HSet(ctx, cacheme.EntryKey(p, "m"), "v:base", "x").Err())
		equals(t, call(t, f, 0), 1)
		equals(t, call(t, f, 0), 1)
		equals(t, p.Stats().Total.Corrupt, 1)
		equals(t, p.Stats().Total.RedisErrors, 0)
		hit, err := p.InvalidateKeys(ctx, "m")
		ok(t, err)
		equals(t, hit, 1)
		ok(t, rdb.Del(ctx, cacheme.EntryKey(p, "m")).Err())
		ok(t, rdb.HSet(ctx, cacheme.EntryKey(p, "m"), "v:base", "x").Err())
		_, err = p.InvalidateKeys(ctx, "m")
		ok(t, err)
		n, err := rdb.Exists(ctx, cacheme.EntryKey(p, "m")).Result()
		ok(t, err)
		equals(t, n, 0)
	})
}

// A lease whose header is corrupted while its computation runs cannot
// store: the computation keeps its result to itself, and one that took the
// lease over stores. Whatever was written, no value computed before an
// invalidation is stored after it.
func TestCorruptLeaseCannotStore(t *testing.T) {
	ctx := context.Background()
	for _, takeOver := range []bool{false, true} {
		t.Run("takeover="+strconv.FormatBool(takeOver), func(t *testing.T) {
			p, rdb := newPlugin(t, cacheme.Settings{})
			key := cacheme.EntryKey(p, "lease")
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
			ok(t, rdb.SetRange(ctx, key, cacheme.OffLease, "garbage").Err())
			if takeOver {
				// Another process (plugin) takes the corrupt lease over.
				other := newPluginOn(t, rdb, cacheme.Settings{Prefix: p.Settings().Prefix})
				fo := mustWrap(t, other, cacheme.Spec[int, int64]{Key: func(int) string { return "lease" }, Stale: cacheme.StaleOff},
					func(_ context.Context, n int) (int64, error) { return runs.Add(1), nil })
				equals(t, call(t, fo, 0), 2) // took the lease over, stored
				equals(t, other.Stats().Total.Corrupt, 1)
			}
			g.open()
			r := recv(t, first)
			ok(t, r.err)
			equals(t, r.v, 1) // the caller gets its result, unstored
			equals(t, p.Stats().Total.Conflicts, 1)
			equals(t, call(t, f, 0), 2)
			equals(t, p.Stats().Total.RedisErrors, 0)
		})
	}
}
