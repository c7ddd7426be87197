package cacheme

import "context"

// Tracing: the plugin tells a Tracer (Settings.Tracer) when it computes a
// value after a miss, stores it, and invalidates after a commit, so that
// an adapter can open spans (package tracing, OpenTelemetry) or time them
// (package metrics) without the plugin importing either.

// Op names an operation the plugin reports to its Tracer.
type Op string

// The operations.
const (
	// OpMiss is a memoized function computing a value after a miss.
	// Its context is the one the function gets, so that what the function
	// does (database queries) nests in it.
	OpMiss Op = "cacheme.miss"
	// OpStore is storing a computed value: joining its groups and tag,
	// then the store itself.
	OpStore Op = "cacheme.store"
	// OpFlush is the invalidation of the groups a committed GORM write
	// affected, retries included.
	OpFlush Op = "cacheme.flush"
)

// SpanInfo describes an operation.
type SpanInfo struct {
	Key    string // the entry (OpMiss, OpStore), prefix included
	Tag    string // its tag (OpMiss, OpStore)
	Groups int    // how many groups it invalidates (OpFlush)
}

// Tracer is told about the operations the plugin reports. Start is called
// when one begins and returns the context it runs in and the function that
// ends it, called once with its error (nil on success; a store that an
// invalidation overtook ends with an error wrapping ErrConflict). Both
// must be safe for concurrent use and return quickly.
type Tracer interface {
	Start(ctx context.Context, op Op, info SpanInfo) (context.Context, func(error))
}

// Tracers returns a Tracer that tells each of ts in turn (nil ones are
// skipped), nesting their contexts, and ends them in reverse order.
func Tracers(ts ...Tracer) Tracer {
	var out multiTracer
	for _, t := range ts {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

type multiTracer []Tracer

func (m multiTracer) Start(ctx context.Context, op Op, info SpanInfo) (context.Context, func(error)) {
	ends := make([]func(error), len(m))
	for i, t := range m {
		ctx, ends[i] = t.Start(ctx, op, info)
	}
	return ctx, func(err error) {
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](err)
		}
	}
}

// span starts op on the plugin's Tracer, if any.
func (p *Plugin) span(ctx context.Context, op Op, info SpanInfo) (context.Context, func(error)) {
	if p.set.Tracer == nil {
		return ctx, func(error) {}
	}
	return p.set.Tracer.Start(ctx, op, info)
}
