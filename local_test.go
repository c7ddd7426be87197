package cacheme_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

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
	if st.Tags[p.Tags()[0]].LocalHits != 100 { // the function's tag
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

// afterRead is a hook that runs fn once, right after the next fast-path
// read (SET NX GET) of key got its reply: between B's read of a valid
// value and its fill of the local layer.
type afterRead struct {
	key string
	fn  func()
	mu  sync.Mutex
}

func (h *afterRead) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if cmd.Name() == "set" && len(args) > 1 && args[1] == h.key {
			h.mu.Lock()
			fn := h.fn
			h.fn = nil
			h.mu.Unlock()
			if fn != nil {
				fn()
			}
		}
		return err
	}
}

func (h *afterRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *afterRead) arm(fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fn = fn
}

// No stale refill: a value B read from Redis before another process's
// invalidation, whose message B received before it could fill its local
// layer, is returned (it was valid when read) but not kept: B's next call
// computes the new value. Without the invalidation the same read fills.
func TestLocalNoStaleRefill(t *testing.T) {
	for _, overtaken := range []bool{true, false} {
		t.Run(fmt.Sprintf("overtaken=%v", overtaken), func(t *testing.T) {
			rdb, _ := testRedis(t)
			prefix := uniquePrefix()
			pa := newPluginOn(t, secondClient(t, rdb), cacheme.Settings{Prefix: prefix})
			cb := secondClient(t, rdb)
			pb := newPluginOn(t, cb, cacheme.Settings{Prefix: prefix, Local: localSettings, NoStale: true})
			hook := &afterRead{key: cacheme.EntryKey(pb, "refill")}
			cb.AddHook(hook)
			waitLocal(t, pb, 0)
			var version atomic.Int64
			version.Store(1)
			f := mustWrap(t, pb, cacheme.Spec[int, int64]{Key: func(int) string { return "refill" }},
				func(context.Context, int) (int64, error) { return version.Load(), nil })
			equals(t, call(t, f, 0), int64(1)) // computed and stored
			hook.arm(func() {
				if !overtaken {
					return
				}
				version.Store(2)
				seen := cacheme.LocalMessages(pb)
				_, err := pa.InvalidateKeys(bg, "refill")
				ok(t, err)
				waitFor(t, "B to receive the invalidation", func() bool { return cacheme.LocalMessages(pb) > seen })
			})
			equals(t, call(t, f, 0), int64(1)) // a Redis hit, read before the invalidation
			equals(t, cacheme.LocalHas(pb, "refill"), !overtaken)
			if overtaken {
				equals(t, call(t, f, 0), int64(2))
				equals(t, pb.Stats().Total.LocalHits, int64(0))
			} else {
				equals(t, call(t, f, 0), int64(1))
				equals(t, pb.Stats().Total.LocalHits, int64(1))
			}
		})
	}
}

// killSubscription drops the connection of p's subscription: on miniredis
// by restarting the server (its data survives), on a real server with
// CLIENT KILL of the connection named name that subscribes. between runs
// while it is down (miniredis) or right after the kill.
func killSubscription(t *testing.T, rdb redis.UniversalClient, mr *miniredis.Miniredis, name string, between func()) {
	t.Helper()
	if mr != nil {
		mr.Close()
		between()
		ok(t, mr.Restart())
		return
	}
	list, err := rdb.ClientList(bg).Result()
	ok(t, err)
	killed := 0
	for line := range strings.SplitSeq(list, "\n") {
		if !strings.Contains(line, " name="+name+" ") || strings.Contains(line, " sub=0 ") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if id, found := strings.CutPrefix(f, "id="); found {
				ok(t, rdb.Do(bg, "client", "kill", "id", id).Err())
				killed++
			}
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d subscriptions named %s; want 1:\n%s", killed, name, list)
	}
	between()
}

// A lost subscription empties the local layer before it serves again: an
// entry invalidated while no message could reach B (here deleted without
// one) is never served from B's layer after B subscribed again.
func TestLocalPurgeOnResubscribe(t *testing.T) {
	rdb, mr := testRedis(t)
	c := secondClient(t, rdb)
	opt := c.Options()
	opt.ClientName = fmt.Sprintf("cm-local-%d", time.Now().UnixNano())
	cb := redis.NewClient(opt)
	t.Cleanup(func() { cb.Close() })
	p := newPluginOn(t, cb, cacheme.Settings{Local: localSettings, NoStale: true})
	waitLocal(t, p, 0)
	var cnt counter
	f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "resub" }}, cnt.fn)
	equals(t, call(t, f, 0), int64(1))
	equals(t, call(t, f, 0), int64(1))
	equals(t, cacheme.LocalHas(p, "resub"), true)
	_, purges := cacheme.LocalLive(p)
	killSubscription(t, c, mr, opt.ClientName, func() {
		if mr != nil {
			waitFor(t, "the layer to stop serving", func() bool { live, _ := cacheme.LocalLive(p); return !live })
			mr.Del(cacheme.EntryKey(p, "resub"))
		} else {
			ok(t, c.Del(bg, cacheme.EntryKey(p, "resub")).Err())
		}
	})
	waitLocal(t, p, purges+1) // emptied at the loss and again at the confirmation
	equals(t, cacheme.LocalHas(p, "resub"), false)
	if got := call(t, f, 0); got < 2 {
		t.Fatalf("after the subscription came back B served %d, the value deleted while it was lost", got)
	}
}

// The layer stays within MaxBytes and MaxEntries under a stream of 1M
// distinct keys, filled as reads would fill it.
func TestLocalMemoryBound(t *testing.T) {
	const maxBytes, maxEntries, keys = 4 << 20, 5000, 1_000_000
	p, _ := newPlugin(t, cacheme.Settings{Local: cacheme.LocalSettings{MaxBytes: maxBytes, MaxEntries: maxEntries}})
	waitLocal(t, p, 0)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rng := rand.New(rand.NewPCG(1, 2))
	kept := 0
	for i := range keys {
		// Values under 64 bytes, then of 0 to 4 KiB: the small ones are
		// bound by MaxEntries, the large ones by MaxBytes.
		size := rng.IntN(64)
		if i >= keys/2 {
			size = rng.IntN(4096)
		}
		if cacheme.LocalFill(p, fmt.Sprintf("CM:stream:%d>base>", i), size) {
			kept++
		}
		if i == keys/2-1 {
			w, n := cacheme.LocalSize(p)
			t.Logf("small values: %d bytes weighed, %d entries", w, n)
			if n < maxEntries/2 {
				t.Fatalf("small values: %d entries; the bound is %d", n, maxEntries)
			}
		}
		if i%100_000 == 99_999 {
			w, n := cacheme.LocalSize(p)
			if w > maxBytes || n > maxEntries {
				t.Fatalf("after %d keys: %d bytes, %d entries; want at most %d, %d", i+1, w, n, maxBytes, maxEntries)
			}
		}
	}
	w, n := cacheme.LocalSize(p)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d keys filled (%d kept): %d bytes weighed, %d entries (bounds %d, %d); heap grew %.1f MiB",
		keys, kept, w, n, maxBytes, maxEntries, float64(grown)/(1<<20))
	if w > maxBytes || n > maxEntries {
		t.Fatalf("%d bytes, %d entries; want at most %d, %d", w, n, maxBytes, maxEntries)
	}
	if grown > 4*maxBytes {
		t.Fatalf("the heap grew %d bytes for a layer of at most %d", grown, maxBytes)
	}
}

// On Redis Cluster (CACHEME_TEST_REDIS_CLUSTER; one node otherwise), an
// invalidation in process A of 50 keys spread over every master evicts
// them from process B's local layer: each master's invalidateScript
// publishes, and the cluster bus carries it to B's subscription, whatever
// node that is on.
func TestLocalCluster(t *testing.T) {
	const n = 50
	rdb, cluster := clusterRedis(t)
	other := func() redis.UniversalClient {
		if cluster != nil {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Options().Addrs})
			t.Cleanup(func() { c.Close() })
			return c
		}
		return secondClient(t, rdb)
	}
	prefix := uniquePrefix()
	pa := newPluginOn(t, other(), cacheme.Settings{Prefix: prefix})
	pb := newPluginOn(t, other(), cacheme.Settings{Prefix: prefix, NoStale: true, Local: localSettings})
	waitLocal(t, pb, 0)
	var versions [n]atomic.Int64
	spec := cacheme.Spec[int, int64]{
		Key:    func(k int) string { return fmt.Sprintf("cl:%d", k) },
		Groups: func(int, int64) []string { return []string{"cl-all"} },
	}
	f := mustWrap(t, pb, spec, func(_ context.Context, k int) (int64, error) { return versions[k].Load(), nil })
	round := func(how string, invalidate func() error) {
		t.Helper()
		for k := range n {
			// On several servers a computation within about a round trip
			// of an invalidation is not stored: read until it is.
			waitFor(t, fmt.Sprintf("cl:%d in B's local layer", k), func() bool {
				_, err := f(bg, k)
				ok(t, err)
				return cacheme.LocalHas(pb, fmt.Sprintf("cl:%d", k))
			})
		}
		for k := range n {
			versions[k].Add(1)
		}
		ok(t, invalidate())
		waitFor(t, "B to evict every key after "+how, func() bool {
			for k := range n {
				if cacheme.LocalHas(pb, fmt.Sprintf("cl:%d", k)) {
					return false
				}
			}
			return true
		})
		for k := range n {
			equals(t, call(t, f, k), versions[k].Load())
		}
	}
	round("InvalidateGroups", func() error { _, err := pa.InvalidateGroups(bg, "cl-all"); return err })
	keys := make([]string, n)
	for k := range n {
		keys[k] = fmt.Sprintf("cl:%d", k)
	}
	round("InvalidateKeys", func() error { _, err := pa.InvalidateKeys(bg, keys...); return err })
	if pb.Stats().Total.LocalHits != 0 {
		t.Logf("B: %+v", pb.Stats().Total)
	}
}

type localBook struct {
	ID    uint
	Title string
}

// The query cache sits behind the local layer too: a cached GORM read is
// served from B's memory, and a GORM write through process A (another
// *gorm.DB and plugin on the same database) evicts it after its COMMIT.
func TestLocalQueryCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "local.db") + "?_busy_timeout=5000&_journal_mode=WAL"
	open := func() *gorm.DB {
		db, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Discard})
		ok(t, err)
		sqlDB, err := db.DB()
		ok(t, err)
		t.Cleanup(func() { sqlDB.Close() })
		return db
	}
	pa, pb := twoProcesses(t, cacheme.Settings{}, cacheme.Settings{})
	dbA, dbB := open(), open()
	ok(t, dbA.Use(pa))
	ok(t, dbB.Use(pb))
	ok(t, dbA.AutoMigrate(&localBook{}))
	ok(t, dbA.Create(&localBook{ID: 1, Title: "Dune"}).Error)
	read := func() string {
		t.Helper()
		var b localBook
		ok(t, dbB.Clauses(cacheme.Cached{TTL: time.Minute}).First(&b, 1).Error)
		return b.Title
	}
	for range 3 {
		equals(t, read(), "Dune") // the database, Redis, B's memory
	}
	equals(t, pb.Stats().Total.LocalHits, int64(1))
	ok(t, dbA.Model(&localBook{ID: 1}).Update("title", "Dune Messiah").Error)
	waitFor(t, "B to read the new title", func() bool { return read() == "Dune Messiah" })
	read()
	read()
	if pb.Stats().Total.LocalHits < 2 {
		t.Fatalf("B served the new title from Redis only: %+v", pb.Stats().Total)
	}
}

// muteProxy forwards TCP connections to a Redis server; while muted it
// swallows the server's replies (requests still go through): a connection
// that stays up and says nothing.
type muteProxy struct {
	ln    net.Listener
	to    string
	muted atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startMuteProxy(t *testing.T, upstream string) *muteProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ok(t, err)
	m := &muteProxy{ln: ln, to: upstream}
	m.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			m.mu.Lock()
			m.conns = append(m.conns, c, s)
			m.mu.Unlock()
			m.wg.Go(func() { _, _ = io.Copy(s, c); s.Close(); c.Close() })
			m.wg.Go(func() {
				defer c.Close()
				defer s.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !m.muted.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		m.reset()
		m.wg.Wait()
	})
	return m
}

// reset closes every proxied connection.
func (m *muteProxy) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
	m.conns = nil
}

// A subscription that goes silent (no error, no message, no reply to its
// pings) stops the layer within two heartbeats: an invalidation it never
// hears about is served locally at most that long. Once replies flow
// again the layer subscribes anew and serves the new value.
func TestLocalSilentSubscription(t *testing.T) {
	const heartbeat = 100 * time.Millisecond
	rdb, _ := testRedis(t)
	c := secondClient(t, rdb)
	proxy := startMuteProxy(t, c.Options().Addr)
	opt := *c.Options()
	opt.Addr = proxy.ln.Addr().String()
	cb := redis.NewClient(&opt)
	t.Cleanup(func() { cb.Close() })
	prefix := uniquePrefix()
	// A short lease: the read B sends while muted takes one whose reply
	// it never gets, and its next call waits for that lease to run out.
	pa := newPluginOn(t, c, cacheme.Settings{Prefix: prefix, LeaseTTL: 500 * time.Millisecond})
	pb := newPluginOn(t, cb, cacheme.Settings{Prefix: prefix, NoStale: true, OpTimeout: 50 * time.Millisecond,
		LeaseTTL: 500 * time.Millisecond, Local: cacheme.LocalSettings{MaxEntries: 100, Heartbeat: heartbeat}})
	waitLocal(t, pb, 0)
	var version atomic.Int64
	version.Store(1)
	f := mustWrap(t, pb, cacheme.Spec[int, int64]{Key: func(int) string { return "silent" }},
		func(context.Context, int) (int64, error) { return version.Load(), nil })
	waitFor(t, "the entry in B's layer", func() bool { call(t, f, 0); return cacheme.LocalHas(pb, "silent") })
	proxy.muted.Store(true)
	muted := time.Now()
	version.Store(2)
	_, err := pa.InvalidateKeys(bg, "silent")
	ok(t, err)
	waitFor(t, "B's layer to stop serving", func() bool { live, _ := cacheme.LocalLive(pb); return !live })
	noticed := time.Since(muted)
	equals(t, cacheme.LocalHas(pb, "silent"), false)
	equals(t, call(t, f, 0), int64(2)) // Redis times out: fail-open
	proxy.muted.Store(false)
	proxy.reset() // the swallowed replies left B's connections out of step
	_, purges := cacheme.LocalLive(pb)
	waitLocal(t, pb, purges)
	waitFor(t, "B to read the new value", func() bool { v, err := f(bg, 0); return err == nil && v == 2 })
	t.Logf("B stopped serving %v after its connection went silent (heartbeat %v)", noticed.Round(time.Millisecond), heartbeat)
	if noticed > 4*heartbeat {
		t.Fatalf("B noticed after %v; want within about two heartbeats", noticed)
	}
}
