package cacheme_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// clusterRedis returns a Redis Cluster client on the nodes named by
// CACHEME_TEST_REDIS_CLUSTER (comma-separated host:port; the test fails if
// they are unreachable or the cluster is not ok). When the variable is unset
// it returns testRedis's client (CACHEME_TEST_REDIS or miniredis), so the
// scenario still runs, on one node.
func clusterRedis(t *testing.T) (redis.UniversalClient, *redis.ClusterClient) {
	t.Helper()
	env := os.Getenv("CACHEME_TEST_REDIS_CLUSTER")
	if env == "" {
		rdb, _ := testRedis(t)
		return rdb, nil
	}
	var addrs []string
	for a := range strings.SplitSeq(env, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		t.Fatalf("CACHEME_TEST_REDIS_CLUSTER=%q is set but unreachable: %v", env, err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		t.Fatalf("CACHEME_TEST_REDIS_CLUSTER=%q: cluster is not ok:\n%s", env, info)
	}
	if err := c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.Ping(ctx).Err()
	}); err != nil {
		t.Fatalf("CACHEME_TEST_REDIS_CLUSTER=%q: a node is unreachable: %v", env, err)
	}
	return c, c
}

type clusterBook struct {
	ID    int
	Calls int64 // how often the function had run for ID when it returned this
}

// TestCluster memoizes 50 keys, which land on different hash slots (and on a
// real cluster on every master), and invalidates them by group, by tag and
// by key, checking exactly which entries are recomputed. Any Redis error,
// CROSSSLOT included, fails it: the plugin is fail-closed and every error
// it would only report is collected.
func TestCluster(t *testing.T) {
	const n = 50
	const tag = "cluster-books"
	rdb, cluster := clusterRedis(t)
	ctx := context.Background()

	var mu sync.Mutex
	var reported []error
	p := newPluginOn(t, rdb, cacheme.Settings{
		FailClosed: true,
		ErrorHook: func(_ context.Context, err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		},
	})
	prefix := p.Settings().Prefix

	var calls [n]atomic.Int64
	get, err := cacheme.Wrap(p, cacheme.Spec[int, clusterBook]{
		Key: func(id int) string { return "cbook:" + strconv.Itoa(id) },
		Groups: func(id int, _ clusterBook) []string {
			return []string{"author:" + strconv.Itoa(id%5), "shelf:" + strconv.Itoa(id%7), "all-books"}
		},
		Tag: tag,
	}, func(_ context.Context, id int) (clusterBook, error) {
		return clusterBook{ID: id, Calls: calls[id].Add(1)}, nil
	})
	ok(t, err)

	// sweep reads every key, concurrently from workers goroutines, and
	// returns the IDs whose function ran during the sweep.
	sweep := func(t *testing.T, workers int) []int {
		t.Helper()
		// On several servers, a computation that starts within about one
		// round trip of an invalidation cannot tell which came first and
		// does not store its result; a pause keeps the counts exact.
		time.Sleep(20 * time.Millisecond)
		var before [n]int64
		for i := range n {
			before[i] = calls[i].Load()
		}
		var wg sync.WaitGroup
		errs := make(chan error, n*workers)
		for range workers {
			wg.Go(func() {
				for id := range n {
					b, err := get(ctx, id)
					if err != nil {
						errs <- fmt.Errorf("get %d: %w", id, err)
						continue
					}
					if b.ID != id || b.Calls < before[id] || b.Calls > calls[id].Load() {
						errs <- fmt.Errorf("get %d = %+v; calls before %d, now %d", id, b, before[id], calls[id].Load())
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var ran []int
		for i := range n {
			switch d := calls[i].Load() - before[i]; d {
			case 0:
			case 1:
				ran = append(ran, i)
			default:
				t.Errorf("id %d computed %d times in one sweep, want at most once", i, d)
			}
		}
		return ran
	}
	ids := func(keep func(int) bool) []int {
		var out []int
		for i := range n {
			if keep(i) {
				out = append(out, i)
			}
		}
		return out
	}
	all := ids(func(int) bool { return true })
	expect := func(t *testing.T, what string, got, want []int) {
		t.Helper()
		if c := p.Stats().Total.Conflicts; c != 0 {
			t.Fatalf("%s: %d results not stored; want all stored (sweeps start well after the invalidations)", what, c)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: recomputed %v, want %v", what, got, want)
		}
	}
	invalidated := func(t *testing.T, what string, got int, err error, want int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != want {
			t.Fatalf("%s invalidated %d entries, want %d", what, got, want)
		}
	}

	expect(t, "first sweep", sweep(t, 1), all)
	expect(t, "warm sweep", sweep(t, 4), nil)

	if cluster != nil {
		// The entries must really be spread over the masters.
		var nodes, keys atomic.Int64
		ok(t, cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			k, err := c.Keys(ctx, prefix+"cbook:*").Result()
			if err != nil {
				return err
			}
			if len(k) > 0 {
				nodes.Add(1)
				keys.Add(int64(len(k)))
			}
			t.Logf("%s holds %d entries", c.Options().Addr, len(k))
			return nil
		}))
		if keys.Load() != n || nodes.Load() < 2 {
			t.Fatalf("%d entries on %d masters; want %d entries on at least 2", keys.Load(), nodes.Load(), n)
		}
	}

	got, err := p.InvalidateGroups(ctx, "author:0")
	invalidated(t, "group author:0", got, err, 10)
	// Again, before a recompute joined the group anew: nothing to do.
	got, err = p.InvalidateGroups(ctx, "author:0")
	invalidated(t, "group author:0 (again)", got, err, 0)
	expect(t, "after group author:0", sweep(t, 1), ids(func(i int) bool { return i%5 == 0 }))

	// Several groups, overlapping, on different slots: members are counted once.
	want := ids(func(i int) bool { return i%5 == 1 || i%7 == 3 || i%7 == 4 })
	got, err = p.InvalidateGroups(ctx, "author:1", "shelf:3", "shelf:4", "no-such-group")
	invalidated(t, "groups author:1 shelf:3 shelf:4", got, err, len(want))
	expect(t, "after several groups", sweep(t, 1), want)

	got, err = p.InvalidateKeys(ctx, "cbook:3", "cbook:17", "cbook:42", "cbook:999")
	invalidated(t, "keys", got, err, 3)
	expect(t, "after keys", sweep(t, 1), []int{3, 17, 42})

	// A tag invalidation, then concurrent readers: stale values are served
	// while exactly one of them recomputes each entry.
	got, err = p.InvalidateTag(ctx, tag)
	invalidated(t, "tag", got, err, n)
	expect(t, "after tag", sweep(t, 4), all)

	got, err = p.InvalidateGroups(ctx, "all-books")
	invalidated(t, "group all-books", got, err, n)
	expect(t, "after group all-books", sweep(t, 1), all)
	expect(t, "final warm sweep", sweep(t, 2), nil)

	var total int64
	for i := range n {
		total += calls[i].Load()
	}
	st := p.Stats()
	c := st.Tags[tag]
	if c.Misses != total || c.RedisErrors != 0 || c.Corrupt != 0 || c.LoaderErrors != 0 || st.Total.RedisErrors != 0 {
		t.Errorf("stats %+v; want %d misses and no errors", c, total)
	}
	if c.Hits == 0 {
		t.Errorf("stats %+v; want hits", c)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range reported {
		t.Errorf("reported: %v", err)
	}
	t.Logf("%d computations; stats %+v", total, c)
}

// The query cache on Redis Cluster: a cached read's entry, its
// conjunction groups and its table's schemes live on different nodes, and
// writes still invalidate exactly the reads they change.
func TestClusterQueryCache(t *testing.T) {
	rdb, _ := clusterRedis(t)
	e := newQCEnvOn(t, rdb, cacheme.Settings{})
	reads := map[string]func(db *gorm.DB) (any, error){
		"post 1":    postByID(1),
		"post 2":    postByID(2),
		"active":    postsWhere("status = ?", "active"),
		"archived":  postsWhere("status = ?", "archived"),
		"tags of 1": tagsOfPost(1),
		"tags of 3": tagsOfPost(3),
	}
	e.warm(t, reads)
	ok(t, e.db.Model(&Post{ID: 1}).Update("status", "archived").Error)
	ok(t, e.db.Model(&Post{ID: 3}).Association("Tags").Append(&Tag{ID: 1}))
	for name, want := range map[string]bool{"post 1": false, "post 2": true, "active": false, "archived": false, "tags of 1": true, "tags of 3": false} {
		if hit := e.served(t, reads[name]); hit != want {
			t.Errorf("%s: hit %v; want %v", name, hit, want)
		}
	}
}
