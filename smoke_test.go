package cacheme_test

import (
	"context"
	"testing"

	"github.com/gormcacheme/cacheme"
)

func TestSmoke(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	var c counter
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int64]{
		Key:         func(int) string { return "test>me" },
		InvalidKeys: func(int, int64) []string { return []string{"test_invalid"} },
	}, c.fn)
	ok(t, err)
	ctx := context.Background()
	v, err := f(ctx, 1)
	ok(t, err)
	equals(t, v, 1)
	v, err = f(ctx, 2)
	ok(t, err)
	equals(t, v, 1)
	n, err := p.InvalidateGroups(ctx, "test_invalid")
	ok(t, err)
	equals(t, n, 1)
	v, err = f(ctx, 2)
	ok(t, err)
	equals(t, v, 2)
	t.Log(p.Stats(), p.Tags())
}
