package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// StaleMode chooses whether invalidated values may be served while they are
// recomputed.
type StaleMode int8

const (
	// StaleDefault follows Settings.NoStale (stale serving is on unless it
	// is set).
	StaleDefault StaleMode = iota
	// StaleOn serves the previous value to concurrent readers while the
	// first reader after an invalidation recomputes it.
	StaleOn
	// StaleOff makes concurrent readers wait for the recompute.
	StaleOff
)

func (m StaleMode) resolve(p *Plugin) bool {
	switch m {
	case StaleOn:
		return true
	case StaleOff:
		return false
	}
	return !p.set.NoStale
}

// Spec says how Wrap memoizes a function of arguments A with result R
// (upstream's cacheme decorator). Key is required.
type Spec[A, R any] struct {
	// Key builds the cache key from the arguments. It is required. The
	// configured prefix is added. "hash>field" stores the result in field
	// "field" of the Redis hash "hash": invalidating key "hash" invalidates
	// all of its fields.
	Key func(A) string

	// Groups returns the invalidation groups the result joins after it is
	// computed (upstream invalid_keys): invalidating group "User:1" (the
	// Redis set "<prefix>User:1:invalid", as a GORM write of a model whose
	// CacheKey is "User:1" does) invalidates it. It sees the result, so the
	// groups may depend on it. Empty names are ignored.
	Groups func(args A, result R) []string

	// Tag names the set of every entry of this function, so that they can be
	// invalidated together; it names a Redis key and an admin row, so it is
	// stable. If empty, defaults to the function's name ("package.Function",
	// or "package.Type.Method" for a method value); a function literal,
	// whose compiler name changes when code moves, defaults to the name of
	// the function it is written in, so literals of one function share a
	// tag unless they set their own.
	Tag string

	// Hit, if set, is called when the first read returns a cached value: a
	// valid one, or a stale one served while another caller recomputes it
	// (not after waiting for another caller).
	Hit func(ctx context.Context, key string, args A, result R)

	// Miss, if set, is called just before the function runs to fill the
	// cache.
	Miss func(ctx context.Context, key string, args A)

	// SkipIf, if set, is asked on every call: true runs the function without
	// reading or writing the cache; false caches as usual. If nil, every
	// call is cached.
	SkipIf func(A) bool

	// TTL is how long a result stays valid. If zero, defaults to
	// Settings.TTL.
	TTL time.Duration

	// Stale overrides Settings.NoStale for this function.
	Stale StaleMode

	// NoCapture turns dependency capture off. By default, every GORM read
	// the function makes with the call's context (db.WithContext(ctx))
	// while it computes adds what it depends on to the result's groups:
	// the conjunctions of its equality conditions (or its whole tables),
	// the cache keys of the rows it returned, the many-to-many keys of the
	// join rows it read by, and the groups of the memoized calls it makes.
	// A result computed from a read inside a transaction, or from a read
	// whose tables the plugin cannot name, is returned but not stored.
	// Reads through a *gorm.DB without the call's context, and db.Raw
	// reads, are not captured: name their groups in Groups.
	NoCapture bool
}

// Wrap returns fn memoized in Redis as spec says. The returned function has
// fn's shape and is safe for concurrent use. Wrap fails with the plugin's
// configuration error (see Plugin.Err), or with an error wrapping
// ErrInvalidSpec if spec has no Key or a negative TTL.
func Wrap[A, R any](p *Plugin, spec Spec[A, R], fn func(context.Context, A) (R, error)) (func(context.Context, A) (R, error), error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("%w: nil function", ErrInvalidSpec)
	}
	if spec.Key == nil {
		return nil, fmt.Errorf("%w: no Key", ErrInvalidSpec)
	}
	if spec.TTL < 0 {
		return nil, fmt.Errorf("%w: negative TTL %v", ErrInvalidSpec, spec.TTL)
	}
	tag := spec.Tag
	if tag == "" {
		var err error
		if tag, err = funcTag(fn); err != nil {
			return nil, err
		}
	}
	if _, err := p.tagKey(tag); err != nil {
		return nil, err
	}
	tagC := p.reg.register(tag)
	ttl := spec.TTL
	if ttl == 0 {
		ttl = p.set.TTL
	}
	var groups func(A, R) ([]string, error) // made once, not per call
	if spec.Groups != nil {
		groups = func(a A, r R) ([]string, error) { return spec.Groups(a, r), nil }
	}
	return func(ctx context.Context, args A) (R, error) {
		var zero R
		if err := p.Err(); err != nil {
			return zero, err
		}
		if p.set.Disabled || (spec.SkipIf != nil && spec.SkipIf(args)) {
			return fn(ctx, args)
		}
		key := spec.Key(args)
		e, err := p.parseEntry(key)
		if err != nil {
			return zero, err
		}
		l := load[A, R]{
			e: e, key: key, args: args, tag: tag, tagC: tagC, stale: spec.Stale.resolve(p), ttl: ttl, capture: !spec.NoCapture,
			fn: fn, groups: groups, hit: spec.Hit, miss: spec.Miss,
		}
		return run(ctx, p, l)
	}, nil
}

// funcTag returns the default tag of fn: "package.Function", or
// "package.Type.Method" for a method value. A function literal's compiler
// name ("package.Outer.func3") changes whenever a literal is added before
// it, so a literal is tagged by the function it is written in
// ("package.Outer"): every literal of one function shares the tag.
func funcTag(fn any) (string, error) {
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		return "", fmt.Errorf("%w: the function has no name; set Spec.Tag", ErrInvalidSpec)
	}
	name := f.Name()
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSuffix(name, "-fm") // a method value
	name = literal.ReplaceAllString(name, "")
	name = strings.NewReplacer("(*", "", "(", "", ")", "").Replace(name)
	return name, nil
}

// literal matches the compiler's suffixes for function literals:
// ".func1", ".func2.3", ".gowrap1", generic instances included.
var literal = regexp.MustCompile(`(\.func\d+|\.gowrap\d+)(\.\d+)*(\[[^\]]*\])?`)
