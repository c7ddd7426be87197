package cacheme

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// load is one memoized call, whatever mode (key or node) built it.
type load[R any] struct {
	e      entry
	tag    string    // tag name
	tagC   *counters // tag counters
	stale  bool
	ttl    time.Duration
	groups func(R) ([]string, error) // group names the result joins
	hit    func(ctx context.Context, r R)
	miss   func(ctx context.Context)
	fn     func(ctx context.Context) (R, error)
}

// PanicError is the value the plugin panics with when a memoized function
// (or a callback it runs while computing) panics: the plugin first
// releases the computation's lease, so that callers waiting for it take
// over at once, then panics again with a *PanicError holding the original
// value.
type PanicError struct {
	Key   string // the full cache key
	Value any    // the value passed to panic
}

// Error describes the panic.
func (e *PanicError) Error() string {
	return fmt.Sprintf("cacheme: memoized function for %s panicked: %v", e.Key, e.Value)
}

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// run memoizes one call. A hit costs one Redis round trip; a miss three
// (read and lease, join the groups and tag, store).
func run[R any](ctx context.Context, p *Plugin, l load[R]) (R, error) {
	var zero R
	token := p.token()
	done, err := p.allow()
	if err != nil {
		return bypass(ctx, p, l, err)
	}
	res, err := p.read(ctx, l.e, l.stale, token, true)
	done(err)
	if err != nil {
		return bypass(ctx, p, l, err)
	}
	for attempt := 0; ; attempt++ {
		if res.corruptMeta {
			// readScript treated it as absent and repaired it.
			p.reg.add(l.tagC, corrupt, 1)
			p.report(ctx, fmt.Errorf("%w: %s: expiry or lease time is not a number", ErrCorrupt, l.e))
		}
		switch res.status {
		case statusHit, statusStale:
			v, derr := decode[R](p.set.Codec, res.value)
			if derr == nil {
				if res.status == statusStale {
					p.reg.add(l.tagC, staleServed, 1)
				} else {
					p.reg.add(l.tagC, hits, 1)
				}
				if attempt == 0 && l.hit != nil {
					l.hit(ctx, v)
				}
				return v, nil
			}
			// Undecodable: report, drop it, and compute afresh.
			p.reg.add(l.tagC, corrupt, 1)
			p.report(ctx, fmt.Errorf("%s: %w", l.e, derr))
			if attempt >= p.set.HerdRetryCount {
				// Another writer keeps storing what this one cannot read
				// (a different codec): compute without the cache.
				return l.fn(ctx)
			}
			if _, _, err := p.invalidateEntries(ctx, []entry{l.e}); err != nil {
				return bypass(ctx, p, l, err)
			}
			if res, err = p.read(ctx, l.e, false, token, true); err != nil {
				return bypass(ctx, p, l, err)
			}
			continue
		case statusLease:
			return compute(ctx, p, l, token, res.leaseAt)
		case statusWait:
			if attempt == 0 {
				p.reg.add(l.tagC, herdWaits, 1)
			}
			if attempt >= p.set.HerdRetryCount {
				// The wait ran out: compute without the lease, store nothing.
				p.reg.add(l.tagC, herdTimeouts, 1)
				if l.miss != nil {
					l.miss(ctx)
				}
				return l.fn(ctx)
			}
			t := time.NewTimer(p.set.HerdRetryTime)
			select {
			case <-ctx.Done():
				t.Stop()
				return zero, ctx.Err()
			case <-t.C:
			}
			if res, err = p.read(ctx, l.e, l.stale, token, true); err != nil {
				return bypass(ctx, p, l, err)
			}
		default:
			return bypass(ctx, p, l, redisErr("read", l.e.String(), fmt.Errorf("unexpected status %d", res.status)))
		}
	}
}

// bypass handles a Redis failure before the function ran: fail-open calls
// the function without the cache, fail-closed returns the error.
func bypass[R any](ctx context.Context, p *Plugin, l load[R], err error) (R, error) {
	if ctx.Err() != nil {
		// The caller gave up: not a Redis failure, and no reason to run.
		var zero R
		return zero, ctx.Err()
	}
	open := errors.Is(err, ErrBreakerOpen)
	if open {
		p.reg.add(l.tagC, breakerSkips, 1) // counted, not reported: the breaker's failures were
	} else {
		p.reg.add(l.tagC, redisErrors, 1)
	}
	if p.set.FailClosed {
		var zero R
		return zero, err
	}
	if !open {
		p.report(ctx, err)
	}
	return l.fn(ctx)
}

// compute runs the function under the lease and stores its result unless an
// invalidation overtook it. Errors after the function ran are reported, not
// returned: the caller gets the result (a codec's panic is such an error).
// A panic of the function or a callback releases the lease at once, so
// that waiters take over, and is raised again as a *PanicError.
func compute[R any](ctx context.Context, p *Plugin, l load[R], token string, leaseAt int64) (r R, err error) {
	// The function reads its data after this moment: an invalidation
	// before it cannot make the result stale.
	started := time.Now()
	sctx := context.WithoutCancel(ctx)
	fctx, end := p.span(ctx, OpMiss, SpanInfo{Key: l.e.String(), Tag: l.tag})
	defer func() {
		if v := recover(); v != nil {
			end(fmt.Errorf("%w: %v", ErrPanic, v))
			p.reg.add(l.tagC, loaderErrors, 1)
			p.report(ctx, p.release(sctx, l.e, token))
			if pe, ok := v.(*PanicError); ok {
				panic(pe)
			}
			panic(&PanicError{Key: l.e.String(), Value: v})
		}
	}()
	if l.miss != nil {
		l.miss(ctx)
	}
	r, err = l.fn(fctx)
	end(err)
	end = func(error) {} // ended: a panic below is not the function's
	if err != nil {
		p.reg.add(l.tagC, loaderErrors, 1)
		p.report(ctx, p.release(sctx, l.e, token))
		return r, err
	}
	p.reg.add(l.tagC, misses, 1)
	// The caller gets r whatever happens below; storing is best effort.
	stctx, endStore := p.span(sctx, OpStore, SpanInfo{Key: l.e.String(), Tag: l.tag})
	err = storeResult(stctx, p, l, token, started, leaseAt, r)
	endStore(err)
	if err != nil {
		switch {
		case errors.Is(err, errOvertaken):
			p.reg.add(l.tagC, conflicts, 1)
		case errors.Is(err, ErrRedis):
			p.reg.add(l.tagC, redisErrors, 1)
			p.report(ctx, err)
		default: // the result cannot be encoded, or a group is invalid
			p.report(ctx, err)
		}
		p.report(ctx, p.release(sctx, l.e, token))
	}
	return r, nil
}

// errOvertaken means an invalidation came after the computation started.
var errOvertaken = ErrConflict

func storeResult[R any](ctx context.Context, p *Plugin, l load[R], token string, started time.Time, leaseAt int64, r R) error {
	blob, err := encode(p.set.Codec, r)
	if err != nil {
		return err
	}
	var names []string
	if l.groups != nil {
		if names, err = l.groups(r); err != nil {
			return err
		}
	}
	indexes := make([]string, 0, len(names)+1)
	tk, err := p.tagKey(l.tag)
	if err != nil {
		return err
	}
	indexes = append(indexes, tk)
	seen := map[string]bool{}
	joined := names[:0:0]
	for _, n := range names {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		gk, err := p.groupKey(n)
		if err != nil {
			return err
		}
		indexes = append(indexes, gk)
		joined = append(joined, n)
	}
	if time.Since(started) >= p.set.LeaseTTL {
		return errOvertaken
	}
	ok, err := p.join(ctx, l.e, indexes, l.ttl, started, leaseAt)
	if err != nil {
		return err
	}
	if !ok {
		return errOvertaken
	}
	var keep time.Duration
	if l.stale {
		keep = p.set.StaleTTL
	}
	stored, err := p.store(ctx, l.e, token, blob, l.ttl, keep, joined)
	if err != nil {
		return err
	}
	if !stored {
		return errOvertaken
	}
	return nil
}
