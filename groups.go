package cacheme

import (
	"context"
	"fmt"
	"reflect"

	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/internal/relation"
	"github.com/gormcacheme/cacheme/nodes"
)

// Keyer is implemented by models with one cache key (upstream cache_key):
// when GORM writes the row, every member of the group
// "<prefix><CacheKey()>:invalid" is invalidated.
type Keyer interface {
	CacheKey() string
}

// MultiKeyer is implemented by models with several cache keys.
type MultiKeyer interface {
	CacheKey() []string
}

// TableGroup returns the name of the model-wide group of a table: every
// write GORM makes to the table invalidates it, whatever rows it touches.
// A memoized function that depends on a whole table (a list, a count) lists
// it in its groups.
func TableGroup(table string) string { return "table:" + table }

// rowGroups returns the groups to invalidate for rows of sch held in v (a
// struct or a slice of them) written to table: their cache keys, their
// model nodes and the table's group.
func (p *Plugin) rowGroups(ctx context.Context, sch *schema.Schema, table string, v reflect.Value) []string {
	return append([]string{TableGroup(table)}, p.rowKeyGroups(ctx, sch, v)...)
}

// rowKeyGroups returns the groups of rows of sch held in v: their cache
// keys and their model nodes.
func (p *Plugin) rowKeyGroups(ctx context.Context, sch *schema.Schema, v reflect.Value) []string {
	var groups []string
	p.bind.mu.RLock()
	mns := p.bind.byModel[sch.Table]
	p.bind.mu.RUnlock()
	eachRow(v, func(row reflect.Value) {
		groups = append(groups, cacheKeys(row)...)
		for _, mn := range mns {
			n := reflect.New(mn.typ).Elem()
			mn.fill(ctx, sch, row, n)
			if in, ok := n.Interface().(nodes.InvalidNode); ok {
				groups = append(groups, in.Key())
			}
		}
	})
	return groups
}

// cacheKeys returns the keys of a row that implements Keyer or MultiKeyer.
func cacheKeys(row reflect.Value) []string {
	vals := []reflect.Value{row}
	if row.CanAddr() {
		vals = append(vals, row.Addr())
	}
	for _, v := range vals {
		if !v.CanInterface() {
			continue
		}
		switch k := v.Interface().(type) {
		case Keyer:
			return []string{k.CacheKey()}
		case MultiKeyer:
			return k.CacheKey()
		}
	}
	return nil
}

// joinGroups returns the groups of join rows (in v) of the relations whose
// join table sch is.
func (p *Plugin) joinGroups(ctx context.Context, sch *schema.Schema, v reflect.Value) []string {
	var groups []string
	for _, mb := range p.joinBindings(ctx, sch) {
		groups = append(groups, p.pairGroups(ctx, mb, mb.rel.PairsOf(sch, v))...)
	}
	return groups
}

// pairGroups returns the keys of both sides of join rows, and their m2m
// nodes. A key function that returns no key for ids it was given is
// reported: what it should have named is not invalidated.
func (p *Plugin) pairGroups(ctx context.Context, mb *m2mBinding, pairs []relation.Pair) []string {
	groups, err := mb.rel.KeysOf(pairs)
	if err != nil {
		p.report(ctx, fmt.Errorf("%w: %w", ErrInvalidKey, err))
	}
	for _, mn := range mb.nodes {
		for _, pr := range pairs {
			groups = append(groups, mn.key(pr.Owner, nodes.All), mn.key(nodes.All, pr.Related))
		}
	}
	return groups
}
