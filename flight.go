package cacheme

import (
	"context"
	"errors"
	"sync"
	"time"
)

// In-process herd protection: concurrent calls of one entry in one process
// share one flight. Its leader reads Redis (and computes, or waits for
// another process's computation); the others wait for the flight and
// decode its outcome themselves, so that no two callers share a decoded
// value.
//
// Invariant: a caller only follows a flight whose leader had not begun to
// read when the caller joined. A flight's outcome reflects every
// invalidation done before its leader began (the read sees it, or the
// store refuses a computation it overtook); a write that returned before a
// follower began had its invalidation done by then. A caller that finds a
// flight already reading joins the next one instead, whose leader begins
// once the flight ends (join): one Redis read per entry at a time, each
// serving the callers that came while the one before it ran.

// flight is one in-process read (and computation) of an entry.
type flight struct {
	done    chan struct{} // made by the first follower, closed by the leader
	waiting int           // followers; under flights.mu
	ended   bool          // under flights.mu

	// The outcome, written by the leader before it ends the flight.
	how  int    // statusHit, statusStale, or outcomeComputed
	blob string // the encoded value (format version, codec ID, payload)
	err  error  // the shared error (the function's, or a fail-closed Redis error)
	// retry: followers must run on their own (the leader's context ended,
	// or its outcome cannot be shared).
	retry bool
	// The groups of the value (NUL-separated), if known: a follower inside
	// another computation passes them up (capture.go).
	groups      string
	groupsKnown bool

	// next is the flight of the callers that came after this one's leader
	// began; its leader begins once this one ends. Under flights.mu.
	next *flight
}

// outcomeComputed is a flight's how when its leader computed the value
// (cached or not) rather than reading it.
const outcomeComputed = 100

// flights holds the flights in progress, by entry key.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// join returns the flight of key and whether the caller leads it or
// follows it. A leader begins at once when after is nil, and otherwise
// once after has ended (see the invariant above).
func (fs *flights) join(key string) (f *flight, leader bool, after *flight) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	cur := fs.m[key]
	if cur == nil {
		if fs.m == nil {
			fs.m = map[string]*flight{}
		}
		f = &flight{}
		fs.m[key] = f
		return f, true, nil
	}
	// cur's leader has begun: wait for the next flight.
	if n := cur.next; n != nil && !n.ended {
		if n.done == nil {
			n.done = make(chan struct{})
		}
		n.waiting++
		return n, false, nil
	}
	if cur.done == nil {
		cur.done = make(chan struct{})
	}
	cur.next = &flight{}
	return cur.next, true, cur
}

// followers reports whether anyone follows f yet (the leader then encodes
// what it would not otherwise, such as a bypassed result).
func (fs *flights) followers(f *flight) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return f.waiting > 0
}

// detach makes next, which follows after, a flight of its own: its leader
// begins before after ends, so callers that come from now on wait for
// another next flight, not this one.
func (fs *flights) detach(key string, after, next *flight) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if after.next == next {
		after.next = nil
	}
}

// end removes f and wakes its followers; the leader has set the outcome.
func (fs *flights) end(key string, f *flight) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f.ended {
		return
	}
	f.ended = true
	if fs.m[key] == f {
		if n := f.next; n != nil && !n.ended {
			fs.m[key] = n // its leader begins now
		} else {
			delete(fs.m, key)
		}
	}
	if f.done != nil {
		close(f.done)
	}
}

// errHerdTimeout ends a wait that Settings.HerdRetryCount bounds.
var errHerdTimeout = errors.New("cacheme: the wait for another caller's computation ran out")

// wait blocks until f ends, ctx is done or bound (if not 0) passes
// (errHerdTimeout).
func (f *flight) wait(ctx context.Context, bound time.Duration) error {
	var timeout <-chan time.Time
	if bound > 0 {
		t := time.NewTimer(bound)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return errHerdTimeout
	}
}

// follow waits for the leader of f and returns its outcome, decoded for
// this caller.
func follow[A, R any](ctx context.Context, p *Plugin, l load[A, R], f *flight) (R, bool, error) {
	var zero R
	if err := f.wait(ctx, p.herdBound()); err != nil {
		if errors.Is(err, errHerdTimeout) {
			// Compute without the lease, store nothing.
			p.reg.add(l.tagC, herdWaits, 1)
			p.reg.add(l.tagC, herdTimeouts, 1)
			if l.miss != nil {
				l.miss(ctx, l.key, l.args)
			}
			v, err := l.fn(ctx, l.args)
			return v, true, err
		}
		return zero, true, err
	}
	if f.retry {
		return zero, false, nil
	}
	if f.err != nil {
		return zero, true, f.err
	}
	if outer := recorderFrom(ctx); outer != nil {
		if !f.groupsKnown {
			return zero, false, nil // compute on its own, and learn them
		}
		outer.add(splitGroups(f.groups)...)
	}
	v, err := decode[R](l.codecOf(p), bytesOf(f.blob))
	if err != nil {
		// The leader decoded or encoded it: a codec that fails on one
		// value of a type and not on another run. Compute on our own.
		p.report(ctx, err)
		return zero, false, nil
	}
	switch f.how {
	case statusStale:
		p.reg.add(l.tagC, staleServed, 1)
	case statusHit:
		p.reg.add(l.tagC, hits, 1)
	default: // waited for a computation, then got its value
		p.reg.add(l.tagC, herdWaits, 1)
		p.reg.add(l.tagC, hits, 1)
	}
	if l.hit != nil && (f.how == statusHit || f.how == statusStale) {
		l.hit(ctx, l.key, l.args, v)
	}
	return v, true, nil
}

// herdBound returns the bound Settings.HerdRetryCount sets on a wait (0:
// none).
func (p *Plugin) herdBound() time.Duration {
	return time.Duration(p.set.HerdRetryCount) * p.set.HerdRetryTime
}

// waitFor is how long a caller of another process waits for a lease: the
// time the lease has left, and a little more for the holder's store.
func waitFor(left time.Duration) time.Duration { return left + 5*time.Millisecond }
