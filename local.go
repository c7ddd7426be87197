package cacheme

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
)

// The local layer (Settings.Local): valid values read from Redis, kept in
// this process and served without a Redis round trip.
//
// Invariants the layer relies on:
//
//   - Every invalidation of an entry runs invalidateScript, which publishes
//     the entry's key on the Prefix's channel in the same atomic step
//     (scripts.go). The subscriber (subscribe) evicts the keys it gets.
//   - The layer serves only while its subscription is confirmed: a
//     receive error, a silent connection (no reply to a ping for a
//     heartbeat) or a new subscription confirmation empties it first
//     (purge), since messages may have been lost in between.
//   - No stale refill: a read records a snapshot (the layer's generation
//     and its key's stripe) before it asks Redis; its value enters the
//     layer only if neither changed by then (insert). A purge bumps the
//     generation, an eviction the stripes of its keys; both run under mu,
//     as does insert's check with its set, so an eviction never comes
//     between the check and the set.
//   - The layer holds only values Redis returned as valid (statusHit):
//     never stale-served values, never values computed here.

// localChannel returns the channel invalidateScript publishes on.
func (p *Plugin) localChannel() string { return p.set.Prefix + localChannelSuffix }

// localChannelSuffix ends the channel of a Prefix's invalidations. Channels
// are not keys: it cannot collide with an entry.
const localChannelSuffix = "invalidations"

// localOverhead is what an entry costs beyond its key and value bytes: the
// cache's node, the entry's fields and string headers (an estimate).
const localOverhead = 128

// localStripes is how many key stripes carry a generation of their own: an
// invalidation message refuses the fills in progress of its keys' stripes
// only, not of every key.
const localStripes = 4096

// localEntry is a copy of a valid entry read from Redis.
type localEntry struct {
	blob   string        // the encoded value (shares value's bytes)
	groups string        // the entry's groups, NUL-separated (shares value's bytes)
	ttl    time.Duration // how long it may stay in the layer
	weight uint32        // what it counts against Settings.Local.MaxBytes
}

// local is the local layer of one plugin. It is safe for concurrent use.
type local struct {
	cache     *otter.Cache[string, localEntry]
	maxBytes  uint64
	floor     uint32 // the least weight of an entry (see newLocal)
	ttl       time.Duration
	heartbeat time.Duration
	channel   string
	seed      maphash.Seed

	live    atomic.Bool   // the subscription is confirmed: entries may be served and filled
	gen     atomic.Uint64 // bumped by every purge
	stripes [localStripes]atomic.Uint64

	mu sync.Mutex // held by insert's check and set, by evict and by purge

	stop chan struct{} // closed by close
	done chan struct{} // closed when subscribe returns
	psMu sync.Mutex    // protects ps and stopped
	ps   *redis.PubSub // the subscription in use, closed by close
	// stopped is set by close: subscribe opens no new subscription.
	stopped bool

	// purges counts purges, messages the invalidation messages received
	// (tests wait for them).
	purges, messages atomic.Int64
}

// newLocal returns the local layer s configures (defaults applied).
//
// Otter bounds a cache by weight or by count, not both: every entry weighs
// at least floor = MaxBytes/MaxEntries (rounded up), so that a total weight
// of at most MaxBytes is also at most MaxEntries entries.
func newLocal(s Settings) *local {
	floor := (s.Local.MaxBytes + int64(s.Local.MaxEntries) - 1) / int64(s.Local.MaxEntries)
	lc := &local{
		maxBytes:  uint64(s.Local.MaxBytes),
		floor:     uint32(min(floor, math.MaxUint32)),
		ttl:       s.Local.TTL,
		heartbeat: s.Local.Heartbeat,
		channel:   s.Prefix + localChannelSuffix,
		seed:      maphash.MakeSeed(),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	lc.cache = otter.Must(&otter.Options[string, localEntry]{
		MaximumWeight: lc.maxBytes,
		Weigher:       func(_ string, e localEntry) uint32 { return e.weight },
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[string, localEntry]) time.Duration {
			return e.Value.ttl
		}),
	})
	return lc
}

// localSnap is what a read records before it asks Redis (see insert).
type localSnap struct {
	gen, stripe uint64
	idx         uint32
	ok          bool // the layer was live
}

func (lc *local) stripe(key string) uint32 {
	return uint32(maphash.String(lc.seed, key) % localStripes)
}

// snapshot records the layer's state before a read of key.
func (lc *local) snapshot(key string) localSnap {
	if !lc.live.Load() {
		return localSnap{}
	}
	i := lc.stripe(key)
	return localSnap{gen: lc.gen.Load(), stripe: lc.stripes[i].Load(), idx: i, ok: true}
}

// get returns key's entry if the layer is live and holds it.
func (lc *local) get(key string) (localEntry, bool) {
	if !lc.live.Load() {
		return localEntry{}, false
	}
	return lc.cache.GetIfPresent(key)
}

// insert keeps value (a valid entry as Redis returned it: header, groups,
// blob) under key, unless an invalidation of key's stripe or a purge came
// after snap was taken, or the layer is not live. It reports whether it
// kept it.
func (lc *local) insert(snap localSnap, key, value string, ttl time.Duration) bool {
	if !snap.ok {
		return false
	}
	h, ok := parseHeader(value)
	if !ok || h.state != stateValid {
		return false
	}
	w := uint64(len(key)) + uint64(len(value)) + localOverhead
	if w > lc.maxBytes || w > math.MaxUint32 {
		return false
	}
	e := localEntry{blob: h.blob, groups: h.groups, ttl: min(ttl, lc.ttl), weight: max(uint32(w), lc.floor)}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if !lc.live.Load() || lc.gen.Load() != snap.gen || lc.stripes[snap.idx].Load() != snap.stripe {
		return false
	}
	lc.cache.Set(key, e)
	return true
}

// evict drops keys and refuses the fills in progress of their stripes.
func (lc *local) evict(keys ...string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for _, k := range keys {
		lc.stripes[lc.stripe(k)].Add(1)
		lc.cache.Invalidate(k)
	}
}

// purge empties the layer and refuses every fill in progress; live says
// whether it serves afterwards (a confirmed subscription) or not.
func (lc *local) purge(live bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.live.Store(false)
	lc.gen.Add(1)
	lc.cache.InvalidateAll()
	lc.purges.Add(1)
	lc.live.Store(live)
}

// evictLocal evicts entries from this process's local layer, if any, once
// their invalidation ran (whether it succeeded or not): this process never
// serves locally what it just invalidated, whatever the delivery delay of
// its own message.
func (p *Plugin) evictLocal(entries []entry) {
	if p.local == nil || len(entries) == 0 {
		return
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.key
	}
	p.local.evict(keys...)
}

// localHit serves l from the local layer, if it holds l's entry.
func localHit[A, R any](ctx context.Context, p *Plugin, l load[A, R]) (R, bool) {
	var zero R
	e, ok := p.local.get(l.e.key)
	if !ok {
		return zero, false
	}
	v, err := decode[R](l.codecOf(p), bytesOf(e.blob))
	if err != nil {
		// Redis returned it as valid; the read there reports it.
		p.local.evict(l.e.key)
		return zero, false
	}
	if outer := recorderFrom(ctx); outer != nil {
		outer.add(splitGroups(e.groups)...)
	}
	p.reg.add(l.tagC, localHits, 1)
	if l.hit != nil {
		l.hit(ctx, l.key, l.args, v)
	}
	return v, true
}

// startLocal starts the subscriber of the local layer.
func (p *Plugin) startLocal() {
	p.local = newLocal(p.set)
	go p.local.subscribe(p.rdb, func(err error) { p.report(context.Background(), err) })
}

// close stops the subscriber and the cache's goroutine and waits for them.
func (lc *local) close() {
	lc.psMu.Lock()
	if !lc.stopped {
		lc.stopped = true
		close(lc.stop)
		if lc.ps != nil {
			_ = lc.ps.Close() // ends a blocked receive
		}
	}
	lc.psMu.Unlock()
	<-lc.done
	lc.purge(false)
	lc.cache.StopAllGoroutines()
}

// subscribe holds the subscription to the Prefix's invalidations until
// close: it evicts the keys each message names, and empties the layer
// whenever the subscription may have missed a message (see the invariants
// at the top). It uses Receive, not Channel, which would reconnect and
// resubscribe behind its back.
func (lc *local) subscribe(rdb redis.UniversalClient, report func(error)) {
	defer close(lc.done)
	ctx := context.Background()
	backoff := lc.heartbeat / 10
	for {
		ps := rdb.Subscribe(ctx, lc.channel) // its error comes from the first receive
		lc.psMu.Lock()
		if lc.stopped {
			lc.psMu.Unlock()
			_ = ps.Close()
			return
		}
		lc.ps = ps
		lc.psMu.Unlock()

		confirmed, err := lc.receive(ctx, ps)
		_ = ps.Close()
		lc.purge(false)
		if confirmed {
			backoff = lc.heartbeat / 10
		}
		select {
		case <-lc.stop:
			return
		default:
		}
		report(fmt.Errorf("%w: the local layer's subscription to %s was lost (emptied until it is back): %w", ErrRedis, lc.channel, err))
		t := time.NewTimer(backoff)
		select {
		case <-lc.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, lc.heartbeat)
	}
}

// receive reads the subscription until it fails or stays silent for a
// heartbeat after a ping, and returns whether it was confirmed and why it
// stopped.
func (lc *local) receive(ctx context.Context, ps *redis.PubSub) (confirmed bool, _ error) {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, lc.heartbeat)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return confirmed, err
			}
			if pinged {
				return confirmed, fmt.Errorf("no reply to a ping within %v", lc.heartbeat)
			}
			if err := ps.Ping(ctx); err != nil {
				return confirmed, err
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == lc.channel {
				// Whatever was published before this confirmation may
				// have been missed: start empty.
				lc.purge(true)
				confirmed = true
			}
		case *redis.Message:
			if m.Channel == lc.channel {
				lc.evict(strings.Split(m.Payload, "\x00")...)
				lc.messages.Add(1)
			}
		case *redis.Pong:
		}
	}
}
