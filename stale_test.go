package cacheme_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/nodes"
)

// Upstream's stale tests (#17-#24 in key mode, #36-#39 in node mode): f(1)
// is cached, invalidated, then two readers call f(2) while the first one
// recomputes it (the function takes 100ms). With stale serving the second
// reader gets the old value at once, {1, 2}; without it, it waits for the
// new one, {2}.

// staleGroup is the invalidation group of the stale nodes.
type staleGroup struct {
	Name string `node:"required"`
}

func (g staleGroup) Key() string { return g.Name }

// NodeStale follows the function's and the plugin's stale mode
// (upstream TestNodeStale).
type NodeStale struct {
	ID int `node:"required"`
}

func (NodeStale) Key() string { return "test>stale" }
func (NodeStale) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{staleGroup{"test_stale"}}
}

// NodeNoStale never serves stale values (upstream TestNodeNoStale,
// Meta.stale=False).
type NodeNoStale struct {
	ID int `node:"required"`
}

func (NodeNoStale) Key() string { return "test>no_stale" }
func (NodeNoStale) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{staleGroup{"test_no_stale"}}
}
func (NodeNoStale) Stale() bool { return false }

// NodeAlwaysStale always serves stale values.
type NodeAlwaysStale struct {
	ID int `node:"required"`
}

func (NodeAlwaysStale) Key() string { return "test>always_stale" }
func (NodeAlwaysStale) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{staleGroup{"test_always_stale"}}
}
func (NodeAlwaysStale) Stale() bool { return true }

// staleSetup memoizes fn on p and returns the memoized function and the
// invalidation to run once f(1) is cached.
type staleSetup func(t *testing.T, p *cacheme.Plugin, mode cacheme.StaleMode, fn func(context.Context, int) (int, error)) (
	f func(context.Context, int) (int, error), invalidate func(context.Context) (int, error))

// keyStale memoizes fn by key; invalidate invalidates it by kind.
func keyStale(kind string) staleSetup {
	return func(t *testing.T, p *cacheme.Plugin, mode cacheme.StaleMode, fn func(context.Context, int) (int, error)) (
		func(context.Context, int) (int, error), func(context.Context) (int, error)) {
		f := mustWrap(t, p, cacheme.Spec[int, int]{
			Key:    func(int) string { return "test>stale" },
			Groups: func(int, int) []string { return []string{"test_stale"} },
			Tag:    "test_stale",
			Stale:  mode,
		}, fn)
		return f, func(ctx context.Context) (int, error) {
			switch kind {
			case "key":
				return p.InvalidateKeys(ctx, "test>stale")
			case "group":
				return p.InvalidateGroups(ctx, "test_stale")
			case "tag":
				return p.InvalidateTag(ctx, "test_stale")
			}
			t.Fatalf("unknown kind %q", kind)
			return 0, nil
		}
	}
}

// nodeStale memoizes fn by node N; invalidate invalidates the node (kind
// "node") or its invalid node (kind "invalid node").
func nodeStale[N nodes.Node](kind string, node func(int) N) staleSetup {
	return func(t *testing.T, p *cacheme.Plugin, mode cacheme.StaleMode, fn func(context.Context, int) (int, error)) (
		func(context.Context, int) (int, error), func(context.Context) (int, error)) {
		f, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, N, int]{Node: func(int) N { return node(1) }, Stale: mode}, fn)
		ok(t, err)
		return f, func(ctx context.Context) (int, error) {
			n := node(1)
			switch kind {
			case "node":
				return cacheme.Nodes[N, int](p).Invalidate(ctx, n)
			case "invalid node":
				return p.InvalidateInvalidNodes(ctx, n.InvalidNodes()...)
			}
			t.Fatalf("unknown kind %q", kind)
			return 0, nil
		}
	}
}

func TestStale(t *testing.T) {
	stale, fresh := []int{1, 2}, []int{2}
	// How the function is configured, and what the two readers get.
	type variant struct {
		noStale bool              // Settings.NoStale
		mode    cacheme.StaleMode // the spec's Stale
		want    []int
	}
	type testCase struct {
		name  string
		v     variant
		setup staleSetup
	}
	var tests []testCase
	for _, kind := range []string{"key", "group", "tag"} {
		setup := keyStale(kind)
		tests = append(tests,
			testCase{kind + "/stale", variant{false, cacheme.StaleDefault, stale}, setup},
			testCase{kind + "/StaleOff", variant{false, cacheme.StaleOff, fresh}, setup},
			testCase{kind + "/NoStale", variant{true, cacheme.StaleDefault, fresh}, setup},
			testCase{kind + "/NoStale and StaleOn", variant{true, cacheme.StaleOn, stale}, setup},
		)
	}
	for _, kind := range []string{"node", "invalid node"} {
		setup := nodeStale(kind, func(id int) NodeStale { return NodeStale{id} })
		tests = append(tests,
			testCase{kind + "/stale", variant{false, cacheme.StaleDefault, stale}, setup},
			testCase{kind + "/StaleOff", variant{false, cacheme.StaleOff, fresh}, setup},
			testCase{kind + "/NoStale", variant{true, cacheme.StaleDefault, fresh}, setup},
			// A node's own Stale wins over the spec and the settings.
			testCase{kind + "/node Stale false", variant{false, cacheme.StaleOn, fresh},
				nodeStale(kind, func(id int) NodeNoStale { return NodeNoStale{id} })},
			testCase{kind + "/node Stale true", variant{true, cacheme.StaleOff, stale},
				nodeStale(kind, func(id int) NodeAlwaysStale { return NodeAlwaysStale{id} })},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newPlugin(t, cacheme.Settings{
				NoStale:        tt.v.noStale,
				HerdRetryCount: 200, HerdRetryTime: 10 * time.Millisecond,
			})
			started := make(chan int, 4)
			f, invalidate := tt.setup(t, p, tt.v.mode, func(_ context.Context, n int) (int, error) {
				if n == 2 {
					started <- n
					time.Sleep(100 * time.Millisecond)
				}
				return n, nil
			})
			equals(t, call(t, f, 1), 1)
			n, err := invalidate(context.Background())
			ok(t, err)
			equals(t, n, 1)
			// A computation that starts within a millisecond of an
			// invalidation is not stored; this one must be.
			time.Sleep(2 * time.Millisecond)

			first := goCall(f, 2)
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("the first reader did not start computing")
			}
			second := goCall(f, 2)
			got := map[int]bool{}
			for _, ch := range []<-chan result[int]{first, second} {
				r := recv(t, ch)
				ok(t, r.err)
				got[r.v] = true
			}
			if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, tt.v.want) {
				t.Fatalf("readers got %v; want %v", keys, tt.v.want)
			}
			if len(started) != 0 {
				t.Fatalf("the function ran %d more times; want once", len(started))
			}
			wantStale := int64(0)
			if len(tt.v.want) == 2 {
				wantStale = 1
			}
			st := p.Stats().Total
			equals(t, st.Stale, wantStale)
			equals(t, st.HerdWaits, 1-wantStale)
			equals(t, call(t, f, 3), 2)
		})
	}
}

// Memory: with stale serving off an invalidation deletes the value, so that
// after invalidating many entries nothing but the groups' markers is left
// (and those expire with the lease TTL); with it on, the value is kept for
// stale serving at most StaleTTL, and its hash expires with it.
func TestInvalidatedValueMemory(t *testing.T) {
	const n = 100
	for _, tt := range []struct {
		name  string
		stale cacheme.StaleMode
	}{{"stale off", cacheme.StaleOff}, {"stale on", cacheme.StaleOn}} {
		t.Run(tt.name, func(t *testing.T) {
			const staleTTL = 10 * time.Second
			p, rdb := newPlugin(t, cacheme.Settings{StaleTTL: staleTTL, LeaseTTL: time.Second})
			prefix := p.Settings().Prefix
			var runs atomic.Int64
			f := mustWrap(t, p, cacheme.Spec[int, int]{
				Key:    func(i int) string { return fmt.Sprintf("mem:%d", i) },
				Groups: func(int, int) []string { return []string{"mem"} },
				Tag:    "mem",
				Stale:  tt.stale,
				TTL:    time.Hour,
			}, func(_ context.Context, i int) (int, error) { runs.Add(1); return i, nil })
			for i := range n {
				equals(t, call(t, f, i), i)
			}
			hashes := func() int {
				c := 0
				for _, k := range scanKeys(t, rdb, prefix) {
					if strings.HasPrefix(k, prefix+"mem:") && !strings.HasSuffix(k, ":invalid") && !strings.HasSuffix(k, ":tag") {
						c++
					}
				}
				return c
			}
			equals(t, hashes(), n)
			hit, err := p.InvalidateGroups(bg, "mem")
			ok(t, err)
			equals(t, hit, n)
			if tt.stale == cacheme.StaleOff {
				equals(t, hashes(), 0) // deleted at once
				equals(t, call(t, f, 7), 7)
				equals(t, runs.Load(), int64(n+1))
				return
			}
			// Kept, and bounded: each hash expires by the stale TTL.
			equals(t, hashes(), n)
			for i := range n {
				pttl, err := rdb.PTTL(bg, cacheme.EntryKey(p, fmt.Sprintf("mem:%d", i))).Result()
				ok(t, err)
				if pttl <= 0 || pttl > staleTTL {
					t.Fatalf("hash %d: PTTL %v; want at most the stale TTL %v", i, pttl, staleTTL)
				}
			}
			// The value itself expires (for reads) by the stale TTL too.
			now, err := rdb.Time(bg).Result()
			ok(t, err)
			v, err := rdb.Get(bg, cacheme.EntryKey(p, "mem:3")).Result()
			ok(t, err)
			st, _, _, valid := cacheme.EntryBlob(v)
			equals(t, valid && st == 's', true)
			x, err := strconv.ParseInt(v[cacheme.OffExpiry:cacheme.OffLease], 10, 64)
			ok(t, err)
			if left := time.Duration(x-now.UnixMilli()) * time.Millisecond; left > staleTTL {
				t.Fatalf("the invalidated value expires in %v; want at most the stale TTL %v", left, staleTTL)
			}
		})
	}
}
