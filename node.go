package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/gormcacheme/cacheme/nodes"
)

// NodeSpec says how WrapNode memoizes a function by node.
type NodeSpec[A any, N nodes.Node, R any] struct {
	// Node builds the node of a call from its arguments. It is required.
	Node func(A) N

	// Hit, if set, is called on a hit, in place of the node's own Hit.
	Hit func(ctx context.Context, key string, args A, result R)

	// Miss, if set, is called on a miss, in place of the node's own Miss.
	Miss func(ctx context.Context, key string, args A)

	// SkipIf, if set, is asked on every call: true runs the function without
	// reading or writing the cache; false caches as usual. If nil, every
	// call is cached.
	SkipIf func(A) bool

	// Stale overrides Settings.NoStale for this function; a node that
	// implements nodes.Staler overrides both.
	Stale StaleMode

	// NoCapture turns dependency capture off: the result joins only the
	// node's InvalidNodes, not the groups of the GORM reads the function
	// makes (see Spec.NoCapture).
	NoCapture bool
}

// WrapNode returns fn memoized by node: the node built from the arguments
// gives the key (Node.Key), the groups (Node.InvalidNodes), the tag (the node
// type's name), and optionally its own stale mode, TTL and callbacks. It
// fails with the plugin's configuration error (see Plugin.Err), or with an
// error wrapping ErrInvalidSpec for a nil function or Node.
func WrapNode[A any, N nodes.Node, R any](p *Plugin, spec NodeSpec[A, N, R], fn func(context.Context, A) (R, error)) (func(context.Context, A) (R, error), error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	if fn == nil || spec.Node == nil {
		return nil, fmt.Errorf("%w: nil function or Node", ErrInvalidSpec)
	}
	if reflect.TypeFor[N]().Kind() == reflect.Interface {
		return nil, fmt.Errorf("%w: the node type must be concrete, not the interface %v", ErrInvalidSpec, reflect.TypeFor[N]())
	}
	tag := nodeTag[N]()
	tagC := p.reg.registerKind(tag, KindNode)
	return func(ctx context.Context, args A) (R, error) {
		var zero R
		if err := p.Err(); err != nil {
			return zero, err
		}
		if p.set.Disabled || (spec.SkipIf != nil && spec.SkipIf(args)) {
			return fn(ctx, args)
		}
		n := spec.Node(args)
		if err := nodes.Check(n); err != nil {
			return zero, err
		}
		key := n.Key()
		e, err := p.parseEntry(key)
		if err != nil {
			return zero, err
		}
		ttl, err := nodeTTL(p, n)
		if err != nil {
			return zero, err
		}
		l := load[A, R]{
			e: e, key: key, args: args, tag: tag, tagC: tagC, stale: nodeStale(p, n, spec.Stale), ttl: ttl,
			fn:      fn,
			groups:  func(A, R) ([]string, error) { return invalidNames(n.InvalidNodes()) },
			capture: !spec.NoCapture,
		}
		if h, ok := any(n).(nodes.HitHandler); ok {
			l.hit = func(ctx context.Context, key string, _ A, _ R) { h.Hit(ctx, key) }
		}
		if spec.Hit != nil {
			l.hit = spec.Hit
		}
		if h, ok := any(n).(nodes.MissHandler); ok {
			l.miss = func(ctx context.Context, key string, _ A) { h.Miss(ctx, key) }
		}
		if spec.Miss != nil {
			l.miss = spec.Miss
		}
		return run(ctx, p, l)
	}, nil
}

// NodeManager is the manager of one node type N whose results are of type
// R (upstream Node.objects). Get a NodeManager from Nodes.
type NodeManager[N nodes.Node, R any] struct {
	p   *Plugin
	tag string
}

// Nodes returns the manager of node type N, and registers N's tag.
// N must be a concrete node type (a struct or a pointer to one), not an
// interface.
func Nodes[N nodes.Node, R any](p *Plugin) NodeManager[N, R] {
	tag := nodeTag[N]()
	if p.Err() == nil {
		p.reg.registerKind(tag, KindNode)
	}
	return NodeManager[N, R]{p: p, tag: tag}
}

// Get returns n's cached value without computing it. It returns an error
// wrapping ErrNotCached when there is no valid value: never computed,
// expired or invalidated.
func (m NodeManager[N, R]) Get(ctx context.Context, n N) (R, error) {
	var zero R
	if err := m.p.Err(); err != nil {
		return zero, err
	}
	if err := nodes.Check(n); err != nil {
		return zero, err
	}
	e, err := m.p.parseEntry(n.Key())
	if err != nil {
		return zero, err
	}
	v, ok, err := m.p.peek(ctx, e)
	if err != nil {
		return zero, err
	}
	if !ok {
		return zero, fmt.Errorf("%w: node %s", ErrNotCached, e)
	}
	h, _ := parseHeader(v)
	return decode[R](m.p.set.Codec, bytesOf(h.blob))
}

// Invalidate invalidates the cached value of n.
func (m NodeManager[N, R]) Invalidate(ctx context.Context, n N) (int, error) {
	if err := m.p.Err(); err != nil {
		return 0, err
	}
	return m.p.InvalidateNodes(ctx, n)
}

// InvalidateAll invalidates every cached value of node type N (its tag).
func (m NodeManager[N, R]) InvalidateAll(ctx context.Context) (int, error) {
	if err := m.p.Err(); err != nil {
		return 0, err
	}
	return m.p.InvalidateTag(ctx, m.tag)
}

// Tag returns the tag of node type N: its type name.
func (m NodeManager[N, R]) Tag() string { return m.tag }

func nodeTag[N nodes.Node]() string {
	return nodes.Name(reflect.Zero(reflect.TypeFor[N]()).Interface())
}

func nodeStale(p *Plugin, n nodes.Node, m StaleMode) bool {
	if s, ok := n.(nodes.Staler); ok {
		return s.Stale()
	}
	return m.resolve(p)
}

func nodeTTL(p *Plugin, n nodes.Node) (time.Duration, error) {
	t, ok := n.(nodes.TTLer)
	if !ok || t.TTL() == 0 {
		return p.set.TTL, nil
	}
	if t.TTL() < time.Millisecond {
		return 0, fmt.Errorf("%w: node %s has TTL %v", ErrInvalidSpec, nodes.Name(n), t.TTL())
	}
	return t.TTL(), nil
}

func invalidNames(ns []nodes.InvalidNode) ([]string, error) {
	out := make([]string, 0, len(ns))
	for _, in := range ns {
		if in == nil || reflect.ValueOf(in).Kind() == reflect.Pointer && reflect.ValueOf(in).IsNil() {
			continue
		}
		if err := nodes.Check(in); err != nil {
			return nil, err
		}
		out = append(out, in.Key())
	}
	return out, nil
}
