package cacheme_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gormcacheme/cacheme"
)

// "k" and "k>base" are not two names of one entry: a memoized key may not
// use the field "base", reserved for keys without '>'. InvalidateKeys
// takes "k>base" as the name of k's entry alone, as hooks show it.
func TestKeyExplicitBase(t *testing.T) {
	ctx := context.Background()
	p, _ := newPlugin(t, cacheme.Settings{})
	var plain, other counter
	fp := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "k" }}, plain.fn)
	fo := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "k>other" }}, other.fn)
	fb := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "k>base" }}, plain.fn)
	_, err := fb(ctx, 0)
	isErr(t, err, cacheme.ErrInvalidKey)
	equals(t, plain.n.Load(), 0)
	for _, key := range []string{"a>base>x", "a>basement"} { // other fields are fine
		f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return key }}, identity)
		equals(t, call(t, f, 3), 3)
	}

	equals(t, call(t, fp, 0), 1)
	equals(t, call(t, fo, 0), 1)
	n, err := p.InvalidateKeys(ctx, "k>base")
	ok(t, err)
	equals(t, n, 1)
	equals(t, call(t, fp, 0), 2) // k recomputed
	equals(t, call(t, fo, 0), 1) // k>other untouched
	n, err = p.InvalidateKeys(ctx, "k")
	ok(t, err)
	equals(t, n, 2) // the whole hash
}

// Keys, group names and tags with a NUL byte or invalid UTF-8 are
// rejected with ErrInvalidKey wherever they are used.
func TestKeyHostileBytes(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{"a\x00b", "\x00", "a\xffb", "\xc3", "ok>\xfe", "ok>a\x00"} {
		t.Run(bad, func(t *testing.T) {
			rec := &errRecorder{}
			p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
			f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return bad }}, identity)
			_, err := f(ctx, 1)
			isErr(t, err, cacheme.ErrInvalidKey)
			_, err = p.InvalidateKeys(ctx, bad)
			isErr(t, err, cacheme.ErrInvalidKey)
			_, err = p.InvalidateGroups(ctx, bad)
			isErr(t, err, cacheme.ErrInvalidKey)
			_, err = cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(int) string { return "k" }, Tag: bad}, identity)
			isErr(t, err, cacheme.ErrInvalidKey)
			// A result's group name is checked when it is stored: the
			// caller gets the result, the error goes to the hook.
			g := mustWrap(t, p, cacheme.Spec[int, int]{
				Key:    func(int) string { return "g" },
				Groups: func(int, int) []string { return []string{bad} },
			}, identity)
			equals(t, call(t, g, 4), 4)
			if !rec.Has(cacheme.ErrInvalidKey) {
				t.Fatalf("reported %v; want ErrInvalidKey", rec.All())
			}
		})
	}
	// Valid UTF-8 of any script is fine.
	p, _ := newPlugin(t, cacheme.Settings{})
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "héllo>世界🙂" }}, identity)
	equals(t, call(t, f, 5), 5)
	if _, err := p.InvalidateGroups(ctx, "grüße"); err != nil && !errors.Is(err, cacheme.ErrUnknownTag) {
		t.Fatal(err)
	}
}
