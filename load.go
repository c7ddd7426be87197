package cacheme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// load is one memoized call, whatever mode (key or node) built it.
//
// The function and its callbacks take the call's arguments (args) and key
// rather than closing over them, so that a call allocates no closures.
type load[A, R any] struct {
	e      entry
	key    string // the user's key, as callbacks get it
	args   A
	tag    string    // tag name
	tagC   *counters // tag counters
	stale  bool
	ttl    time.Duration
	groups func(A, R) ([]string, error) // group names the result joins
	hit    func(ctx context.Context, key string, args A, r R)
	miss   func(ctx context.Context, key string, args A)
	fn     func(ctx context.Context, args A) (R, error)
	codec  Codec // nil: Settings.Codec
	// capture records the GORM reads fn makes (capture.go): the result
	// joins their groups too.
	capture bool
}

// codecOf returns the codec of l's values.
func (l *load[A, R]) codecOf(p *Plugin) Codec {
	if l.codec != nil {
		return l.codec
	}
	return p.set.Codec
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

// maxCorrupt bounds the reads of an entry whose stored value this process
// cannot decode: after that many, another writer keeps storing what this
// one cannot read (a different codec), and the call computes without the
// cache.
const maxCorrupt = 3

// run memoizes one call. A hit costs one Redis round trip (SET NX GET, see
// readFast); a common miss two on a single server (that one, which takes
// the lease, and the store); see doc.go. Concurrent calls of one entry in
// this process share one flight (flight.go): only its leader reads Redis.
func run[A, R any](ctx context.Context, p *Plugin, l load[A, R]) (R, error) {
	if p.local != nil {
		if v, ok := localHit(ctx, p, l); ok {
			return v, nil
		}
	}
	for {
		f, leader, after := p.flights.join(l.e.key)
		if leader {
			if after != nil {
				err := after.wait(ctx, p.herdBound())
				switch {
				case errors.Is(err, errHerdTimeout):
					// Begin now, as a flight of its own: Redis's lease
					// bounds the wait from here (see lead).
					p.flights.detach(l.e.key, after, f)
				case err != nil:
					// Its followers run on their own.
					f.retry = true
					p.flights.end(l.e.key, f)
					var zero R
					return zero, err
				case after.how == outcomeComputed:
					// It waited for a computation, whose value it reads.
					p.reg.add(l.tagC, herdWaits, 1)
				}
			}
			return lead(ctx, p, l, f)
		}
		if v, done, err := follow(ctx, p, l, f); done {
			return v, err
		}
	}
}

// lead runs a call as the leader of its flight and sets the flight's
// outcome for the followers.
//
// Once it ended the flight early (serving its followers a stale value), the
// leader writes to a detached flight: followers read the outcome once the
// flight ends, and nothing may write it after that.
func lead[A, R any](ctx context.Context, p *Plugin, l load[A, R], f *flight) (r R, err error) {
	lh := p.newLeaseHeader()
	defer func() {
		putLeaseHeader(lh)
		if v := recover(); v != nil {
			pe, ok := v.(*PanicError)
			if !ok {
				pe = &PanicError{Key: l.e.String(), Value: v}
			}
			f.err = pe
			p.flights.end(l.e.key, f)
			panic(v)
		}
		if ctx.Err() != nil && err != nil {
			f.retry = true // our caller gave up, not theirs
		}
		p.flights.end(l.e.key, f)
	}()
	var herdEnd time.Time // when the wait HerdRetryCount bounds runs out
	done, err := p.allow()
	if err != nil {
		return bypass(ctx, p, l, f, err)
	}
	var snap localSnap
	if p.local != nil {
		// Before the read: an invalidation after it refuses the fill.
		snap = p.local.snapshot(l.e.key)
	}
	res, err := p.readFast(ctx, l.e, lh)
	done(err)
	if err != nil {
		return bypass(ctx, p, l, f, err)
	}
	token := ""
	waited := false
	for attempt := 0; ; attempt++ {
		if res.status == statusOther || res.status == statusLease && token == "" {
			token = lh.token()
		}
		if res.status == statusOther {
			if res, err = p.readSlow(ctx, l.e, l.stale, token); err != nil {
				return bypass(ctx, p, l, f, err)
			}
		}
		if res.corruptMeta {
			// readScript treated it as absent and dropped it.
			p.reg.add(l.tagC, corrupt, 1)
			p.report(ctx, fmt.Errorf("%w: %s: the key holds no valid entry", ErrCorrupt, l.e))
		}
		switch res.status {
		case statusHit, statusStale:
			h, _ := parseHeader(res.value)
			v, derr := decode[R](l.codecOf(p), bytesOf(h.blob))
			if derr == nil {
				// A call inside another computation passes its groups up
				// (capture.go), as its followers do.
				if outer := recorderFrom(ctx); outer != nil {
					outer.add(splitGroups(h.groups)...)
				}
				f.groups, f.groupsKnown = h.groups, true
				if res.status == statusStale {
					p.reg.add(l.tagC, staleServed, 1)
				} else {
					p.reg.add(l.tagC, hits, 1)
					if p.local != nil {
						p.local.insert(snap, l.e.key, res.value, l.ttl)
					}
				}
				if attempt == 0 && l.hit != nil {
					l.hit(ctx, l.key, l.args, v)
				}
				f.how, f.blob = res.status, h.blob
				if waited {
					f.how = outcomeComputed
				}
				return v, nil
			}
			// Undecodable: report, drop it, and compute afresh.
			p.reg.add(l.tagC, corrupt, 1)
			p.report(ctx, fmt.Errorf("%s: %w", l.e, derr))
			if attempt >= maxCorrupt {
				// Another writer keeps storing what this one cannot read
				// (a different codec): compute without the cache.
				f.retry = true
				return l.fn(ctx, l.args)
			}
			if _, _, err := p.invalidateEntries(ctx, []entry{l.e}); err != nil {
				return bypass(ctx, p, l, f, err)
			}
			res = readResult{status: statusOther}
			continue
		case statusLease:
			if h, ok := parseHeader(res.value); ok && l.stale {
				// The previous value is served to the followers while
				// this caller recomputes it.
				f.how, f.blob = statusStale, h.blob
				f.groups, f.groupsKnown = h.groups, true
				p.flights.end(l.e.key, f)
				f = &flight{}
			}
			return compute(ctx, p, l, f, token)
		case statusWait:
			left := res.wait
			if !waited {
				p.reg.add(l.tagC, herdWaits, 1)
				waited = true
				if b := p.herdBound(); b > 0 {
					herdEnd = time.Now().Add(b)
				}
			}
			if !herdEnd.IsZero() {
				left = min(left, time.Until(herdEnd))
			}
			woken, err := p.await(ctx, l.e, left)
			if err != nil {
				return bypass(ctx, p, l, f, err)
			}
			if !woken && !herdEnd.IsZero() && !time.Now().Before(herdEnd) {
				// The wait ran out: compute without the lease, store nothing.
				p.reg.add(l.tagC, herdTimeouts, 1)
				if l.miss != nil {
					l.miss(ctx, l.key, l.args)
				}
				return share(p, f, l.codecOf(p), func(ctx context.Context) (R, error) { return l.fn(ctx, l.args) })(ctx)
			}
			// Not woken: the lease ran out (its holder died or outlived it),
			// and the read below takes it over.
			if res, err = p.readFast(ctx, l.e, lh); err != nil {
				return bypass(ctx, p, l, f, err)
			}
		default:
			return bypass(ctx, p, l, f, redisErr("read", l.e.String(), fmt.Errorf("unexpected status %d", res.status)))
		}
	}
}

// await blocks until another process's computation of e wakes this one
// (see wake), or the lease it holds runs out (left, and a little more).
// It reports whether it was woken; the caller's context ends the wait
// within one BLPOP (see waitWake).
func (p *Plugin) await(ctx context.Context, e entry, left time.Duration) (bool, error) {
	deadline := time.Now().Add(waitFor(left))
	for {
		d := time.Until(deadline)
		if d <= 0 {
			return false, nil
		}
		woken, err := p.waitWake(ctx, e, d)
		if err != nil || woken {
			return woken, err
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}

// bypass handles a Redis failure before the function ran: fail-open calls
// the function without the cache, fail-closed returns the error. Followers
// of the flight get the same outcome.
func bypass[A, R any](ctx context.Context, p *Plugin, l load[A, R], f *flight, err error) (R, error) {
	var zero R
	if ctx.Err() != nil {
		// The caller gave up: not a Redis failure, and no reason to run.
		return zero, ctx.Err()
	}
	open := errors.Is(err, ErrBreakerOpen)
	if open {
		p.reg.add(l.tagC, breakerSkips, 1) // counted, not reported: the breaker's failures were
	} else {
		p.reg.add(l.tagC, redisErrors, 1)
	}
	if p.set.FailClosed {
		f.err = err
		return zero, err
	}
	if !open {
		p.report(ctx, err)
	}
	return share(p, f, l.codecOf(p), func(ctx context.Context) (R, error) { return l.fn(ctx, l.args) })(ctx)
}

// share returns fn, run without the cache, its outcome shared with the
// followers of f: its error, or its result encoded for them to decode.
//
// Its groups are unknown (the value is not stored): a follower inside
// another computation runs on its own (see follow).
func share[R any](p *Plugin, f *flight, codec Codec, fn func(context.Context) (R, error)) func(context.Context) (R, error) {
	return func(ctx context.Context) (R, error) {
		r, err := fn(ctx)
		if err != nil {
			f.err = err
			return r, err
		}
		f.retry = true
		if p.flights.followers(f) {
			if blob, err := encode(codec, r); err == nil {
				f.how, f.blob, f.retry = outcomeComputed, stringOf(blob), false
			}
		}
		return r, nil
	}
}

// compute runs the function under the lease and stores its result unless an
// invalidation overtook it. Errors after the function ran are reported, not
// returned: the caller gets the result (a codec's panic is such an error).
// A panic of the function or a callback releases the lease at once, so
// that waiters take over, and is raised again as a *PanicError. Callers of
// other processes waiting for the lease are woken in every case.
func compute[A, R any](ctx context.Context, p *Plugin, l load[A, R], f *flight, token string) (r R, err error) {
	sctx := context.WithoutCancel(ctx)
	giveUp := func() {
		n, err := p.release(sctx, l.e, token)
		p.report(ctx, err)
		p.report(ctx, p.wake(sctx, l.e, n))
	}
	end := func(error) {}
	defer func() {
		if v := recover(); v != nil {
			end(fmt.Errorf("%w: %v", ErrPanic, v))
			p.reg.add(l.tagC, loaderErrors, 1)
			giveUp()
			if pe, ok := v.(*PanicError); ok {
				panic(pe)
			}
			panic(&PanicError{Key: l.e.String(), Value: v})
		}
	}()
	if l.miss != nil {
		l.miss(ctx, l.key, l.args)
	}
	begun := "" // the second computation's start on the server's clock, exactly
	for attempt := 0; ; attempt++ {
		// The function reads its data after this moment: an invalidation
		// before it cannot make the result stale.
		started := time.Now()
		var sptx context.Context
		sptx, end = p.span(ctx, OpMiss, SpanInfo{Key: l.e.String(), Tag: l.tag})
		fctx, rec := sptx, (*recorder)(nil)
		if l.capture {
			fctx, rec = withRecorder(sptx, l.ttl)
		}
		r, err = l.fn(fctx, l.args)
		end(err)
		end = func(error) {} // ended: a panic below is not the function's
		if err != nil {
			p.reg.add(l.tagC, loaderErrors, 1)
			giveUp()
			f.err = err
			return r, err
		}
		if attempt == 0 {
			p.reg.add(l.tagC, misses, 1)
		}
		var captured []string
		if rec != nil {
			var why string
			if captured, why = rec.result(); why != "" {
				// Returned, never stored nor shared (see capture.go): it
				// may hold a transaction's uncommitted rows.
				p.reg.add(l.tagC, uncached, 1)
				f.retry = true
				giveUp()
				recorderFrom(ctx).spoil(why)
				return r, nil
			}
		}
		// The caller gets r whatever happens below; storing is best effort.
		stctx, endStore := p.span(sctx, OpStore, SpanInfo{Key: l.e.String(), Tag: l.tag})
		blob, groups, waiters, err := storeResult(stctx, p, l, token, started, begun, r, captured)
		endStore(err)
		var again *overtakenError
		if attempt == 0 && errors.As(err, &again) && again.retryAt != "" {
			// An invalidation came too close to the computation's start to
			// order them (see storeScript): compute once more, starting
			// after it for sure, and store with that start.
			begun = again.retryAt
			continue
		}
		if blob != nil {
			f.how, f.blob = outcomeComputed, stringOf(blob)
			f.groups, f.groupsKnown = groups, true
		} else {
			f.retry = true
		}
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
			giveUp()
			return r, nil
		}
		p.report(ctx, p.wake(sctx, l.e, waiters))
		return r, nil
	}
}

// errOvertaken means an invalidation came after the computation started.
var errOvertaken = ErrConflict

// overtakenError is errOvertaken from a store that a set refused although
// the computation's start was known (storeScript's status 3): a
// computation that starts after the reply may store with begun = retryAt,
// the server's time (µs) then.
type overtakenError struct{ retryAt string }

func (e *overtakenError) Error() string { return errOvertaken.Error() }
func (e *overtakenError) Unwrap() error { return errOvertaken }

// storeResult encodes r and stores it with its groups, the ones its spec
// names and the ones captured from the reads that computed it: on a single
// server in one round trip (storeScript checks the lease and every set's
// marker, stores and joins); on several servers it first joins the sets
// (join), then stores. An enclosing computation (capture.go) gets the
// groups too. It returns the encoded value (nil if it could not be
// encoded), its groups (NUL-separated) and how many callers of other
// processes wait to be woken. begun, if not "", is the computation's start
// on the server's clock (µs), known exactly.
func storeResult[A, R any](ctx context.Context, p *Plugin, l load[A, R], token string, started time.Time, begun string, r R, captured []string) ([]byte, string, int, error) {
	blob, err := encode(l.codecOf(p), r)
	if err != nil {
		return nil, "", 0, err
	}
	var names []string
	if l.groups != nil {
		if names, err = l.groups(l.args, r); err != nil {
			return blob, "", 0, err
		}
	}
	names = append(names, captured...)
	recorderFrom(ctx).add(names...)
	indexes := make([]string, 0, len(names)+2)
	tk, err := p.tagKey(l.tag)
	if err != nil {
		return blob, "", 0, err
	}
	indexes = append(indexes, tk)
	if hi := l.e.index(); hi != "" {
		indexes = append(indexes, hi)
	}
	seen := map[string]bool{}
	joined := names[:0:0]
	for _, n := range names {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		gk, err := p.groupKey(n)
		if err != nil {
			return blob, "", 0, err
		}
		indexes = append(indexes, gk)
		joined = append(joined, n)
	}
	groups := strings.Join(joined, groupSep)
	if len(groups) > maxGroupLen {
		return blob, "", 0, fmt.Errorf("%w: %s: the names of its %d groups take %d bytes, over %d", ErrInvalidKey, l.e, len(joined), len(groups), maxGroupLen)
	}
	if time.Since(started) >= p.set.LeaseTTL {
		return blob, "", 0, errOvertaken
	}
	var keep int64
	if l.stale {
		keep = ms(p.set.StaleTTL)
	}
	value := storedValue(keep, groups, blob)
	if !p.oneServer() {
		ok, err := p.join(ctx, l.e, indexes, l.ttl, started)
		if err != nil {
			return blob, "", 0, err
		}
		if !ok {
			return blob, "", 0, errOvertaken
		}
		indexes = nil
	}
	stored, waiters, retryAt, err := p.store(ctx, l.e, token, value, l.ttl, indexes, started, begun)
	if err != nil {
		return blob, "", 0, err
	}
	if !stored {
		return blob, groups, waiters, &overtakenError{retryAt}
	}
	return blob, groups, waiters, nil
}

// splitGroups returns the group names of an entry's groups field.
func splitGroups(g string) []string {
	if g == "" {
		return nil
	}
	return strings.Split(g, groupSep)
}
