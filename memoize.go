package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"text/template"
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
// (upstream's cacheme decorator). Exactly one of Key and KeyTemplate is
// required.
type Spec[A, R any] struct {
	// Key builds the cache key from the arguments. The configured prefix is
	// added. "hash>field" stores the result in field "field" of the Redis
	// hash "hash": invalidating key "hash" invalidates all of its fields.
	Key func(A) string

	// KeyTemplate is a text/template executed with the arguments, as an
	// alternative to Key: "book:{{.ID}}".
	KeyTemplate string

	// InvalidKeys returns the invalidation groups the result joins after it
	// is computed: invalidating group "user:1" (the Redis set
	// "<prefix>user:1:invalid") invalidates it. It sees the result, so the
	// groups may depend on it. Empty names are ignored.
	InvalidKeys func(args A, result R) []string

	// Tag names the set of every entry of this function, so that they can be
	// invalidated together. If empty, defaults to the function's name
	// (package.Function).
	Tag string

	// Hit, if set, is called when the first read returns a cached value: a
	// valid one, or a stale one served while another caller recomputes it
	// (not after waiting for another caller).
	Hit func(ctx context.Context, key string, args A, result R)

	// Miss, if set, is called just before the function runs to fill the
	// cache.
	Miss func(ctx context.Context, key string, args A)

	// Skip, if true, makes every call run the function without the cache.
	Skip bool

	// SkipIf, if set, is asked on every call: true runs the function without
	// reading or writing the cache; false caches as usual.
	SkipIf func(A) bool

	// TTL is how long a result stays valid. If zero, defaults to
	// Settings.TTL.
	TTL time.Duration

	// Stale overrides Settings.NoStale for this function.
	Stale StaleMode
}

// Wrap returns fn memoized in Redis as spec says. The returned function has
// fn's shape and is safe for concurrent use. Wrap fails if spec has no key,
// two keys, a bad template or a negative TTL.
func Wrap[A, R any](p *Plugin, spec Spec[A, R], fn func(context.Context, A) (R, error)) (func(context.Context, A) (R, error), error) {
	if p == nil || fn == nil {
		return nil, fmt.Errorf("%w: nil plugin or function", ErrInvalidSpec)
	}
	keyOf := spec.Key
	switch {
	case keyOf != nil && spec.KeyTemplate != "":
		return nil, fmt.Errorf("%w: both Key and KeyTemplate are set", ErrInvalidSpec)
	case keyOf == nil && spec.KeyTemplate == "":
		return nil, fmt.Errorf("%w: no Key or KeyTemplate", ErrInvalidSpec)
	case keyOf == nil:
		tmpl, err := template.New("key").Option("missingkey=error").Parse(spec.KeyTemplate)
		if err != nil {
			return nil, fmt.Errorf("%w: KeyTemplate: %w", ErrInvalidSpec, err)
		}
		return wrapKey(p, spec, fn, func(a A) (string, error) {
			var b strings.Builder
			if err := tmpl.Execute(&b, a); err != nil {
				return "", fmt.Errorf("%w: KeyTemplate: %w", ErrInvalidKey, err)
			}
			return b.String(), nil
		})
	}
	return wrapKey(p, spec, fn, func(a A) (string, error) { return keyOf(a), nil })
}

func wrapKey[A, R any](p *Plugin, spec Spec[A, R], fn func(context.Context, A) (R, error), keyOf func(A) (string, error)) (func(context.Context, A) (R, error), error) {
	if spec.TTL < 0 {
		return nil, fmt.Errorf("%w: negative TTL %v", ErrInvalidSpec, spec.TTL)
	}
	tag := spec.Tag
	if tag == "" {
		tag = funcName(fn)
	}
	if _, err := p.tagKey(tag); err != nil {
		return nil, err
	}
	tagC := p.reg.register(tag)
	ttl := spec.TTL
	if ttl == 0 {
		ttl = p.set.TTL
	}
	return func(ctx context.Context, args A) (R, error) {
		if p.set.Disabled || spec.Skip || (spec.SkipIf != nil && spec.SkipIf(args)) {
			return fn(ctx, args)
		}
		key, err := keyOf(args)
		if err != nil {
			var zero R
			return zero, err
		}
		e, err := p.parseEntry(key)
		if err != nil {
			var zero R
			return zero, err
		}
		l := load[R]{
			e: e, tag: tag, tagC: tagC, stale: spec.Stale.resolve(p), ttl: ttl,
			fn: func(ctx context.Context) (R, error) { return fn(ctx, args) },
		}
		if spec.InvalidKeys != nil {
			l.groups = func(r R) ([]string, error) { return spec.InvalidKeys(args, r), nil }
		}
		if spec.Hit != nil {
			l.hit = func(ctx context.Context, r R) { spec.Hit(ctx, key, args, r) }
		}
		if spec.Miss != nil {
			l.miss = func(ctx context.Context) { spec.Miss(ctx, key, args) }
		}
		return run(ctx, p, l)
	}, nil
}

// funcName returns "package.Function" for fn.
func funcName(fn any) string {
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		return "func"
	}
	name := f.Name()
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return name
}
