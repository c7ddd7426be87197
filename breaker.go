package cacheme

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Bounding the Redis calls of memoized calls: a timeout per call, and a
// circuit breaker (github.com/sony/gobreaker) that skips Redis for a
// cool-down after repeated failures, so that a dead or stalled Redis costs
// a memoized call microseconds, not a dial or a read timeout.
//
// Invariant: only memoized calls (reads, stores, leases) go through the
// breaker. Invalidations never skip Redis for it: they are tried, retried,
// and with Settings.Outbox kept for Replay.

// ErrBreakerOpen is wrapped (with ErrRedis) by the error of a memoized call
// made while the breaker is open: fail-open calls run the function without
// the cache; FailClosed ones return it.
var ErrBreakerOpen = errors.New("cacheme: Redis skipped: circuit breaker open")

// newBreaker returns the breaker of s, or nil when it is off.
func newBreaker(s Settings) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	if s.BreakerFailures < 0 {
		return nil
	}
	n := uint32(s.BreakerFailures)
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "cacheme",
		MaxRequests: 1, // one probe when the cool-down ends
		Timeout:     s.BreakerCooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n },
		// A caller that gave up is not a Redis failure.
		IsExcluded: breakerExcluded,
	})
}

// allow asks the breaker for a memoized call's use of Redis and returns
// the func that reports how it went, or an error wrapping ErrBreakerOpen.
//
// While Redis answers (the breaker is closed and the last report was a
// success) the breaker's counts hold nothing that a success would change,
// so a call only checks p.healthy and reports a failure, never a success:
// the hot path takes no lock and allocates nothing. Every failure goes
// through the breaker, so its consecutive-failure count is exact.
func (p *Plugin) allow() (func(error), error) {
	if p.breaker == nil {
		return noReport, nil
	}
	if p.healthy.Load() {
		return p.reportHealthy, nil
	}
	done, err := p.breaker.Allow()
	if err != nil {
		return nil, fmt.Errorf("%w: %w (%w)", ErrRedis, ErrBreakerOpen, err)
	}
	return func(err error) {
		done(err)
		if err == nil && p.breaker.State() == gobreaker.StateClosed {
			p.healthy.Store(true)
		}
	}, nil
}

func noReport(error) {}

// healthyReport reports a call made while Redis was healthy: a failure
// goes to the breaker, which counts it, and ends the healthy state.
func (p *Plugin) healthyReport(err error) {
	if err == nil || breakerExcluded(err) {
		return
	}
	p.healthy.Store(false)
	if done, aerr := p.breaker.Allow(); aerr == nil {
		done(err)
	}
}

// breakerExcluded reports errors that are not Redis failures: a caller
// that gave up.
func breakerExcluded(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, redis.Nil)
}

// bounded runs one Redis call of a memoized call within Settings.OpTimeout
// and the caller's deadline, whichever comes first:
//   - a bound the client enforces by itself costs nothing: the caller's
//     deadline with ContextTimeoutEnabled, or OpTimeout when the client's
//     own read and write timeouts are no longer (a plain call);
//   - otherwise, with ContextTimeoutEnabled, a context with the deadline;
//   - otherwise the call runs on a goroutine that is left to finish on its
//     own (the client's ReadTimeout ends it) when the deadline passes
//     first.
func (p *Plugin) bounded(ctx context.Context, call func(context.Context) error) error {
	if p.direct(ctx) {
		return call(ctx)
	}
	limit := p.set.OpTimeout
	if dl, ok := ctx.Deadline(); ok && (limit <= 0 || time.Until(dl) <= limit) {
		return abandonable(ctx, call) // the client does not honour it
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if p.ctxTimeouts {
		return call(ctx)
	}
	return abandonable(ctx, call)
}

// direct reports whether a call with ctx is bounded as bounded requires
// by the client alone, so that it can be made as it is (the hot path makes
// it without a closure).
func (p *Plugin) direct(ctx context.Context) bool {
	limit := p.set.OpTimeout
	if dl, ok := ctx.Deadline(); ok && (limit <= 0 || time.Until(dl) <= limit) {
		return p.ctxTimeouts
	}
	return limit <= 0 || p.clientBound > 0 && p.clientBound <= limit
}

// errAbandoned reports a call abandoned by abandonable.
var errAbandoned = errors.New("redis call abandoned")

// abandonable runs call on a goroutine, and stops waiting for it when ctx
// is done (errAbandoned). An abandoned call goes on: whatever it reads or
// writes (its arguments, its results) must not be reused by the caller.
func abandonable(ctx context.Context, call func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- call(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errAbandoned, ctx.Err())
	}
}

// clientBound returns how long one call on the client can last by itself:
// the longer of its read and write timeouts, or 0 when either is off. (A
// dial adds its DialTimeout; the breaker bounds repeated failed dials.)
func clientBound(c redis.UniversalClient) time.Duration {
	var read, write time.Duration
	switch c := c.(type) {
	case *redis.Client:
		read, write = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.ClusterClient:
		read, write = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.Ring:
		read, write = c.Options().ReadTimeout, c.Options().WriteTimeout
	default:
		return 0
	}
	if read <= 0 || write <= 0 {
		return 0
	}
	return max(read, write)
}

// contextTimeouts reports whether the client honours context deadlines
// on its reads and writes (redis.Options.ContextTimeoutEnabled).
func contextTimeouts(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}
