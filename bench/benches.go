package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gcache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/gormcacheme/cacheme"
)

// Item is the cached value: an ID, a name and a payload that sets its size.
type Item struct {
	ID   int64
	Name string
	Data []byte
}

func newItem(size int) Item {
	return Item{ID: 42, Name: "item", Data: []byte(strings.Repeat("x", max(size-20, 1)))}
}

func newPlugin(rdb redis.UniversalClient, prefix string) *cacheme.Plugin {
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, TTL: 10 * time.Minute})
	if err := p.Err(); err != nil {
		fatal("cacheme: %v", err)
	}
	return p
}

// benchHit reads one cached key of size bytes, with par goroutines.
func benchHit(ctx context.Context, rdb *redis.Client, prefix string, size, par int) {
	item := newItem(size)
	raw, _ := msgpack.Marshal(item)
	rawKey := prefix + "raw:" + strconv.Itoa(size)
	if err := rdb.Set(ctx, rawKey, raw, 10*time.Minute).Err(); err != nil {
		fatal("set: %v", err)
	}
	p := newPlugin(rdb, prefix)
	hit, err := cacheme.Wrap(p, cacheme.Spec[int, Item]{Key: func(int) string { return "hit:" + strconv.Itoa(size) }, Tag: "hit"},
		func(context.Context, int) (Item, error) { return item, nil })
	if err != nil {
		fatal("%v", err)
	}
	if _, err := hit(ctx, 0); err != nil {
		fatal("%v", err)
	}
	// The same entry through a plugin with the local layer on: after its
	// first Redis hit it is served from this process's memory.
	lp := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, TTL: 10 * time.Minute,
		Local: cacheme.LocalSettings{MaxBytes: 64 << 20, MaxEntries: 10000}})
	if err := lp.Err(); err != nil {
		fatal("cacheme: %v", err)
	}
	defer lp.Close(ctx)
	localHit, err := cacheme.Wrap(lp, cacheme.Spec[int, Item]{Key: func(int) string { return "hit:" + strconv.Itoa(size) }, Tag: "hit"},
		func(context.Context, int) (Item, error) { return item, nil })
	if err != nil {
		fatal("%v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); lp.Stats().Total.LocalHits == 0; {
		if time.Now().After(deadline) {
			fatal("cacheme: the local layer never served")
		}
		if _, err := localHit(ctx, 0); err != nil {
			fatal("%v", err)
		}
		time.Sleep(time.Millisecond)
	}
	gc := gcache.New(&gcache.Options{Redis: rdb})
	gKey := prefix + "gc:" + strconv.Itoa(size)
	var warm Item
	if err := gc.Once(&gcache.Item{Ctx: ctx, Key: gKey, Value: &warm, TTL: 10 * time.Minute, Do: func(*gcache.Item) (any, error) { return item, nil }}); err != nil {
		fatal("go-redis/cache: %v", err)
	}
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*redisAddr}, DisableRetry: true})
	if err != nil {
		fatal("rueidis: %v", err)
	}
	defer rc.Close()
	vs := []variant{
		{"floor: GET + msgpack", func(int) error {
			b, err := rdb.Get(ctx, rawKey).Bytes()
			if err != nil {
				return err
			}
			var v Item
			return msgpack.Unmarshal(b, &v)
		}},
		{"cacheme", func(int) error { _, err := hit(ctx, 0); return err }},
		{"cacheme local layer", func(int) error { _, err := localHit(ctx, 0); return err }},
		{"go-redis/cache Once", func(int) error {
			var v Item
			return gc.Once(&gcache.Item{Ctx: ctx, Key: gKey, Value: &v, TTL: 10 * time.Minute, Do: func(*gcache.Item) (any, error) { return item, nil }})
		}},
		{"rueidis DoCache", func(int) error {
			b, err := rc.DoCache(ctx, rc.B().Get().Key(rawKey).Cache(), time.Minute).AsBytes()
			if err != nil {
				return err
			}
			var v Item
			return msgpack.Unmarshal(b, &v)
		}},
	}
	med, al := interleave(vs, *ops, par)
	mode := "serial"
	if par > 1 {
		mode = fmt.Sprintf("%d goroutines", par)
	}
	addRows(fmt.Sprintf("hit %s, %s", sizeName(size), mode), vs, med, al, "floor: GET + msgpack",
		map[string]string{"rueidis DoCache": "client-side cache: served from memory, no round trip",
			"cacheme local layer": "Settings.Local: served from memory, no round trip"})
}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%d KB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// benchMiss computes a fresh key each time (a trivial loader).
func benchMiss(ctx context.Context, rdb *redis.Client, prefix string) {
	item := newItem(100)
	p := newPlugin(rdb, prefix)
	miss, err := cacheme.Wrap(p, cacheme.Spec[int, Item]{
		Key: func(i int) string { return "miss:" + strconv.Itoa(i) }, Tag: "miss", TTL: time.Minute,
	}, func(context.Context, int) (Item, error) { return item, nil })
	if err != nil {
		fatal("%v", err)
	}
	gc := gcache.New(&gcache.Options{Redis: rdb})
	vs := []variant{
		{"cacheme", func(i int) error { _, err := miss(ctx, i); return err }},
		{"go-redis/cache Once", func(i int) error {
			var v Item
			return gc.Once(&gcache.Item{Ctx: ctx, Key: prefix + "gcmiss:" + strconv.Itoa(i), Value: &v, TTL: time.Minute,
				Do: func(*gcache.Item) (any, error) { return item, nil }})
		}},
		{"floor: GET + SET", func(i int) error {
			k := prefix + "rawmiss:" + strconv.Itoa(i)
			if err := rdb.Get(ctx, k).Err(); err != redis.Nil {
				return fmt.Errorf("want a miss: %v", err)
			}
			b, _ := msgpack.Marshal(item)
			return rdb.Set(ctx, k, b, time.Minute).Err()
		}},
	}
	med, al := interleave(vs, *ops, 1)
	addRows("miss 100 B, serial", vs, med, al, "go-redis/cache Once", nil)
}

// rtCounter counts a client's round trips.
type rtCounter struct{ n atomic.Int64 }

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(1); return next(ctx, cmds) }
}

// benchHerd: 2 clients (as two processes would have) × 500 goroutines ask
// for one cold key whose loader takes d.
func benchHerd(ctx context.Context, prefix string, d time.Duration) {
	const procs, per = 2, 500
	type result struct {
		calls    int64
		p50, p99 time.Duration
		trips    float64
	}
	run := func(name string, rnd int) result {
		var calls atomic.Int64
		loader := func() Item { calls.Add(1); time.Sleep(d); return newItem(100) }
		key := fmt.Sprintf("herd:%s:%d:%d", name, d, rnd)
		var fs []func() error
		var counters []*rtCounter
		var clients []*redis.Client
		for range procs {
			c := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 64})
			rc := &rtCounter{}
			c.AddHook(rc)
			clients, counters = append(clients, c), append(counters, rc)
			switch name {
			case "cacheme":
				p := newPlugin(c, prefix)
				f, err := cacheme.Wrap(p, cacheme.Spec[int, Item]{Key: func(int) string { return key }, Tag: "herd"},
					func(context.Context, int) (Item, error) { return loader(), nil })
				if err != nil {
					fatal("%v", err)
				}
				fs = append(fs, func() error { _, err := f(ctx, 0); return err })
			case "go-redis/cache Once":
				gc := gcache.New(&gcache.Options{Redis: c})
				fs = append(fs, func() error {
					var v Item
					return gc.Once(&gcache.Item{Ctx: ctx, Key: prefix + key, Value: &v, TTL: time.Minute,
						Do: func(*gcache.Item) (any, error) { return loader(), nil }})
				})
			}
		}
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		lat := make([]time.Duration, 0, procs*per)
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, f := range fs {
			for range per {
				wg.Go(func() {
					<-start
					t := time.Now()
					if err := f(); err != nil {
						fatal("herd %s: %v", name, err)
					}
					mu.Lock()
					lat = append(lat, time.Since(t))
					mu.Unlock()
				})
			}
		}
		close(start)
		wg.Wait()
		slices.Sort(lat)
		var trips int64
		for _, c := range counters {
			trips += c.n.Load()
		}
		return result{calls: calls.Load(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], trips: float64(trips) / procs}
	}
	names := []string{"cacheme", "go-redis/cache Once"}
	results := map[string][]result{}
	for r := range max(*rounds/2, 1) {
		for k := range names {
			name := names[(k+r)%len(names)] // interleaved, in rotated order
			results[name] = append(results[name], run(name, r))
		}
	}
	for _, name := range names {
		rs := results[name]
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		calls := med(func(r result) float64 { return float64(r.calls) })
		p50 := time.Duration(med(func(r result) float64 { return float64(r.p50) }))
		p99 := time.Duration(med(func(r result) float64 { return float64(r.p99) }))
		trips := med(func(r result) float64 { return r.trips })
		rows = append(rows, row{
			bench: fmt.Sprintf("herd 2×500, loader %v", d), variant: name, median: p50,
			ratio: float64(p50) / float64(d), allocs: -1,
			note: fmt.Sprintf("loader calls %.0f, p99 %v, round trips per process %.0f", calls, p99.Round(time.Millisecond/10), trips),
		})
		fmt.Fprintf(os.Stderr, "herd %v %s: calls %.0f p50 %v p99 %v trips/proc %.0f\n", d, name, calls, p50, p99, trips)
	}
}

// benchScale: hits on a small and a large keyspace.
func benchScale(ctx context.Context, rdb *redis.Client, prefix string) {
	p := newPlugin(rdb, prefix+"scale:")
	item := newItem(100)
	f, err := cacheme.Wrap(p, cacheme.Spec[int, Item]{Key: func(i int) string { return "k:" + strconv.Itoa(i) }, Tag: "scale"},
		func(context.Context, int) (Item, error) { return item, nil })
	if err != nil {
		fatal("%v", err)
	}
	fill(*scaleKeys, 64, func(i int) error { _, err := f(ctx, i); return err })
	small, large := 1000, *scaleKeys
	vs := []variant{
		{fmt.Sprintf("cacheme, %d keys read", small), func(i int) error { _, err := f(ctx, i%small); return err }},
		{fmt.Sprintf("cacheme, %d keys read", large), func(i int) error { _, err := f(ctx, (i*7919)%large); return err }},
	}
	med, al := interleave(vs, *ops, 1)
	addRows(fmt.Sprintf("scale: hit among %d keys in Redis", large), vs, med, al, vs[0].name, nil)
}

// fill runs op for 0..n-1 on par goroutines.
func fill(n, par int, op func(int) error) { run("fill", n, par, op) }

// run runs op for 0..n-1 on par goroutines; an error ends the program,
// named what.
func run(what string, n, par int, op func(int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					fatal("%s: %v", what, err)
				}
			}
		})
	}
	wg.Wait()
}

// benchGroups times InvalidateGroups on groups of 1 to groupMax members.
func benchGroups(ctx context.Context, rdb *redis.Client, prefix string) {
	p := newPlugin(rdb, prefix+"g:")
	item := newItem(100)
	for _, n := range []int{1, 1000, 10000, 100000} {
		if n > *groupMax {
			break
		}
		group := "group:" + strconv.Itoa(n)
		f, err := cacheme.Wrap(p, cacheme.Spec[int, Item]{
			Key: func(i int) string { return group + ":" + strconv.Itoa(i) }, Tag: "groups",
			Groups: func(int, Item) []string { return []string{group} },
		}, func(context.Context, int) (Item, error) { return item, nil })
		if err != nil {
			fatal("%v", err)
		}
		var times []time.Duration
		for range max(min(*rounds, 5), 1) {
			fill(n, 64, func(i int) error { _, err := f(ctx, i); return err })
			t := time.Now()
			hit, err := p.InvalidateGroups(ctx, group)
			el := time.Since(t)
			if err != nil || hit != n {
				fatal("invalidate %s: hit %d of %d: %v", group, hit, n, err)
			}
			times = append(times, el)
		}
		slices.Sort(times)
		rows = append(rows, row{bench: "InvalidateGroups", variant: fmt.Sprintf("cacheme, %d members", n),
			median: times[len(times)/2], allocs: -1, note: "3 round trips, one script call per 1000 keys"})
		fmt.Fprintf(os.Stderr, "invalidate %d members: %v\n", n, times[len(times)/2])
	}
}
