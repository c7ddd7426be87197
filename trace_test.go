package cacheme_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// recordTracer records the operations reported to it.
type recordTracer struct {
	name string
	mu   sync.Mutex
	ops  []string // "start op key tag groups" and "end op err"
}

type traceKey struct{}

func (r *recordTracer) Start(ctx context.Context, op cacheme.Op, info cacheme.SpanInfo) (context.Context, func(error)) {
	r.add(r.name + " start " + string(op) + " " + info.Key + " " + info.Tag + " " + itoa(info.Groups))
	return context.WithValue(ctx, traceKey{}, r.name+" "+string(op)), func(err error) {
		msg := "nil"
		if err != nil {
			msg = err.Error()
		}
		r.add(r.name + " end " + string(op) + " " + msg)
	}
}

func (r *recordTracer) add(s string) {
	r.mu.Lock()
	r.ops = append(r.ops, s)
	r.mu.Unlock()
}

func (r *recordTracer) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ops
	r.ops = nil
	return out
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestTracer(t *testing.T) {
	tr := &recordTracer{name: "t"}
	p, _ := newPlugin(t, cacheme.Settings{Tracer: tr})
	key := p.Settings().Prefix + "tr>base"
	var inFn any
	fail := errors.New("no")
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "tr" }, Tag: "trt"}, func(ctx context.Context, i int) (int, error) {
		inFn = ctx.Value(traceKey{})
		if i < 0 {
			return 0, fail
		}
		if i == 99 {
			panic("boom")
		}
		return i, nil
	})
	call(t, f, 1)
	deepEquals(t, tr.take(), []string{
		"t start cacheme.miss " + key + " trt 0", "t end cacheme.miss nil",
		"t start cacheme.store " + key + " trt 0", "t end cacheme.store nil",
	})
	equals(t, inFn, any("t cacheme.miss")) // the function runs in the span's context
	call(t, f, 1)                          // a hit: nothing to report
	deepEquals(t, tr.take(), []string(nil))

	_, err := p.InvalidateKeys(bg, "tr")
	ok(t, err)
	_, err = f(bg, -1)
	isErr(t, err, fail)
	deepEquals(t, tr.take(), []string{"t start cacheme.miss " + key + " trt 0", "t end cacheme.miss no"})

	func() {
		defer func() { _ = recover() }()
		_, _ = f(bg, 99)
	}()
	got := tr.take()
	if len(got) != 2 || !slices.Contains(got, "t end cacheme.miss cacheme: panic in user code: boom") {
		t.Fatalf("after a panic: %q", got)
	}
}

// TestTracerFlush checks the span of a committed write's invalidation, and
// that Tracers tells every tracer, nesting their contexts.
func TestTracerFlush(t *testing.T) {
	a, b := &recordTracer{name: "a"}, &recordTracer{name: "b"}
	var groups []string
	e := newEnv(t, cacheme.Settings{
		Tracer:           cacheme.Tracers(a, nil, b),
		InvalidationHook: func(_ context.Context, g []string, _ int) { groups = g },
	}, gorm.Config{})
	ok(t, e.db.Create(&User{Name: "ann"}).Error)
	if len(groups) < 2 {
		t.Fatalf("the write invalidated %q", groups)
	}
	n := itoa(len(groups))
	deepEquals(t, a.take(), []string{"a start cacheme.flush   " + n, "a end cacheme.flush nil"})
	deepEquals(t, b.take(), []string{"b start cacheme.flush   " + n, "b end cacheme.flush nil"})
}
