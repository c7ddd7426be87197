package cacheme

import (
	"context"
	"fmt"

	"github.com/gormcacheme/cacheme/nodes"
)

// InvalidateKeys invalidates cache entries by key, in one Redis round trip
// for any number of keys (upstream create_invalidation(key=...)). A key
// "hash>field" invalidates that field; a key "hash" without '>' invalidates
// every field of the hash. It returns how many entries held a valid value
// or were being computed.
func (p *Plugin) InvalidateKeys(ctx context.Context, keys ...string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	entries := make([]entry, 0, len(keys))
	for _, k := range keys {
		h, f, err := p.hashKey(k)
		if err != nil {
			return 0, err
		}
		entries = append(entries, entry{hash: h, field: f})
	}
	return p.invalidate(ctx, entries)
}

// InvalidateGroups invalidates every member of the named invalidation
// groups (upstream create_invalidation(invalid_key=...)): two Redis round
// trips for any number of groups and members. It returns how many entries
// it hit.
func (p *Plugin) InvalidateGroups(ctx context.Context, names ...string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	indexes := make([]string, 0, len(names))
	for _, n := range names {
		k, err := p.groupKey(n)
		if err != nil {
			return 0, err
		}
		indexes = append(indexes, k)
	}
	return p.invalidateIndexes(ctx, indexes)
}

// InvalidateTag invalidates every entry stored under a registered tag: a
// wrapped function's tag or a node type's name. An unknown tag is an error
// wrapping ErrUnknownTag.
func (p *Plugin) InvalidateTag(ctx context.Context, tag string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	c := p.reg.lookup(tag)
	if c == nil {
		return 0, fmt.Errorf("%w: %q", ErrUnknownTag, tag)
	}
	k, err := p.tagKey(tag)
	if err != nil {
		return 0, err
	}
	n, err := p.invalidateIndexes(ctx, []string{k})
	c.invalidations.Add(int64(n))
	return n, err
}

// InvalidateNodes invalidates the cached values of the given nodes.
func (p *Plugin) InvalidateNodes(ctx context.Context, ns ...nodes.Node) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	keys := make([]string, 0, len(ns))
	for _, n := range ns {
		if err := nodes.Check(n); err != nil {
			return 0, err
		}
		keys = append(keys, n.Key())
	}
	return p.InvalidateKeys(ctx, keys...)
}

// InvalidateInvalidNodes invalidates every member of the groups the given
// invalid nodes name (upstream InvalidNode.objects.invalid).
func (p *Plugin) InvalidateInvalidNodes(ctx context.Context, ns ...nodes.InvalidNode) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	names := make([]string, 0, len(ns))
	for _, n := range ns {
		if err := nodes.Check(n); err != nil {
			return 0, err
		}
		names = append(names, n.Key())
	}
	return p.InvalidateGroups(ctx, names...)
}

func (p *Plugin) invalidateIndexes(ctx context.Context, indexes []string) (int, error) {
	if len(indexes) == 0 {
		return 0, nil
	}
	entries, _, err := p.takeIndexes(ctx, indexes)
	if err != nil {
		p.reg.add(nil, redisErrors, 1)
		if len(entries) == 0 {
			return 0, err
		}
	}
	n, ierr := p.invalidate(ctx, entries)
	if err == nil {
		err = ierr
	}
	return n, err
}

func (p *Plugin) invalidate(ctx context.Context, entries []entry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	n, _, err := p.invalidateEntries(ctx, entries)
	if err != nil {
		p.reg.add(nil, redisErrors, 1)
	}
	p.reg.add(nil, invalidations, int64(n))
	return n, err
}
