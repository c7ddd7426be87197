// Package tracing opens OpenTelemetry spans for what a cacheme.Plugin
// reports to its Tracer: a memoized function's computation after a miss
// (cacheme.miss; the function runs inside it, so its database queries nest
// in it), the store of its value (cacheme.store) and the invalidation of a
// committed write's groups (cacheme.flush). It keeps the OpenTelemetry API
// out of the cacheme package:
//
//	p := cacheme.New(cacheme.Settings{Redis: rdb, Tracer: tracing.New(nil)})
//
// Spans carry the attributes cacheme.key and cacheme.tag (miss, store) or
// cacheme.groups (flush); an error ends a span with status Error.
package tracing

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gormcacheme/cacheme"
)

// ScopeName is the instrumentation scope of the spans.
const ScopeName = "github.com/gormcacheme/cacheme"

// Tracer is a cacheme.Tracer that opens OpenTelemetry spans.
type Tracer struct {
	t trace.Tracer
}

// New returns a Tracer whose spans come from tp; nil means the global
// provider (otel.GetTracerProvider) at the time of each span.
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return &Tracer{}
	}
	return &Tracer{t: tp.Tracer(ScopeName)}
}

// Start implements cacheme.Tracer.
func (t *Tracer) Start(ctx context.Context, op cacheme.Op, info cacheme.SpanInfo) (context.Context, func(error)) {
	tr := t.t
	if tr == nil {
		tr = otel.GetTracerProvider().Tracer(ScopeName)
	}
	var attrs []attribute.KeyValue
	if op == cacheme.OpFlush {
		attrs = append(attrs, attribute.Int("cacheme.groups", info.Groups))
	} else {
		attrs = append(attrs, attribute.String("cacheme.key", info.Key), attribute.String("cacheme.tag", info.Tag))
	}
	kind := trace.SpanKindInternal
	if op == cacheme.OpFlush || op == cacheme.OpStore {
		kind = trace.SpanKindClient // calls to Redis
	}
	ctx, span := tr.Start(ctx, string(op), trace.WithAttributes(attrs...), trace.WithSpanKind(kind))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
