package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Dependency capture: while a memoized function computes, every GORM read
// it makes with the call's context (db.WithContext(ctx)) records what it
// depends on (conj.go): the conjunctions of its equality conditions or its
// whole tables, the cache keys of the rows it returned, and the
// many-to-many keys of the join rows it read by. The result joins those
// groups as well as the ones its spec names. A memoized call made inside
// another computation passes its own groups up, whether it hit or
// computed, so that the outer result depends on what the inner one does.
//
// Invariant: a result computed from a read made inside a transaction, or
// from a read whose tables could not be named or whose schemes could not
// be registered, is returned but never stored (the transaction's rows may
// be uncommitted, or its snapshot older than an invalidation).

// recorder collects what one computation read.
type recorder struct {
	ttl time.Duration // the computation's entry TTL (schemes must outlive it)

	mu     sync.Mutex
	groups map[string]bool
	// why the result must not be stored, or "".
	unsafe string
}

type recorderKey struct{}

// withRecorder returns ctx carrying a new recorder for a computation whose
// result lives for ttl.
func withRecorder(ctx context.Context, ttl time.Duration) (context.Context, *recorder) {
	r := &recorder{ttl: ttl}
	return context.WithValue(ctx, recorderKey{}, r), r
}

// withoutRecorder returns ctx without a recorder: reads made with it are
// not captured by an enclosing computation.
func withoutRecorder(ctx context.Context) context.Context {
	if recorderFrom(ctx) == nil {
		return ctx
	}
	return context.WithValue(ctx, recorderKey{}, (*recorder)(nil))
}

func recorderFrom(ctx context.Context) *recorder {
	if ctx == nil {
		return nil
	}
	r, _ := ctx.Value(recorderKey{}).(*recorder)
	return r
}

// add records groups.
func (r *recorder) add(groups ...string) {
	if r == nil || len(groups) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.groups == nil {
		r.groups = map[string]bool{}
	}
	for _, g := range groups {
		if g != "" {
			r.groups[g] = true
		}
	}
}

// spoil records why the result must not be stored (the first reason
// stays).
func (r *recorder) spoil(why string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unsafe == "" {
		r.unsafe = why
	}
}

// result returns the recorded groups and why the result must not be
// stored ("" if it may).
func (r *recorder) result() ([]string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.groups))
	for g := range r.groups {
		out = append(out, g)
	}
	return out, r.unsafe
}

// captureRead records, before a read runs, what it depends on, and
// registers its schemes. It returns false when the read's result must
// not be stored (then the recorder says why).
func (p *Plugin) captureRead(ctx context.Context, r *recorder, db *gorm.DB, deps readDeps, inTx bool) {
	switch {
	case inTx:
		r.spoil("it read inside a transaction")
		return
	case deps.unknown == "raw SQL (db.Raw)":
		return // not captured: the spec names its groups
	case deps.unknown != "":
		r.spoil("a read's tables cannot be named: " + deps.unknown)
		p.report(ctx, fmt.Errorf("%w: a read of a memoized function depends on %s, which the plugin cannot name; its result is not cached (name its groups and set Spec.NoCapture)",
			ErrInvalidSpec, deps.unknown))
		return
	}
	r.add(deps.groups()...)
	r.add(p.associationKeys(ctx, deps)...)
	if err := p.registerSchemes(ctx, deps.schemes(), r.ttl); err != nil {
		r.spoil("its query schemes could not be registered")
		p.report(ctx, err)
	}
}

// captureRows records the cache keys (and model nodes) of the rows a read
// returned into dest.
func (p *Plugin) captureRows(ctx context.Context, r *recorder, sch *schema.Schema, dest any) {
	if sch == nil || dest == nil {
		return
	}
	v := reflect.Indirect(reflect.ValueOf(dest))
	t := v.Type()
	if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	if t != sch.ModelType {
		return
	}
	defer func() { _ = recover() }() // a panicking CacheKey: the conjunctions stand
	r.add(p.rowKeyGroups(ctx, sch, v)...)
}

// associationKeys returns the many-to-many keys of the join rows a read
// selects by one side (Association("Books").Find selects user_books rows
// by user_id): the keys that side's key function gives for those ids.
func (p *Plugin) associationKeys(ctx context.Context, deps readDeps) []string {
	db := p.db()
	if db == nil {
		return nil
	}
	var out []string
	for _, c := range deps.conjs {
		for _, mb := range p.bindingsOfJoinTable(ctx, c.table) {
			for _, side := range mb.rel.Sides() {
				for _, t := range c.terms {
					if t.col != side.Column || t.val == nullValue || side.Keys == nil {
						continue
					}
					if id, ok := sideID(ctx, side.Schema, t.val); ok {
						out = append(out, safeKeys(side.Keys, id)...)
					}
				}
			}
		}
	}
	return out
}

// sideID converts the canonical value of a join-table column back to the
// primary key type of its side's model, as key functions get ids.
func sideID(ctx context.Context, sch *schema.Schema, val string) (id any, ok bool) {
	if sch == nil || sch.PrioritizedPrimaryField == nil {
		return nil, false
	}
	defer func() {
		if recover() != nil {
			id, ok = nil, false
		}
	}()
	f := sch.PrioritizedPrimaryField
	row := reflect.New(sch.ModelType).Elem()
	if err := f.Set(ctx, row, val); err != nil {
		return nil, false
	}
	v, _ := f.ValueOf(ctx, row)
	return v, true
}

// safeKeys calls a key function, turning a panic into no keys (the
// conjunction of the join rows still stands).
func safeKeys(fn func([]any) []string, id any) (keys []string) {
	defer func() {
		if recover() != nil {
			keys = nil
		}
	}()
	return fn([]any{id})
}
