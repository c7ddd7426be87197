package cacheme

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/nodes"
)

// Every invalidation, public or after a commit, takes one path:
// invalidateIndexes (groups and tags) and invalidateEntries (keys) in
// invalidation.run, with retries as an option.
//
// Invariant: a member leaves its group or tag set only once its entry is
// marked invalid. A group is first marked (the set keeps its members and
// gets the marker that refuses computations started before it), then its
// members' entries are invalidated, and only then are those members dropped
// from the set, each only if its score is still the one read (a member that
// joined again since, for a new computation, stays). Each step is
// idempotent, so a retry after a lost reply redoes the work instead of
// finding an empty set, and a failure is reported as such, never as "0
// entries hit".

// InvalidateKeys invalidates cache entries by key (upstream
// create_invalidation(key=...)). A key "hash>field" invalidates that field:
// one Redis round trip for any number of such keys. A key "hash" without
// '>' invalidates every field of the hash: the entry "hash" itself, and
// the members of the hash's index, which every other field joined when it
// was stored (three round trips, as for a group). It returns how many
// entries held a valid value or were being computed; a field whose first
// computation is still running is not yet in its hash's index, and is not
// counted (its result is refused all the same).
func (p *Plugin) InvalidateKeys(ctx context.Context, keys ...string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	entries := make([]entry, 0, len(keys))
	var indexes []string
	seen := map[string]bool{}
	for _, k := range keys {
		h, f, err := p.hashKey(k)
		if err != nil {
			return 0, err
		}
		if f == "" {
			f = defaultField
			if idx := hashIndex(h); !seen[idx] {
				seen[idx] = true
				indexes = append(indexes, idx)
			}
		}
		entries = append(entries, newEntry(h, f))
	}
	return p.invalidation(indexes, dedupeEntries(entries)).run(ctx, p, 0)
}

// InvalidateGroups invalidates every member of the named invalidation
// groups (upstream create_invalidation(invalid_key=...)): three Redis round
// trips for any number of groups and members (one when they are empty),
// with one script call per batch of keys (per server, or per Cluster slot;
// at most 1000 keys each) rather than one per member. It returns how many
// entries it hit.
func (p *Plugin) InvalidateGroups(ctx context.Context, names ...string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	indexes, err := p.groupKeys(names)
	if err != nil {
		return 0, err
	}
	return p.invalidation(indexes, nil).run(ctx, p, 0)
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
	n, err := p.invalidation([]string{k}, nil).run(ctx, p, 0)
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
// invalid nodes name (upstream InvalidNode.objects.invalid). It is
// InvalidateGroups for nodes: each node is checked (nodes.Check) first, so
// a node missing a required field is an error, not a group that names
// nothing.
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

// InvalidateModels invalidates what a write of the given rows would: the
// groups of their cache keys, their registered model nodes, their tables'
// groups, the cached reads whose conjunctions they satisfy, and, for rows
// taking part in a many-to-many relation, the keys of both sides of their
// join rows. Use it after a write GORM cannot see (db.Exec with raw SQL),
// once with the rows as they were and once as they are; it reads the join
// rows through the database the plugin was initialized with. Rows are
// model values or non-nil pointers to them.
func (p *Plugin) InvalidateModels(ctx context.Context, rows ...any) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	db := p.db()
	if db == nil {
		return 0, fmt.Errorf("%w: InvalidateModels needs db.Use(plugin) first", ErrInvalidSpec)
	}
	w := &pending{}
	for i, row := range rows {
		if v := reflect.ValueOf(row); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
			return 0, fmt.Errorf("%w: row %d is a nil %T", ErrInvalidSpec, i, row)
		}
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(row); err != nil {
			return 0, fmt.Errorf("%w: %T is not a model: %w", ErrInvalidSpec, row, err)
		}
		// An addressable copy, so that pointer-receiver CacheKey methods count.
		rv := reflect.New(stmt.Schema.ModelType)
		if v := reflect.Indirect(reflect.ValueOf(row)); v.Type() == stmt.Schema.ModelType {
			rv.Elem().Set(v)
		} else {
			rv = reflect.ValueOf(row)
		}
		if err := p.modelGroups(ctx, db, stmt.Schema, rv, w); err != nil {
			return 0, err
		}
	}
	groups, err := p.groupKeys(p.resolve(ctx, w))
	if err != nil {
		return 0, err
	}
	return p.invalidation(groups, nil).run(ctx, p, 0)
}

// modelGroups adds the groups and images of rows (rv) to w for
// InvalidateModels; a panic in their CacheKey or key functions is an
// error.
func (p *Plugin) modelGroups(ctx context.Context, db *gorm.DB, sch *schema.Schema, rv reflect.Value, w *pending) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: %s: %v", ErrPanic, sch.Name, v)
		}
	}()
	w.addGroups(p.rowGroups(ctx, sch, sch.Table, rv)...)
	w.addImages(sch.Table, rowImages(ctx, sch, rv)...)
	q := db.WithContext(ctx)
	return p.partnerGroups(q, sch, primaryKeys(q, sch, rv), w)
}

// groupKeys returns the Redis keys of the named groups, skipping
// duplicates.
func (p *Plugin) groupKeys(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		k, err := p.groupKey(n)
		if err != nil {
			return nil, err
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

// invalidation is one invalidation of group or tag sets and of entries.
type invalidation struct {
	indexes []string // group and tag sets still to do
	entries []entry  // entries named directly, still to do
}

func (p *Plugin) invalidation(indexes []string, entries []entry) *invalidation {
	return &invalidation{indexes: indexes, entries: entries}
}

// errLost wraps the error of an invalidation that could not be delivered:
// the entries it names may be served until they expire.
var errLost = errors.New("cacheme: invalidation not delivered; its entries may stay stale until they expire")

// run invalidates, trying the parts that failed again up to retries times
// (pausing flushBackoff, doubled each time). It returns how many entries
// it hit and, if any part could not be delivered, an error wrapping
// ErrRedis that says how much is left.
func (inv *invalidation) run(ctx context.Context, p *Plugin, retries int) (int, error) {
	hit := 0
	wait := flushBackoff
	for attempt := 0; ; attempt++ {
		n, err := inv.once(ctx, p)
		hit += n
		p.reg.add(nil, invalidations, int64(n))
		if err == nil {
			return hit, nil
		}
		p.reg.add(nil, redisErrors, 1)
		if attempt >= retries || ctx.Err() != nil {
			return hit, fmt.Errorf("%w: %d groups or tags and %d entries left after %d attempts: %w", errLost, len(inv.indexes), len(inv.entries), attempt+1, err)
		}
		p.report(ctx, fmt.Errorf("cacheme: invalidation failed (retrying): %w", err))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		wait *= 2
	}
}

// once runs the three steps once (see the invariant above) and keeps in inv
// only what failed. The sets are marked in the same round trip as the
// entries named directly are invalidated, so that invalidating keys costs
// one round trip, and a key's hash index (empty unless the hash has
// fields) no more.
func (inv *invalidation) once(ctx context.Context, p *Plugin) (int, error) {
	var errs []error
	mcalls, mbatches := p.markCalls(inv.indexes)
	ecalls, ebatches := p.entryCalls(inv.entries)
	cmds, err := p.runWrites(ctx, append(mcalls, ecalls...))
	p.evictLocal(inv.entries)
	errs = append(errs, err)
	marked, failedIdx := markResults(inv.indexes, mbatches, cmds[:len(mcalls)])
	hit, failed := entryResults(inv.entries, ebatches, cmds[len(mcalls):])
	direct := make(map[entry]bool, len(inv.entries))
	for _, e := range inv.entries {
		direct[e] = true
	}
	var members []entry
	for _, m := range marked {
		for _, e := range m.entries {
			if !direct[e] {
				members = append(members, e)
			}
		}
	}
	n, failedMembers, err := p.invalidateEntries(ctx, dedupeEntries(members))
	hit += n
	errs = append(errs, err)
	bad := make(map[entry]bool, len(failed)+len(failedMembers))
	for _, e := range append(failed, failedMembers...) {
		bad[e] = true
	}
	// A set whose members failed is done again whole, so only the entries
	// named directly are kept.
	inv.entries = failed
	// Drop the members of the sets whose entries are all marked.
	var done []markedIndex
	for _, m := range marked {
		ok := true
		for _, e := range m.entries {
			if bad[e] {
				ok = false
				break
			}
		}
		if ok {
			done = append(done, m)
		} else {
			failedIdx = append(failedIdx, m.key)
		}
	}
	failedDrop, err := p.dropMembers(ctx, done)
	errs = append(errs, err)
	inv.indexes = append(failedIdx, failedDrop...)
	return hit, errors.Join(errs...)
}

// dedupeEntries drops repeated entries, keeping the first.
func dedupeEntries(es []entry) []entry {
	seen := make(map[entry]bool, len(es))
	out := es[:0:0]
	for _, e := range es {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
