package cacheme_test

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
)

type codecItem struct {
	Name  string
	Count int
	Tags  []string
	Attrs map[string]float64
	Next  *codecItem
}

// roundTrip returns a test that caches v with p and checks that the hit
// returns a value deep-equal to v (nil and empty stay distinct), and that
// the codec alone round-trips it too.
func roundTrip[R any](v R) func(t *testing.T, p *cacheme.Plugin) {
	return func(t *testing.T, p *cacheme.Plugin) {
		t.Helper()
		c := p.Settings().Codec
		data, err := c.Marshal(v)
		ok(t, err)
		var direct R
		ok(t, c.Unmarshal(data, &direct))
		deepEquals(t, direct, v)

		var runs atomic.Int64
		f := mustWrap(t, p, cacheme.Spec[int, R]{Key: func(int) string { return "rt" }},
			func(context.Context, int) (R, error) { runs.Add(1); return v, nil })
		deepEquals(t, call(t, f, 1), v)
		got := call(t, f, 2)
		deepEquals(t, got, v)
		equals(t, runs.Load(), 1)
		equals(t, p.Stats().Total.Hits, 1)
		// The hit is a copy: changing it does not change the next one.
		if rv := reflect.ValueOf(&got).Elem(); rv.Kind() == reflect.Slice && rv.Len() > 0 {
			rv.Index(0).Set(reflect.Zero(rv.Type().Elem()))
			deepEquals(t, call(t, f, 3), v)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	values := []struct {
		name string
		run  func(t *testing.T, p *cacheme.Plugin)
	}{
		{"int", roundTrip(42)},
		{"negative int64", roundTrip(int64(-1 << 40))},
		{"zero int", roundTrip(0)},
		{"float", roundTrip(3.25)},
		{"zero float", roundTrip(0.0)},
		{"string", roundTrip("héllo, 世界")},
		{"empty string", roundTrip("")},
		{"true", roundTrip(true)},
		{"false", roundTrip(false)},
		{"strings", roundTrip([]string{"a", "", "c"})},
		{"empty slice", roundTrip([]int{})},
		{"nil slice", roundTrip([]int(nil))},
		{"map", roundTrip(map[string]int{"a": 1, "b": 0})},
		{"empty map", roundTrip(map[string]int{})},
		{"nil map", roundTrip(map[string]int(nil))},
		{"struct", roundTrip(codecItem{
			Name: "x", Count: 3, Tags: []string{"t"}, Attrs: map[string]float64{"w": 1.5},
			Next: &codecItem{Name: "y", Tags: []string{}},
		})},
		{"zero struct", roundTrip(codecItem{})},
		{"pointer", roundTrip(&codecItem{Name: "p"})},
		{"nil pointer", roundTrip((*codecItem)(nil))},
		{"structs", roundTrip([]codecItem{{Name: "a"}, {Count: 2}})},
	}
	codecs := []cacheme.Codec{cacheme.MsgpackCodec{}, cacheme.JSONCodec{}}
	for _, c := range codecs {
		for _, v := range values {
			t.Run(reflect.TypeOf(c).Name()+"/"+v.name, func(t *testing.T) {
				p, _ := newPlugin(t, cacheme.Settings{Codec: c})
				v.run(t, p)
			})
		}
	}
	equals(t, cacheme.MsgpackCodec{}.ID(), 1)
	equals(t, cacheme.JSONCodec{}.ID(), 2)
}

// A value written by one codec is corrupt to a plugin using another (or to
// a function of another result type): it is recomputed, overwritten and
// reported, never returned wrongly decoded.
func TestCodecMismatch(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	recJ, recM := &errRecorder{}, &errRecorder{}
	pj := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, Codec: cacheme.JSONCodec{}, ErrorHook: recJ.Hook})
	pm := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, Codec: cacheme.MsgpackCodec{}, ErrorHook: recM.Hook})
	spec := cacheme.Spec[int, int]{Key: func(int) string { return "shared" }}
	fj := mustWrap(t, pj, spec, identity)
	fm := mustWrap(t, pm, spec, identity)

	equals(t, call(t, fj, 1), 1)
	equals(t, call(t, fj, 2), 1)
	equals(t, call(t, fm, 3), 3) // JSON value: corrupt for msgpack
	equals(t, call(t, fm, 4), 3)
	equals(t, call(t, fj, 5), 5) // msgpack value: corrupt for JSON
	equals(t, call(t, fj, 6), 5)
	equals(t, pm.Stats().Total.Corrupt, 1)
	equals(t, pj.Stats().Total.Corrupt, 1)
	if !recM.Has(cacheme.ErrCorrupt) || !recJ.Has(cacheme.ErrCorrupt) {
		t.Fatalf("reported %v and %v; want ErrCorrupt from both", recM.All(), recJ.All())
	}

	// Same codec, another result type.
	fs := mustWrap(t, pj, cacheme.Spec[int, string]{Key: func(int) string { return "shared" }},
		func(context.Context, int) (string, error) { return "text", nil })
	equals(t, call(t, fs, 0), "text")
	equals(t, call(t, fj, 7), 7)
	equals(t, pj.Stats().Total.Corrupt, 3)
}

// The 14 bytes that made msgpack ask for 22 GB (an array32 header claiming
// 2.75e9 ints, then seven of them) are a corrupt value like any other:
// recomputed, overwritten and reported, at no cost.
func TestCodecHostileLength(t *testing.T) {
	ctx := context.Background()
	crash := []byte{1, 1, 0xdd, 0xa3, 0xe9, 0xab, 0x80, 1, 2, 3, 4, 5, 6, 7}
	rec := &errRecorder{}
	p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	var runs atomic.Int64
	f := mustWrap(t, p, cacheme.Spec[int, []int]{Key: func(int) string { return "ints" }},
		func(context.Context, int) ([]int, error) { runs.Add(1); return []int{1, 2}, nil })
	deepEquals(t, call(t, f, 0), []int{1, 2})
	ok(t, rdb.Set(ctx, cacheme.EntryKey(p, "ints"), cacheme.EntryValue(crash, 0, ""), time.Minute).Err())
	deepEquals(t, call(t, f, 0), []int{1, 2})
	deepEquals(t, call(t, f, 0), []int{1, 2})
	equals(t, runs.Load(), 2)
	equals(t, p.Stats().Total.Corrupt, 1)
	if !rec.Has(cacheme.ErrCorrupt) {
		t.Fatalf("reported %v; want ErrCorrupt", rec.All())
	}
	var out []int
	isErr(t, cacheme.MsgpackCodec{}.Unmarshal(crash[2:], &out), cacheme.ErrCorrupt)
}
