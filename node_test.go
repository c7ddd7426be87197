package cacheme_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/nodes"
)

// Go counterparts of upstream cacheme v0.1.1 tests/test_node.py (node
// mode). The stale cases (#36-#39) are in stale_test.go.

// BasicNode has a constant key and no groups.
type BasicNode struct{}

func (BasicNode) Key() string                       { return "basic" }
func (BasicNode) InvalidNodes() []nodes.InvalidNode { return nil }

// TestNodeConstant has a constant key; its result joins the group of its
// user.
type TestNodeConstant struct {
	ID int `node:"required"`
}

func (TestNodeConstant) Key() string { return "test" }
func (n TestNodeConstant) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{InvalidTestUserNode{User: n.ID}}
}

// TestNodeDynamic has a key per ID.
type TestNodeDynamic struct {
	ID int `node:"required"`
}

func (n TestNodeDynamic) Key() string { return "test:" + strconv.Itoa(n.ID) }
func (n TestNodeDynamic) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{InvalidTestUserNode{User: n.ID}}
}

// InvalidTestUserNode is the group of a user's results (upstream
// InvalidUserNode; renamed so as not to clash with the GORM tests' nodes).
type InvalidTestUserNode struct {
	User int `node:"required"`
}

func (n InvalidTestUserNode) Key() string { return "user:" + strconv.Itoa(n.User) }

// nodeEvents records node callbacks.
type nodeEvents struct {
	hits, misses atomic.Int64
	lastKey      atomic.Value
}

// NodeHitMiss has its own hit and miss callbacks.
type NodeHitMiss struct {
	ID     int `node:"required"`
	events *nodeEvents
}

func (n NodeHitMiss) Key() string                     { return "test:" + strconv.Itoa(n.ID) }
func (NodeHitMiss) InvalidNodes() []nodes.InvalidNode { return nil }
func (n NodeHitMiss) Hit(_ context.Context, key string) {
	n.events.hits.Add(1)
	n.events.lastKey.Store(key)
}
func (n NodeHitMiss) Miss(_ context.Context, key string) {
	n.events.misses.Add(1)
	n.events.lastKey.Store(key)
}

// NodeTTL has its own time to live.
type NodeTTL struct {
	ID  int `node:"required"`
	ttl time.Duration
}

func (n NodeTTL) Key() string                     { return "ttl:" + strconv.Itoa(n.ID) }
func (NodeTTL) InvalidNodes() []nodes.InvalidNode { return nil }
func (n NodeTTL) TTL() time.Duration              { return n.ttl }

// NodeNoKey and InvalidNodeNoKey have an empty key (upstream: no key()).
type NodeNoKey struct{}

func (NodeNoKey) Key() string                       { return "" }
func (NodeNoKey) InvalidNodes() []nodes.InvalidNode { return nil }

type InvalidNodeNoKey struct{}

func (InvalidNodeNoKey) Key() string { return "" }

// NodeWithBadGroup lists an invalid node with no key.
type NodeWithBadGroup struct{}

func (NodeWithBadGroup) Key() string { return "bad-group" }
func (NodeWithBadGroup) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{InvalidNodeNoKey{}}
}

// NodeWithNilGroups lists nil invalid nodes among real ones.
type NodeWithNilGroups struct{}

func (NodeWithNilGroups) Key() string { return "nil-groups" }
func (NodeWithNilGroups) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{nil, (*InvalidTestUserNode)(nil), InvalidTestUserNode{User: 9}}
}

// wrapNode is cacheme.WrapNode with a counter function (results 1, 2, ...)
// and a node built from the argument.
func wrapNode[N nodes.Node](t *testing.T, p *cacheme.Plugin, node func(int) N) (func(context.Context, int) (int64, error), *counter) {
	t.Helper()
	var c counter
	f, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, N, int64]{Node: node}, c.fn)
	ok(t, err)
	return f, &c
}

// #25: a node or invalid node without a key cannot be used.
func TestNodeNoKey(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	f, c := wrapNode(t, p, func(int) NodeNoKey { return NodeNoKey{} })
	_, err := f(ctx, 1)
	isErr(t, err, nodes.ErrNoKey)
	equals(t, c.n.Load(), 0)
	_, err = cacheme.Nodes[NodeNoKey, int64](p).Get(ctx, NodeNoKey{})
	isErr(t, err, nodes.ErrNoKey)
	_, err = p.InvalidateNodes(ctx, NodeNoKey{})
	isErr(t, err, nodes.ErrNoKey)
	_, err = p.InvalidateInvalidNodes(ctx, InvalidNodeNoKey{})
	isErr(t, err, nodes.ErrNoKey)

	// An invalid node without a key among a node's groups: the caller gets
	// the result, the error is reported and nothing is cached.
	rec := &errRecorder{}
	p, _ = newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	f, _ = wrapNode(t, p, func(int) NodeWithBadGroup { return NodeWithBadGroup{} })
	equals(t, call(t, f, 1), 1)
	equals(t, call(t, f, 1), 2)
	if !rec.Has(nodes.ErrNoKey) {
		t.Fatalf("reported %v; want ErrNoKey", rec.All())
	}
	equals(t, p.Stats().Total.RedisErrors, 0)
}

// #26: basic node caching.
func TestNodeCacheBasic(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	basic, _ := wrapNode(t, p, func(int) BasicNode { return BasicNode{} })
	equals(t, call(t, basic, 1), 1)
	constant, _ := wrapNode(t, p, func(id int) TestNodeConstant { return TestNodeConstant{ID: id} })
	equals(t, call(t, constant, 1), 1)
	equals(t, call(t, constant, 2), 1)
	dynamic, _ := wrapNode(t, p, func(id int) TestNodeDynamic { return TestNodeDynamic{ID: id} })
	equals(t, call(t, dynamic, 1), 1)
	equals(t, call(t, dynamic, 2), 2)
	equals(t, call(t, dynamic, 1), 1)
	// Pointer nodes work the same, under the same tag.
	ptr, _ := wrapNode(t, p, func(id int) *TestNodeDynamic { return &TestNodeDynamic{ID: id} })
	equals(t, call(t, ptr, 2), 2)
	equals(t, call(t, ptr, 3), 1)
	deepEquals(t, p.Tags(), []string{"BasicNode", "TestNodeConstant", "TestNodeDynamic"})
}

// #27: invalidating a node's group.
func TestNodeCacheInvalidation(t *testing.T) {
	tests := []struct {
		name       string
		invalidate func(ctx context.Context, p *cacheme.Plugin) (int, error)
	}{
		{"group name", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateGroups(ctx, InvalidTestUserNode{User: 1}.Key())
		}},
		{"invalid node", func(ctx context.Context, p *cacheme.Plugin) (int, error) {
			return p.InvalidateInvalidNodes(ctx, InvalidTestUserNode{User: 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			f, _ := wrapNode(t, p, func(id int) TestNodeConstant { return TestNodeConstant{ID: id} })
			equals(t, call(t, f, 1), 1)
			n, err := tt.invalidate(context.Background(), p)
			ok(t, err)
			equals(t, n, 1)
			equals(t, call(t, f, 1), 2)
			equals(t, call(t, f, 1), 2)
		})
	}
}

// #28: required fields.
func TestNodeRequiredFields(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	f, c := wrapNode(t, p, func(int) TestNodeConstant { return TestNodeConstant{} })
	_, err := f(ctx, 1)
	if err == nil || err.Error() != "nodes: ID is required for TestNodeConstant" {
		t.Fatalf("got error %v; want %q", err, "nodes: ID is required for TestNodeConstant")
	}
	isErr(t, err, nodes.ErrMissingField)
	equals(t, c.n.Load(), 0)

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"InvalidateInvalidNodes", func() error {
			_, err := p.InvalidateInvalidNodes(ctx, InvalidTestUserNode{User: 1}, InvalidTestUserNode{})
			return err
		}(), "nodes: User is required for InvalidTestUserNode"},
		{"InvalidateNodes", func() error {
			_, err := p.InvalidateNodes(ctx, TestNodeDynamic{})
			return err
		}(), "nodes: ID is required for TestNodeDynamic"},
		{"Invalidate", func() error {
			_, err := cacheme.Nodes[TestNodeDynamic, int64](p).Invalidate(ctx, TestNodeDynamic{})
			return err
		}(), "nodes: ID is required for TestNodeDynamic"},
		{"Get", func() error {
			_, err := cacheme.Nodes[TestNodeDynamic, int64](p).Get(ctx, TestNodeDynamic{})
			return err
		}(), "nodes: ID is required for TestNodeDynamic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil || tt.err.Error() != tt.want {
				t.Fatalf("got error %v; want %q", tt.err, tt.want)
			}
			isErr(t, tt.err, nodes.ErrMissingField)
			var fe *nodes.FieldError
			if !errors.As(tt.err, &fe) {
				t.Fatalf("got %T; want a *nodes.FieldError", tt.err)
			}
		})
	}
}

// #29: a node type's tag is its type name.
func TestNodeTag(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	f, _ := wrapNode(t, p, func(id int) TestNodeConstant { return TestNodeConstant{ID: id} })
	equals(t, call(t, f, 1), 1)
	equals(t, cacheme.Nodes[TestNodeConstant, int64](p).Tag(), "TestNodeConstant")
	n, err := p.InvalidateTag(ctx, "TestNodeConstant")
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, f, 1), 2)
}

// #30: invalidating every node of a type, and a group by invalid node.
func TestNodeKeys(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	m := cacheme.Nodes[TestNodeConstant, int64](p)
	f, _ := wrapNode(t, p, func(id int) TestNodeConstant { return TestNodeConstant{ID: id} })
	equals(t, call(t, f, 1), 1)
	n, err := m.InvalidateAll(ctx)
	ok(t, err)
	equals(t, n, 1)
	// Recomputed for user 2: it joins group user:2.
	equals(t, call(t, f, 2), 2)
	n, err = p.InvalidateInvalidNodes(ctx, InvalidTestUserNode{User: 2})
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, f, 2), 3)
	equals(t, call(t, f, 2), 3)
}

// #31, #32: Get returns a node's cached value, and ErrNotCached when there
// is none: never computed, invalidated or expired.
func TestNodeGet(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	constant := cacheme.Nodes[TestNodeConstant, int64](p)
	f, _ := wrapNode(t, p, func(id int) TestNodeConstant { return TestNodeConstant{ID: id} })
	equals(t, call(t, f, 1), 1)
	v, err := constant.Get(ctx, TestNodeConstant{ID: 1})
	ok(t, err)
	equals(t, v, 1)
	// Get does not count as a hit.
	equals(t, p.Stats().Total.Hits, 0)

	dynamic := cacheme.Nodes[TestNodeDynamic, int64](p)
	_, err = dynamic.Get(ctx, TestNodeDynamic{ID: 1})
	isErr(t, err, cacheme.ErrNotCached)
	want := "cacheme: not cached: node " + p.Settings().Prefix + "test:1>base"
	if err.Error() != want {
		t.Fatalf("got error %q; want %q", err, want)
	}

	n, err := constant.Invalidate(ctx, TestNodeConstant{ID: 1})
	ok(t, err)
	equals(t, n, 1)
	_, err = constant.Get(ctx, TestNodeConstant{ID: 1})
	isErr(t, err, cacheme.ErrNotCached)

	ttlNodes := cacheme.Nodes[NodeTTL, int64](p)
	ft, _ := wrapNode(t, p, func(id int) NodeTTL { return NodeTTL{ID: id, ttl: 50 * time.Millisecond} })
	equals(t, call(t, ft, 1), 1)
	time.Sleep(80 * time.Millisecond)
	_, err = ttlNodes.Get(ctx, NodeTTL{ID: 1})
	isErr(t, err, cacheme.ErrNotCached)
}

// #33: invalidation counts.
func TestNodeInvalidation(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	m := cacheme.Nodes[TestNodeDynamic, int64](p)
	var c atomic.Int64
	f, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, TestNodeDynamic, int64]{
		Node: func(id int) TestNodeDynamic { return TestNodeDynamic{ID: id} },
	}, func(context.Context, int) (int64, error) { return c.Add(1) - 1, nil })
	ok(t, err)
	steps := []struct {
		name string
		do   func() (int64, error)
		want int64
	}{
		{"first", func() (int64, error) { return f(ctx, 1) }, 0},
		{"cached", func() (int64, error) { return f(ctx, 1) }, 0},
		{"InvalidateAll", func() (int64, error) { n, err := m.InvalidateAll(ctx); return int64(n), err }, 1},
		{"recomputed", func() (int64, error) { return f(ctx, 1) }, 1},
		{"cached again", func() (int64, error) { return f(ctx, 1) }, 1},
		{"Invalidate id 1", func() (int64, error) { n, err := m.Invalidate(ctx, TestNodeDynamic{ID: 1}); return int64(n), err }, 1},
		{"recomputed again", func() (int64, error) { return f(ctx, 1) }, 2},
		// Upstream returned 1 here: it counted keys newly marked deleted,
		// cached or not. The plugin counts only entries the invalidation
		// hit (a valid value or a computation in progress), and id 2 was
		// never cached.
		{"Invalidate id 2", func() (int64, error) { n, err := m.Invalidate(ctx, TestNodeDynamic{ID: 2}); return int64(n), err }, 0},
		{"unchanged", func() (int64, error) { return f(ctx, 1) }, 2},
		{"Invalidate id 1 twice", func() (int64, error) {
			n, err := p.InvalidateNodes(ctx, TestNodeDynamic{ID: 1}, TestNodeDynamic{ID: 1})
			return int64(n), err
		}, 1},
		{"InvalidateAll after Invalidate", func() (int64, error) { n, err := m.InvalidateAll(ctx); return int64(n), err }, 0},
	}
	for _, s := range steps {
		got, err := s.do()
		ok(t, err)
		if got != s.want {
			t.Fatalf("%s: got %d; want %d", s.name, got, s.want)
		}
	}
}

// #34: a node's own hit and miss callbacks.
func TestNodeHitMiss(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ev := &nodeEvents{}
	f, _ := wrapNode(t, p, func(id int) NodeHitMiss { return NodeHitMiss{ID: id, events: ev} })
	equals(t, call(t, f, 1), 1)
	equals(t, ev.misses.Load(), 1)
	equals(t, ev.hits.Load(), 0)
	equals(t, ev.lastKey.Load(), any("test:1"))
	equals(t, call(t, f, 1), 1)
	equals(t, ev.misses.Load(), 1)
	equals(t, ev.hits.Load(), 1)
}

// #35: the spec's callbacks take precedence over the node's.
func TestNodeHitMissOverride(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ev := &nodeEvents{}
	var hits, misses atomic.Int64
	var c counter
	f, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, NodeHitMiss, int64]{
		Node: func(id int) NodeHitMiss { return NodeHitMiss{ID: id, events: ev} },
		Hit: func(_ context.Context, key string, id int, r int64) {
			if key != "test:1" || id != 1 || r != 1 {
				t.Errorf("Hit(%q, %d, %d); want (test:1, 1, 1)", key, id, r)
			}
			hits.Add(1)
		},
		Miss: func(_ context.Context, key string, id int) {
			if key != "test:1" || id != 1 {
				t.Errorf("Miss(%q, %d); want (test:1, 1)", key, id)
			}
			misses.Add(1)
		},
	}, c.fn)
	ok(t, err)
	equals(t, call(t, f, 1), 1)
	equals(t, call(t, f, 1), 1)
	equals(t, misses.Load(), 1)
	equals(t, hits.Load(), 1)
	equals(t, ev.misses.Load(), 0)
	equals(t, ev.hits.Load(), 0)
}

// A node's TTL (upstream Meta.timeout, which upstream never applied) is
// honoured; zero means the default, and a TTL under 1ms is an error.
func TestNodeTTL(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ctx := context.Background()
	const ttl = 150 * time.Millisecond
	short, _ := wrapNode(t, p, func(id int) NodeTTL { return NodeTTL{ID: id, ttl: ttl} })
	dflt, _ := wrapNode(t, p, func(id int) NodeTTL { return NodeTTL{ID: id + 100} })
	equals(t, call(t, short, 1), 1)
	// The value was stored before the call returned, so it expires by
	// stored + ttl (the server's clock is this machine's).
	stored := time.Now()
	equals(t, call(t, dflt, 1), 1)
	equals(t, call(t, short, 1), 1)
	equals(t, call(t, dflt, 1), 1)
	if d := time.Since(stored); d >= ttl {
		t.Fatalf("the cached reads took %v, not under the TTL %v: cannot tell expiry from caching", d, ttl)
	}
	time.Sleep(time.Until(stored.Add(ttl + 30*time.Millisecond)))
	equals(t, call(t, short, 1), 2)
	equals(t, call(t, dflt, 1), 1)

	for _, bad := range []time.Duration{-time.Second, time.Microsecond} {
		f, c := wrapNode(t, p, func(id int) NodeTTL { return NodeTTL{ID: id, ttl: bad} })
		_, err := f(ctx, 1)
		isErr(t, err, cacheme.ErrInvalidSpec)
		equals(t, c.n.Load(), 0)
	}
}

// Nil entries among a node's invalid nodes are ignored (upstream turned a
// None into the group "None").
func TestNodeNilInvalidNodes(t *testing.T) {
	rec := &errRecorder{}
	p, rdb := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	f, _ := wrapNode(t, p, func(int) NodeWithNilGroups { return NodeWithNilGroups{} })
	equals(t, call(t, f, 1), 1)
	equals(t, call(t, f, 1), 1)
	equals(t, len(rec.All()), 0)
	prefix := p.Settings().Prefix
	deepEquals(t, scanKeys(t, rdb, prefix), []string{prefix + "NodeWithNilGroups:tag", prefix + "nil-groups>base>", prefix + "user:9:invalid"})
	n, err := p.InvalidateInvalidNodes(context.Background(), InvalidTestUserNode{User: 9})
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, f, 1), 2)
}

func TestWrapNodeInvalidSpec(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	node := func(int) BasicNode { return BasicNode{} }
	tests := []struct {
		name string
		p    *cacheme.Plugin
		spec cacheme.NodeSpec[int, BasicNode, int]
		fn   func(context.Context, int) (int, error)
	}{
		{"no Node", p, cacheme.NodeSpec[int, BasicNode, int]{}, identity},
		{"nil function", p, cacheme.NodeSpec[int, BasicNode, int]{Node: node}, nil},
		{"nil plugin", nil, cacheme.NodeSpec[int, BasicNode, int]{Node: node}, identity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := cacheme.WrapNode(tt.p, tt.spec, tt.fn)
			isErr(t, err, cacheme.ErrInvalidSpec)
			if f != nil {
				t.Fatal("got a function; want nil")
			}
		})
	}
}

// Skip, SkipIf and Disabled work in node mode as in key mode.
func TestWrapNodeSkip(t *testing.T) {
	tests := []struct {
		name     string
		disabled bool
		spec     cacheme.NodeSpec[int, TestNodeConstant, int64]
		want     []int64 // results of f(0), f(1), f(0), f(1)
	}{
		{"cached", false, cacheme.NodeSpec[int, TestNodeConstant, int64]{}, []int64{1, 1, 1, 1}},
		{"Skip", false, cacheme.NodeSpec[int, TestNodeConstant, int64]{SkipIf: func(int) bool { return true }}, []int64{1, 2, 3, 4}},
		{"SkipIf odd", false, cacheme.NodeSpec[int, TestNodeConstant, int64]{SkipIf: func(n int) bool { return n%2 == 1 }}, []int64{1, 2, 1, 3}},
		{"Disabled", true, cacheme.NodeSpec[int, TestNodeConstant, int64]{}, []int64{1, 2, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{Disabled: tt.disabled})
			var c counter
			tt.spec.Node = func(int) TestNodeConstant { return TestNodeConstant{ID: 1} }
			f, err := cacheme.WrapNode(p, tt.spec, c.fn)
			ok(t, err)
			var got []int64
			for _, a := range []int{0, 1, 0, 1} {
				got = append(got, call(t, f, a))
			}
			deepEquals(t, got, tt.want)
		})
	}
}

// TestNodeSpecErrors checks misuses that must be errors, never panics: an
// interface as node type, and a manager of a nil plugin.
func TestNodeSpecErrors(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	_, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, nodes.Node, int]{
		Node: func(id int) nodes.Node { return TestNodeDynamic{ID: id} },
	}, func(context.Context, int) (int, error) { return 0, nil })
	isErr(t, err, cacheme.ErrInvalidSpec)

	m := cacheme.Nodes[TestNodeDynamic, int](nil)
	_, err = m.Get(context.Background(), TestNodeDynamic{ID: 1})
	isErr(t, err, cacheme.ErrInvalidSpec)
	_, err = m.Invalidate(context.Background(), TestNodeDynamic{ID: 1})
	isErr(t, err, cacheme.ErrInvalidSpec)
	_, err = m.InvalidateAll(context.Background())
	isErr(t, err, cacheme.ErrInvalidSpec)
}
