package tracing_test

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	rdb, _ := testenv.Redis(t)
	// Calls wait for Redis as long as it takes (no OpTimeout, no breaker):
	// a slow server under load (miniredis under -race) must not turn a
	// miss into a fail-open call, which has no span.
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: testenv.Prefix(), Tracer: tracing.New(tp), StatsInterval: -1,
		OpTimeout: -1, BreakerFailures: -1})
	defer p.Close(context.Background())

	var inner trace.SpanContext
	fail := errors.New("no")
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(int) string { return "k" }, Tag: "books"},
		func(ctx context.Context, i int) (int, error) {
			inner = trace.SpanContextFromContext(ctx)
			if i < 0 {
				return 0, fail
			}
			return i, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := f(ctx, 1); err != nil { // a hit: no span
		t.Fatal(err)
	}
	if _, err := p.InvalidateKeys(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := f(ctx, -1); !errors.Is(err, fail) {
		t.Fatal(err)
	}
	if st := p.Stats().Total; st.RedisErrors != 0 {
		t.Fatalf("%d Redis errors", st.RedisErrors)
	}
	spans := rec.Ended()
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	want := []string{"cacheme.miss", "cacheme.store", "cacheme.miss"}
	if len(names) != len(want) {
		t.Fatalf("spans %q; want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("spans %q; want %q", names, want)
		}
	}
	miss := spans[0]
	if !inner.Equal(spans[2].SpanContext()) { // the last call's
		t.Fatal("the function does not run in the miss span")
	}
	attrs := map[string]string{}
	for _, a := range miss.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["cacheme.key"] != p.Settings().Prefix+"k>base" || attrs["cacheme.tag"] != "books" {
		t.Fatalf("miss attributes %v", attrs)
	}
	if got := spans[2].Status().Description; got != "no" || len(spans[2].Events()) != 1 {
		t.Fatalf("failed miss: status %q, %d events", got, len(spans[2].Events()))
	}
	if spans[1].SpanKind() != trace.SpanKindClient {
		t.Fatalf("store span kind %v", spans[1].SpanKind())
	}
}
