package cacheme

import (
	"context"
	"errors"
	"fmt"

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
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, redis.Nil)
		},
	})
}

// allow asks the breaker for a memoized call's use of Redis and returns
// the func that reports how it went, or an error wrapping ErrBreakerOpen.
func (p *Plugin) allow() (func(error), error) {
	if p.breaker == nil {
		return func(error) {}, nil
	}
	done, err := p.breaker.Allow()
	if err != nil {
		return nil, fmt.Errorf("%w: %w (%w)", ErrRedis, ErrBreakerOpen, err)
	}
	return done, nil
}

// bounded runs one Redis call of a memoized call within Settings.OpTimeout
// and the caller's deadline. A client with ContextTimeoutEnabled honours
// the deadline itself; for another, the call runs on a goroutine that is
// left to finish on its own (the client's ReadTimeout ends it) when the
// deadline passes first. Without a deadline it is a plain call.
func (p *Plugin) bounded(ctx context.Context, call func(context.Context) error) error {
	if p.set.OpTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.set.OpTimeout)
		defer cancel()
	}
	if _, ok := ctx.Deadline(); !ok || p.ctxTimeouts {
		return call(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- call(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("redis call abandoned: %w", ctx.Err())
	}
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
