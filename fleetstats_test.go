package cacheme_test

import (
	"context"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/nodes"
)

// fleetNode is a node type for the fleet tests.
type fleetNode struct{ ID int }

func (n fleetNode) Key() string                     { return "fleetnode:" + strconv.Itoa(n.ID) }
func (fleetNode) InvalidNodes() []nodes.InvalidNode { return nil }

// fleetCalls memoizes a function under tag on p and calls it for ids
// 0..misses-1 (misses), then hits times more for ids already cached
// (id 0 when misses is 0).
func fleetCalls(t *testing.T, p *cacheme.Plugin, tag string, misses, hits int) {
	t.Helper()
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(i int) string { return tag + ":" + strconv.Itoa(i) }, Tag: tag}, identity)
	for i := range misses {
		call(t, f, i)
	}
	for i := range hits {
		call(t, f, i%max(misses, 1))
	}
}

func TestFleetStats(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	a := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	b := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	tool := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: -1})

	fleetCalls(t, a, "fa", 3, 2)
	fleetCalls(t, b, "fb", 4, 1)
	fleetCalls(t, b, "fa", 1, 1) // the same tag in another process: same keys, so a hit
	node := mustWrapNode(t, a)
	call(t, node, 1)
	call(t, node, 1)

	ok(t, a.PublishStats(bg))
	ok(t, b.PublishStats(bg))
	f, err := tool.FleetStats(bg)
	ok(t, err)
	want := a.Stats().Total
	add(&want, b.Stats().Total)
	deepEquals(t, f.Total, want)
	equals(t, f.Total.Hits, int64(2+1+2+1)) // b's "fa:0" is a's
	equals(t, f.Total.Misses, int64(3+4+1))
	equals(t, f.Tags["fa"].Hits, int64(4))
	equals(t, f.Tags["fa"].Misses, int64(3))
	equals(t, f.Tags["fb"].Misses, int64(4))
	equals(t, f.Kinds["fa"], cacheme.KindFunction)
	nodeTag := cacheme.Nodes[fleetNode, int](a).Tag()
	equals(t, f.Kinds[nodeTag], cacheme.KindNode)
	equals(t, f.Tags[nodeTag].Hits, int64(1))
	equals(t, f.Processes, 2)
	if len(f.Minutes) != int(cacheme.FleetWindow/time.Minute)+1 {
		t.Fatalf("%d minutes; want one per minute of the window and the current one", len(f.Minutes))
	}
	var perMinute cacheme.Counters
	for _, m := range f.Minutes {
		add(&perMinute, m.Counters)
	}
	deepEquals(t, perMinute, f.Total)

	// Publishing again sends nothing new; new activity adds to it.
	ok(t, a.PublishStats(bg))
	f2, err := tool.FleetStats(bg)
	ok(t, err)
	deepEquals(t, f2.Total, f.Total)
	fleetCalls(t, a, "fa", 0, 3)
	ok(t, a.PublishStats(bg))
	f2, err = tool.FleetStats(bg)
	ok(t, err)
	equals(t, f2.Total.Hits, f.Total.Hits+3)
	equals(t, f2.Tags["fa"].Hits, f.Tags["fa"].Hits+3)

	// Another prefix sees none of it.
	f3, err := newPluginOn(t, rdb, cacheme.Settings{}).FleetStats(bg)
	ok(t, err)
	deepEquals(t, f3.Total, cacheme.Counters{})
	equals(t, f3.Processes, 0)
}

func mustWrapNode(t *testing.T, p *cacheme.Plugin) func(context.Context, int) (int, error) {
	t.Helper()
	f, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, fleetNode, int]{Node: func(i int) fleetNode { return fleetNode{i} }}, identity)
	ok(t, err)
	return f
}

func add(c *cacheme.Counters, d cacheme.Counters) {
	cv, dv := reflect.ValueOf(c).Elem(), reflect.ValueOf(d)
	for i := range cv.NumField() {
		cv.Field(i).SetInt(cv.Field(i).Int() + dv.Field(i).Int())
	}
}

// TestFleetStatsOnClose checks that Close publishes what is left.
func TestFleetStatsOnClose(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	p := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix}) // the default interval: 10s
	fleetCalls(t, p, "closing", 5, 5)
	tool := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: -1})
	f, err := tool.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(0)) // nothing published yet
	ok(t, p.Close(bg))
	f, err = tool.FleetStats(bg)
	ok(t, err)
	deepEquals(t, f.Total, p.Stats().Total)
	equals(t, f.Tags["closing"].Hits, int64(5))
}

// TestFleetStatsInterval checks the timer: activity is published within
// the interval, and nothing with the interval negative.
func TestFleetStatsInterval(t *testing.T) {
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	tool := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: -1})
	p := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: 20 * time.Millisecond})
	fleetCalls(t, p, "timed", 2, 2)
	waitFor(t, "the timer's publication", func() bool {
		f, err := tool.FleetStats(bg)
		return err == nil && f.Total.Hits == 2
	})
	fleetCalls(t, p, "timed", 0, 3) // the next activity arms it again
	waitFor(t, "the second publication", func() bool {
		f, err := tool.FleetStats(bg)
		return err == nil && f.Total.Hits == 5
	})

	off := newPluginOn(t, rdb, cacheme.Settings{Prefix: uniquePrefix(), StatsInterval: -1})
	fleetCalls(t, off, "off", 2, 2)
	time.Sleep(50 * time.Millisecond)
	ok(t, off.Close(bg))
	f, err := off.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(0))
	ok(t, off.PublishStats(bg)) // by hand it still works
	f, err = off.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(2))
}

// TestFleetStatsTagCap checks that one publication names at most
// MaxFleetTags tags, the most active, and adds up the others.
func TestFleetStatsTagCap(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{StatsInterval: -1})
	extra := 5
	for i := range cacheme.MaxFleetTags + extra {
		// Tag i makes i+2 calls: the first extra tags are the least active.
		fleetCalls(t, p, "cap"+strconv.Itoa(i), 1, i+1)
	}
	ok(t, p.PublishStats(bg))
	f, err := p.FleetStats(bg)
	ok(t, err)
	equals(t, len(f.Tags), cacheme.MaxFleetTags+1)
	var sum cacheme.Counters
	for tag, c := range f.Tags {
		add(&sum, c)
		if tag != cacheme.FleetOther {
			if i, _ := strconv.Atoi(tag[3:]); i < extra {
				t.Errorf("tag %s (one of the least active) is named", tag)
			}
		}
	}
	deepEquals(t, sum, f.Total)
	equals(t, f.Tags[cacheme.FleetOther].Hits, int64(1+2+3+4+5))
}

// TestFleetStatsWindow moves the clock of the minutes: what was published
// an hour ago leaves the window, and each minute's hash expires.
func TestFleetStatsWindow(t *testing.T) {
	rdb, _ := testRedis(t)
	p := newPluginOn(t, rdb, cacheme.Settings{StatsInterval: -1})
	t0 := time.Date(2025, 3, 1, 10, 0, 30, 0, time.UTC)
	now := t0
	cacheme.SetFleetClock(p, func() time.Time { return now })
	fleetCalls(t, p, "w", 1, 1)
	ok(t, p.PublishStats(bg))
	now = t0.Add(30 * time.Minute)
	fleetCalls(t, p, "w", 0, 2)
	ok(t, p.PublishStats(bg))

	f, err := p.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(3))
	last := f.Minutes[len(f.Minutes)-1]
	equals(t, last.Start, t0.Add(30*time.Minute).Truncate(time.Minute).Local())
	equals(t, last.Hits, int64(2))
	equals(t, f.Minutes[len(f.Minutes)-31].Hits, int64(1))

	now = t0.Add(61 * time.Minute)
	f, err = p.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(2))

	key := p.Settings().Prefix + ">stats:" + strconv.FormatInt(t0.Unix()/60, 10)
	ttl, err := rdb.PTTL(bg, key).Result()
	ok(t, err)
	if ttl <= cacheme.FleetWindow || ttl > cacheme.FleetWindow+10*time.Minute {
		t.Fatalf("%s expires in %v; want a bit over FleetWindow", key, ttl)
	}
}

// TestFleetStatsFailure checks that a publication that fails loses
// nothing: the next one sends it.
func TestFleetStatsFailure(t *testing.T) {
	rdb, _ := testRedis(t)
	h := &faultHook{}
	rdb.AddHook(h)
	p := newPluginOn(t, rdb, cacheme.Settings{StatsInterval: -1})
	fleetCalls(t, p, "f", 2, 3)
	h.on.Store(true)
	isErr(t, p.PublishStats(bg), cacheme.ErrRedis)
	_, err := p.FleetStats(bg)
	isErr(t, err, cacheme.ErrRedis)
	h.on.Store(false)
	ok(t, p.PublishStats(bg))
	f, err := p.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Hits, int64(3))
	equals(t, f.Total.Misses, int64(2))
}

// TestCounterNames checks that every counter of Counters is published, in
// field order.
func TestCounterNames(t *testing.T) {
	var c cacheme.Counters
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		v.Field(i).SetInt(int64(i + 1))
	}
	vals := c.Values()
	if len(vals) != v.NumField() || len(cacheme.CounterNames()) != v.NumField() {
		t.Fatalf("%d values, %d names for %d counters", len(vals), len(cacheme.CounterNames()), v.NumField())
	}
	for i, n := range vals {
		equals(t, n, int64(i+1))
	}
	equals(t, cacheme.CounterNames()[3], "herd_waits")
}

// TestInspectSkipsStats checks that the counters' hashes are not entries.
func TestInspectSkipsStats(t *testing.T) {
	rdb, _ := testRedis(t)
	p := newPluginOn(t, rdb, cacheme.Settings{StatsInterval: -1})
	fleetCalls(t, p, "s", 2, 0)
	ok(t, p.PublishStats(bg))
	got, _ := scanAll(t, p, cacheme.ScanOptions{})
	deepEquals(t, got, []string{"s:0", "s:1"})
	n, err := p.InvalidatePattern(bg, "*", false, nil)
	ok(t, err)
	equals(t, n, 2)
	f, err := p.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Misses, int64(2))
}

// TestFleetStatsCluster publishes from two plugins and reads the window on
// a Redis Cluster (CACHEME_TEST_REDIS_CLUSTER; one node otherwise): the
// minutes' hashes live on several masters.
func TestFleetStatsCluster(t *testing.T) {
	rdb, _ := clusterRedis(t)
	prefix := uniquePrefix()
	a := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: -1})
	b := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, StatsInterval: -1})
	t0 := time.Now()
	for i, p := range []*cacheme.Plugin{a, b, a, b} {
		at := t0.Add(-time.Duration(i*7) * time.Minute)
		cacheme.SetFleetClock(p, func() time.Time { return at })
		fleetCalls(t, p, "c"+strconv.Itoa(i), 3, 1)
		ok(t, p.PublishStats(bg))
	}
	cacheme.SetFleetClock(a, time.Now)
	f, err := a.FleetStats(bg)
	ok(t, err)
	equals(t, f.Total.Misses, int64(12))
	equals(t, f.Total.Hits, int64(4))
	equals(t, f.Processes, 2)
}
