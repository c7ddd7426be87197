package cacheme_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
)

// The benchmarks run on the Redis named by CACHEME_TEST_REDIS, else on an
// in-process miniredis (whose figures say little about real latency):
//
//	CACHEME_TEST_REDIS=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchmem -count 5

// benchBook is a representative cached value.
type benchBook struct {
	ID        int64
	Title     string
	Authors   []string
	Price     float64
	Tags      map[string]string
	CreatedAt time.Time
}

func newBenchBook() benchBook {
	return benchBook{
		ID:        4217,
		Title:     "The Go Programming Language",
		Authors:   []string{"Alan A. A. Donovan", "Brian W. Kernighan"},
		Price:     34.99,
		Tags:      map[string]string{"lang": "go", "level": "intermediate", "format": "paperback"},
		CreatedAt: time.Date(2015, 10, 26, 9, 30, 0, 123456789, time.UTC),
	}
}

func (b benchBook) equal(o benchBook) bool {
	if b.ID != o.ID || b.Title != o.Title || b.Price != o.Price || !b.CreatedAt.Equal(o.CreatedAt) ||
		len(b.Authors) != len(o.Authors) || len(b.Tags) != len(o.Tags) {
		return false
	}
	for i := range b.Authors {
		if b.Authors[i] != o.Authors[i] {
			return false
		}
	}
	for k, v := range b.Tags {
		if o.Tags[k] != v {
			return false
		}
	}
	return true
}

// benchGobCodec is encoding/gob as a cacheme.Codec, for comparison only:
// each value is a whole gob stream, type description included, as a cache
// needs.
type benchGobCodec struct{}

func (benchGobCodec) ID() byte { return 200 }

func (benchGobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(v)
	return buf.Bytes(), err
}

func (benchGobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}

// BenchmarkCodec measures an encode+decode round trip through each codec.
func BenchmarkCodec(b *testing.B) {
	codecs := []struct {
		name string
		c    cacheme.Codec
	}{
		{"msgpack", cacheme.MsgpackCodec{}},
		{"json", cacheme.JSONCodec{}},
		{"gob", benchGobCodec{}},
	}
	for _, c := range codecs {
		b.Run("book/"+c.name, func(b *testing.B) {
			benchRoundTrip(b, c.c, newBenchBook(), benchBook.equal)
		})
	}
	for _, c := range codecs {
		b.Run("int/"+c.name, func(b *testing.B) {
			benchRoundTrip(b, c.c, 42, func(x, y int) bool { return x == y })
		})
	}
}

func benchRoundTrip[T any](b *testing.B, c cacheme.Codec, v T, equal func(T, T) bool) {
	data, err := c.Marshal(v)
	ok(b, err)
	var out T
	ok(b, c.Unmarshal(data, &out))
	if !equal(v, out) {
		b.Fatalf("round trip: got %+v, want %+v", out, v)
	}
	b.ReportAllocs()
	for b.Loop() {
		data, err := c.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		var out T
		if err := c.Unmarshal(data, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes/value")
}

// benchPlugin returns a plugin on the benchmark's Redis (see testRedis),
// whose errors fail the benchmark.
// The client's read and write timeouts are the plugin's OpTimeout, so that
// the client bounds each call itself (see Settings.OpTimeout).
func benchPlugin(b *testing.B) (*cacheme.Plugin, redis.UniversalClient) {
	b.Helper()
	if os.Getenv("CACHEME_TEST_REDIS") == "" {
		b.Log("on miniredis; set CACHEME_TEST_REDIS for real figures")
	}
	base, _ := testRedis(b)
	opt := *base.(*redis.Client).Options()
	opt.ReadTimeout, opt.WriteTimeout = cacheme.DefaultOpTimeout, cacheme.DefaultOpTimeout
	rdb := redis.NewClient(&opt)
	b.Cleanup(func() { rdb.Close() })
	var once sync.Once
	return newPluginOn(b, rdb, cacheme.Settings{
		FailClosed: true,
		ErrorHook: func(_ context.Context, err error) {
			once.Do(func() { b.Errorf("reported: %v", err) })
		},
	}), rdb
}

// BenchmarkHit compares a cache hit with a plain GET of a value of the same
// size on the same Redis, and with a GET plus the decoding a hit does.
func BenchmarkHit(b *testing.B) {
	ctx := context.Background()
	p, rdb := benchPlugin(b)
	book := newBenchBook()
	get, err := cacheme.Wrap(p, cacheme.Spec[int64, benchBook]{
		Key:    func(id int64) string { return "bench:book:" + strconv.FormatInt(id, 10) },
		Groups: func(id int64, _ benchBook) []string { return []string{"bench:author:1"} },
		Tag:    "bench-hit",
	}, func(context.Context, int64) (benchBook, error) { return book, nil })
	ok(b, err)
	_, err = get(ctx, book.ID)
	ok(b, err)

	// The raw value: what cacheme stores (two header bytes and msgpack),
	// under a key built per call as the memoized function's is.
	payload, err := cacheme.MsgpackCodec{}.Marshal(book)
	ok(b, err)
	raw := append([]byte{1, 1}, payload...)
	prefix := p.Settings().Prefix
	rawKey := func(id int64) string { return prefix + "bench:raw:" + strconv.FormatInt(id, 10) }
	ok(b, rdb.Set(ctx, rawKey(book.ID), raw, time.Minute).Err())

	b.Run("cacheme", func(b *testing.B) {
		before := p.Stats().Total
		b.ReportAllocs()
		for b.Loop() {
			if _, err := get(ctx, book.ID); err != nil {
				b.Fatal(err)
			}
		}
		after := p.Stats().Total
		if after.Misses != before.Misses || after.Hits-before.Hits != int64(b.N) {
			b.Fatalf("not all hits: before %+v, after %+v, N=%d", before, after, b.N)
		}
	})
	b.Run("cacheme-local", func(b *testing.B) {
		// The same entry through a plugin with the local layer on.
		lp := newPluginOn(b, rdb, cacheme.Settings{Prefix: prefix, Local: cacheme.LocalSettings{MaxEntries: 1000}})
		waitLocal(b, lp, 0)
		lget, err := cacheme.Wrap(lp, cacheme.Spec[int64, benchBook]{
			Key: func(id int64) string { return "bench:book:" + strconv.FormatInt(id, 10) },
			Tag: "bench-hit",
		}, func(context.Context, int64) (benchBook, error) { return book, nil })
		ok(b, err)
		_, err = lget(ctx, book.ID) // a Redis hit, which fills the layer
		ok(b, err)
		before := lp.Stats().Total
		b.ReportAllocs()
		for b.Loop() {
			if _, err := lget(ctx, book.ID); err != nil {
				b.Fatal(err)
			}
		}
		after := lp.Stats().Total
		if after.LocalHits-before.LocalHits != int64(b.N) {
			b.Fatalf("not all local hits: before %+v, after %+v, N=%d", before, after, b.N)
		}
	})
	b.Run("go-redis-GET", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, err := rdb.Get(ctx, rawKey(book.ID)).Bytes()
			if err != nil || len(v) != len(raw) {
				b.Fatal(len(v), err)
			}
		}
	})
	b.Run("go-redis-GET+msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, err := rdb.Get(ctx, rawKey(book.ID)).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var out benchBook
			if err := (cacheme.MsgpackCodec{}).Unmarshal(v[2:], &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMiss measures a call whose key is new: read (taking the lease),
// the function, joining a tag and a group, and storing.
func BenchmarkMiss(b *testing.B) {
	ctx := context.Background()
	p, _ := benchPlugin(b)
	book := newBenchBook()
	get, err := cacheme.Wrap(p, cacheme.Spec[int64, benchBook]{
		Key:    func(id int64) string { return "bench:miss:" + strconv.FormatInt(id, 10) },
		Groups: func(id int64, _ benchBook) []string { return []string{"bench:shelf:" + strconv.FormatInt(id%16, 10)} },
		Tag:    "bench-miss",
	}, func(_ context.Context, id int64) (benchBook, error) { return book, nil })
	ok(b, err)
	var id int64
	b.ReportAllocs()
	for b.Loop() {
		id++
		if _, err := get(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	if st := p.Stats().Total; st.Misses != id || st.Hits != 0 {
		b.Fatalf("stats %+v after %d new keys", st, id)
	}
}

// BenchmarkInvalidateGroup measures InvalidateGroups on a group of 100
// cached entries. Refilling the group between iterations is not timed.
func BenchmarkInvalidateGroup(b *testing.B) {
	const members = 100
	ctx := context.Background()
	p, _ := benchPlugin(b)
	book := newBenchBook()
	get, err := cacheme.Wrap(p, cacheme.Spec[int64, benchBook]{
		Key:    func(id int64) string { return "bench:inv:" + strconv.FormatInt(id, 10) },
		Groups: func(int64, benchBook) []string { return []string{"bench:group"} },
		Tag:    "bench-invalidate",
	}, func(context.Context, int64) (benchBook, error) { return book, nil })
	ok(b, err)
	fill := func() {
		const workers = 10
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for id := w; id < members; id += workers {
					if _, err := get(ctx, int64(id)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fill()
		b.StartTimer()
		n, err := p.InvalidateGroups(ctx, "bench:group")
		if err != nil || n != members {
			b.Fatalf("InvalidateGroups = %d, %v; want %d", n, err, members)
		}
	}
}

// BenchmarkOutboxWrite measures what Settings.Outbox costs a committed
// write: a one-row update with the plugin, with and without the outbox,
// interleaved in the same run (its INSERT in the transaction, its DELETE
// after delivery).
func BenchmarkOutboxWrite(b *testing.B) {
	dialect, dsn := "sqlite", filepath.Join(b.TempDir(), "bench.db")+"?_busy_timeout=5000&_journal_mode=WAL"
	if url := os.Getenv("CACHEME_TEST_POSTGRES"); url != "" {
		dialect, dsn = "postgres", testenv.Schema(b, url)
	}
	rdb, _ := testRedis(b)
	for _, outbox := range []bool{false, true} {
		name := "plugin"
		if outbox {
			name = "plugin+outbox"
		}
		b.Run(name, func(b *testing.B) {
			db := openOutboxDB(b, dialect, dsn)
			p := newPluginOn(b, rdb, cacheme.Settings{Outbox: outbox, ReplayInterval: time.Hour})
			if err := db.Use(p); err != nil {
				b.Fatal(err)
			}
			u := User{Name: "bench"}
			if err := db.Create(&u).Error; err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := db.Model(&u).Update("name", strconv.Itoa(i)).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// interleaved runs the variants of a benchmark alternately, one operation
// each per iteration, so that they share the machine's state, and reports
// each one's time per operation ("<name>-ns/op") and their ratio to the
// first ("<name>/<first>").
func interleaved(b *testing.B, names []string, op func(i int) error) {
	b.Helper()
	total := make([]time.Duration, len(names))
	n := 0
	for b.Loop() {
		for k := range names {
			i := (k + n) % len(names) // rotated order
			start := time.Now()
			if err := op(i); err != nil {
				b.Fatalf("%s: %v", names[i], err)
			}
			total[i] += time.Since(start)
		}
		n++
	}
	for i, name := range names {
		b.ReportMetric(float64(total[i].Nanoseconds())/float64(n), name+"-ns/op")
		if i > 0 && total[0] > 0 {
			b.ReportMetric(float64(total[i])/float64(total[0]), name+"/"+names[0])
		}
	}
}
