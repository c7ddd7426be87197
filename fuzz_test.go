package cacheme

// Fuzz targets. Their seeds are under testdata/fuzz/<target>/ and in the
// f.Add calls; a plain `go test` runs the seeds. To fuzz one target:
//
//	go test -run '^$' -fuzz '^FuzzKeys$' -fuzztime 10s .
//
// (likewise FuzzDecode, FuzzEntryMetadata and FuzzModelKeys).

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme/internal/testenv"
)

// offlinePlugin is a plugin whose Redis is never contacted.
func offlinePlugin(tb testing.TB) *Plugin {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	tb.Cleanup(func() { rdb.Close() })
	p := New(Settings{Redis: rdb, Prefix: "CM:"})
	if err := p.Err(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// keyErr fails unless err is nil or wraps ErrInvalidKey.
func keyErr(t *testing.T, what, key string, err error) bool {
	t.Helper()
	if err != nil && !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("%s(%q): error %v does not wrap ErrInvalidKey", what, key, err)
	}
	return err == nil
}

// FuzzKeys: parsing a key never panics, fails only with ErrInvalidKey, and
// distinct keys never name the same entry (in particular "k" and "k>base").
func FuzzKeys(f *testing.F) {
	for _, s := range []string{"book:1", "book:1>base", "a>b>c", "a>", ">b", "", "x:invalid", "x:tag>f",
		"a\x00b", "\xff", "héllo>世界", "a>>", "base", ">base", "k>base>x"} {
		f.Add(s)
	}
	p := offlinePlugin(f)
	prefix := p.set.Prefix
	f.Fuzz(func(t *testing.T, key string) {
		hostile := strings.IndexByte(key, 0) >= 0 || !utf8.ValidString(key)
		h, field, err := p.hashKey(key)
		if keyErr(t, "hashKey", key, err) {
			if hostile {
				t.Fatalf("hashKey(%q) accepted a NUL or invalid UTF-8", key)
			}
			// The hash may end with a reserved suffix only where the
			// prefix supplies part of it ("invalid" is "CM:invalid"): no
			// group or tag name is empty, so that is no group or tag key.
			user := strings.TrimPrefix(h, prefix)
			if !strings.HasPrefix(h, prefix) || h == prefix || strings.HasSuffix(user, groupSuffix) || strings.HasSuffix(user, tagSuffix) {
				t.Fatalf("hashKey(%q) = %q", key, h)
			}
			if got := strings.TrimPrefix(h, prefix) + map[bool]string{true: fieldSep + field}[field != ""]; got != key {
				t.Fatalf("hashKey(%q) = %q, %q: does not give the key back", key, h, field)
			}
		}
		e, err := p.parseEntry(key)
		if keyErr(t, "parseEntry", key, err) {
			if hostile || e.field() == "" || e.hashKey() != h || e.key != e.member()+fieldSep {
				t.Fatalf("parseEntry(%q) = %+v", key, e)
			}
			// The entry names the key alone: the key comes back from it.
			back := strings.TrimPrefix(e.hashKey(), prefix)
			if e.field() != defaultField {
				back += fieldSep + e.field()
			}
			if back != key {
				t.Fatalf("parseEntry(%q) = %+v, which is the entry of %q", key, e, back)
			}
			if m, ok := entryFromMember(e.member()); !ok || m != e {
				t.Fatalf("entryFromMember(%q) = %+v, %v; want %+v", e.member(), m, ok, e)
			}
			if !strings.Contains(key, fieldSep) {
				if _, err := p.parseEntry(key + fieldSep + defaultField); !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("parseEntry(%q) = %v; want ErrInvalidKey", key+fieldSep+defaultField, err)
				}
			}
		}
		for _, k := range []struct {
			what string
			fn   func(string) (string, error)
			suf  string
		}{{"groupKey", p.groupKey, groupSuffix}, {"tagKey", p.tagKey, tagSuffix}} {
			got, err := k.fn(key)
			if keyErr(t, k.what, key, err) && (hostile || got != prefix+key+k.suf) {
				t.Fatalf("%s(%q) = %q", k.what, key, got)
			}
		}
	})
}

// fuzzItem is a struct to decode, without floats (NaN is not equal to
// itself) so that round trips compare with reflect.DeepEqual.
type fuzzItem struct {
	Name  string
	Count int
	Tags  []string
	Attrs map[string]int
	Blob  []byte
	At    time.Time
	Next  *fuzzItem
}

// allocBound is the most decoding len(data) bytes may allocate: a fixed
// allowance (decoder state, error) plus, per input byte, the largest
// element the fuzzed types allocate for one byte (a nil decoded as a
// fuzzItem of a slice, with its share of slice and map growth).
func allocBound(n int) uint64 { return 64<<10 + 512*uint64(n) }

// fuzzDecode checks decode[T] on data: no panic (not even a recovered one,
// unless recovered is allowed), bounded allocation, errors wrap ErrCorrupt,
// and what decodes round-trips.
func fuzzDecode[T any](t *testing.T, data []byte, roundTrip, recovered bool) {
	t.Helper()
	var v T
	var err error
	n := allocated(func() { v, err = decode[T](MsgpackCodec{}, data) })
	if n > allocBound(len(data)) {
		t.Fatalf("decode[%T] of %d bytes allocated %d bytes", v, len(data), n)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode[%T]: %v does not wrap ErrCorrupt", v, err)
		}
		if !recovered && strings.Contains(err.Error(), "panicked") {
			t.Fatalf("decode[%T]: %v", v, err)
		}
		return
	}
	if !roundTrip {
		return
	}
	enc, err := encode(MsgpackCodec{}, v)
	if err != nil {
		t.Fatalf("encode[%T] of a decoded value: %v", v, err)
	}
	w, err := decode[T](MsgpackCodec{}, enc)
	if err != nil {
		t.Fatalf("decode[%T] of its own encoding: %v", v, err)
	}
	if !reflect.DeepEqual(v, w) {
		t.Fatalf("round trip of %T: %#v became %#v", v, v, w)
	}
}

// FuzzDecode: decoding arbitrary stored bytes never panics, never
// allocates much more than the input, and every value that decodes
// round-trips.
func FuzzDecode(f *testing.F) {
	f.Add(crashValue)
	f.Add(slowValue)
	for _, v := range []any{
		fuzzItem{Name: "x", Count: 3, Tags: []string{"a", ""}, Attrs: map[string]int{"k": 1}, Blob: []byte{1},
			At: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), Next: &fuzzItem{Tags: []string{}}},
		[]string{"a", "b"}, map[string]int{"a": 1, "b": -2}, []int{1, 2, 3}, nil,
	} {
		b, err := encode(MsgpackCodec{}, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode[fuzzItem](t, data, true, false)
		fuzzDecode[[]string](t, data, true, false)
		fuzzDecode[map[string]int](t, data, true, false)
		fuzzDecode[[]int](t, data, true, false)
		// Into any, msgpack panics on some maps (an array as a key is
		// unhashable): decode recovers that as ErrCorrupt.
		fuzzDecode[any](t, data, false, true)
	})
}

// FuzzEntryMetadata: whatever bytes an entry's key holds (a stored value
// whose header has any bytes written at any offset, cut at any length), a
// memoized call returns the loader's value (or a value that really is
// stored there), in fail-open mode with no error, no script raises an
// error, and the key is left with a TTL. It runs on the Redis of the
// tests (miniredis unless CACHEME_TEST_REDIS).
func FuzzEntryMetadata(f *testing.F) {
	stored, err := encode(MsgpackCodec{}, "stored")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(stored), uint8(0), "", uint16(0), true)
	f.Add([]byte(stored), uint8(offState), "s", uint16(0), true)
	f.Add([]byte(stored), uint8(offState), "-", uint16(0), false)
	f.Add([]byte(stored), uint8(offLease), "9999999999999", uint16(0), false)
	f.Add([]byte(stored), uint8(offToken), "someone-else", uint16(0), true)
	f.Add([]byte(stored), uint8(offExpiry), "garbage", uint16(0), true)
	f.Add([]byte(stored), uint8(offWaiters), "9999", uint16(0), false)
	f.Add([]byte(stored), uint8(offGroups), "00000099", uint16(0), true)
	f.Add([]byte{1, 1, 0xc1}, uint8(offGrant), "nan", uint16(50), true)
	f.Add([]byte(crashValue), uint8(0), "C3", uint16(0), false)

	rdb, _ := testenv.Redis(f)
	rec := &testenv.Errors{}
	p := New(Settings{
		Redis: rdb, Prefix: testenv.Prefix(), TTL: time.Minute, LeaseTTL: time.Second,
		HerdRetryCount: 2, HerdRetryTime: time.Millisecond, ErrorHook: rec.Hook,
	})
	if err := p.Err(); err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	e, err := p.parseEntry("meta")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { rdb.Del(ctx, e.key) })
	var runs atomic.Int64
	loader := func(context.Context, int) (string, error) { runs.Add(1); return "loaded", nil }
	wrap := func(mode StaleMode) func(context.Context, int) (string, error) {
		fn, err := Wrap(p, Spec[int, string]{Key: func(int) string { return "meta" }, Stale: mode}, loader)
		if err != nil {
			f.Fatal(err)
		}
		return fn
	}
	staleOn, staleOff := wrap(StaleOn), wrap(StaleOff)

	f.Fuzz(func(t *testing.T, v []byte, off uint8, s string, cut uint16, stale bool) {
		value := storedValue(ms(time.Minute), "", v)
		at := int(off) % headerLen
		if at+len(s) > len(value) {
			s = s[:len(value)-at]
		}
		copy(value[at:], s)
		if cut > 0 && int(cut) < len(value) {
			value = value[:cut]
		}
		if err := rdb.Set(ctx, e.key, value, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		rec.Take()
		before := p.Stats().Total
		call := staleOff
		if stale {
			call = staleOn
		}
		// The value stored, if it decodes: a call may return it.
		want := map[string]bool{"loaded": true}
		if s, err := decode[string](MsgpackCodec{}, v); err == nil {
			want[s] = true
		}
		check := func(step string, got string, err error) {
			t.Helper()
			if err != nil || !want[got] {
				t.Fatalf("%s: got %q, %v; want the loader's value", step, got, err)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got, err := call(cctx, 0)
		check("first call", got, err)
		_, err = p.InvalidateKeys(ctx, "meta>base")
		check("invalidate entry", "loaded", err)
		got, err = call(cctx, 0)
		check("second call", got, err)
		_, err = p.InvalidateKeys(ctx, "meta")
		check("invalidate hash", "loaded", err)
		got, err = call(cctx, 0)
		check("third call", got, err)

		for _, err := range rec.Take() {
			if errors.Is(err, ErrRedis) {
				t.Fatalf("a script failed: %v", err)
			}
		}
		if n := p.Stats().Total.RedisErrors - before.RedisErrors; n != 0 {
			t.Fatalf("%d Redis errors", n)
		}
		if d, err := rdb.PTTL(ctx, e.key).Result(); err != nil || d == -1 {
			t.Fatalf("PTTL %v, %v: the entry has no TTL", d, err)
		}
	})
}

// fuzzKeyer is a model whose CacheKey is whatever the fuzzer gives.
type fuzzKeyer struct{ key string }

func (k fuzzKeyer) CacheKey() string { return k.key }

type fuzzMultiKeyer struct{ keys []string }

func (k *fuzzMultiKeyer) CacheKey() []string { return k.keys }

// FuzzModelKeys: a model's CacheKey, whatever it returns, gives a group
// key or ErrInvalidKey, never a panic, and never a key that is another
// group's or a tag set's.
func FuzzModelKeys(f *testing.F) {
	for _, s := range []string{"Book:1", "", "a:invalid", "x:tag", "a\x00", "\xc3", "a>b", "User:12:books"} {
		f.Add(s, "other")
	}
	p := offlinePlugin(f)
	f.Fuzz(func(t *testing.T, a, b string) {
		keys := cacheKeys(reflect.ValueOf(fuzzKeyer{a}))
		keys = append(keys, cacheKeys(reflect.ValueOf(&fuzzMultiKeyer{[]string{a, b}}))...)
		if len(keys) != 3 || keys[0] != a || keys[1] != a || keys[2] != b {
			t.Fatalf("cacheKeys = %q", keys)
		}
		for _, k := range keys {
			g, err := p.groupKey(k)
			if !keyErr(t, "groupKey", k, err) {
				continue
			}
			if g != p.set.Prefix+k+groupSuffix {
				t.Fatalf("groupKey(%q) = %q", k, g)
			}
			if checkName("group", k) != nil {
				t.Fatalf("groupKey(%q) accepted a name checkName rejects", k)
			}
		}
		ga, erra := p.groupKey(a)
		gb, errb := p.groupKey(b)
		if erra == nil && errb == nil && (ga == gb) != (a == b) {
			t.Fatalf("groups %q and %q share the key %q", a, b, ga)
		}
	})
}

// FuzzRows: decoding stored query-cache rows never panics, allocates no
// more than the bytes allow, fails only with ErrCorrupt, and what it
// decodes encodes and decodes to the same rows.
func FuzzRows(f *testing.F) {
	c := rowsCodec{}
	seed, _ := c.Marshal(&rowSet{cols: []rowCol{{name: "id", scanType: "int64", nullable: 1}, {name: "t"}},
		rows: [][]any{{int64(1), "a"}, {nil, []byte("b")}, {3.5, true}}})
	f.Add(seed)
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 1, 'a', 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var rs *rowSet
		err := c.Unmarshal(b, &rs)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := c.Marshal(rs)
		if err != nil {
			t.Fatalf("re-encoding decoded rows: %v", err)
		}
		var rs2 *rowSet
		if err := c.Unmarshal(again, &rs2); err != nil {
			t.Fatalf("decoding re-encoded rows: %v", err)
		}
		if len(rs2.rows) != len(rs.rows) || len(rs2.cols) != len(rs.cols) {
			t.Fatalf("round trip changed the shape")
		}
	})
}
