package cacheme

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Counters is a snapshot of cache activity.
type Counters struct {
	Hits          int64 // valid values returned from Redis
	Misses        int64 // computations whose result was then stored (or tried to be)
	Stale         int64 // invalidated values served while another caller recomputed
	HerdWaits     int64 // calls that waited for another caller's computation
	HerdTimeouts  int64 // waits that ran out, after which the caller computed itself without storing
	LoaderErrors  int64 // computations that returned an error or panicked
	RedisErrors   int64 // failed Redis operations
	Corrupt       int64 // stored values that could not be decoded, and entry metadata that was not a number
	Conflicts     int64 // results not stored because an invalidation overtook them
	Invalidations int64 // entries invalidated (per tag: by InvalidateTag)
	Replayed      int64 // outbox rows delivered by Replay (Settings.Outbox)
	Fallbacks     int64 // GORM writes whose rows could not be read, invalidated broadly (ErrBroadInvalidation)
	BreakerSkips  int64 // memoized calls that skipped Redis because the circuit breaker was open
	Uncached      int64 // results returned but not stored: computed from a read inside a transaction, or from one whose tables could not be named
	LocalHits     int64 // values returned from the local layer (Settings.Local), without Redis; not counted in Hits
}

// Stats is a snapshot of a Plugin's counters, overall and per tag.
type Stats struct {
	Total Counters            // every operation of the plugin
	Tags  map[string]Counters // by tag; invalidations count here only through InvalidateTag
}

// counters holds live counters; every field is updated atomically.
type counters struct {
	hits, misses, stale, herdWaits, herdTimeouts  atomic.Int64
	loaderErrors, redisErrors, corrupt            atomic.Int64
	conflicts, invalidations, replayed, fallbacks atomic.Int64
	breakerSkips, uncached, localHits             atomic.Int64
}

func (c *counters) snapshot() Counters {
	return Counters{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(),
		HerdWaits: c.herdWaits.Load(), HerdTimeouts: c.herdTimeouts.Load(),
		LoaderErrors: c.loaderErrors.Load(), RedisErrors: c.redisErrors.Load(),
		Corrupt: c.corrupt.Load(), Conflicts: c.conflicts.Load(),
		Invalidations: c.invalidations.Load(), Replayed: c.replayed.Load(), Fallbacks: c.fallbacks.Load(),
		BreakerSkips: c.breakerSkips.Load(), Uncached: c.uncached.Load(), LocalHits: c.localHits.Load(),
	}
}

// TagKind says what a tag names.
type TagKind string

// The kinds of tags.
const (
	KindFunction TagKind = "function" // a function memoized by Wrap
	KindNode     TagKind = "node"     // a node type (WrapNode, Nodes)
	KindTable    TagKind = "table"    // a table whose queries are cached
)

// registry holds the tags a Plugin knows and their counters. It is safe for
// concurrent use.
type registry struct {
	total counters
	mu    sync.RWMutex         // protects tags and kinds
	tags  map[string]*counters // tag name -> its counters
	kinds map[string]TagKind   // tag name -> its kind, when not KindFunction

	// active is called by the first add after activeSeen is cleared (see
	// fleetstats.go); nil when the counters are not published.
	active     func()
	activeSeen atomic.Bool
}

// register adds a tag (idempotent) and returns its counters.
func (r *registry) register(tag string) *counters {
	r.mu.RLock()
	c := r.tags[tag]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tags == nil {
		r.tags = map[string]*counters{}
	}
	if c = r.tags[tag]; c == nil {
		c = new(counters)
		r.tags[tag] = c
	}
	return c
}

// registerKind is register for a tag of another kind than a function.
func (r *registry) registerKind(tag string, kind TagKind) *counters {
	c := r.register(tag)
	r.mu.RLock()
	known := r.kinds[tag] == kind
	r.mu.RUnlock()
	if known {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = map[string]TagKind{}
	}
	r.kinds[tag] = kind
	return c
}

// kind returns the kind of a registered tag.
func (r *registry) kind(tag string) TagKind {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if k, ok := r.kinds[tag]; ok {
		return k
	}
	return KindFunction
}

func (r *registry) lookup(tag string) *counters {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tags[tag]
}

func (r *registry) names() []string {
	r.mu.RLock()
	out := make([]string, 0, len(r.tags))
	for t := range r.tags {
		out = append(out, t)
	}
	r.mu.RUnlock()
	sort.Strings(out)
	return out
}

// add bumps one counter overall and for a tag (tag may be nil).
func (r *registry) add(tag *counters, pick func(*counters) *atomic.Int64, n int64) {
	pick(&r.total).Add(n)
	if tag != nil {
		pick(tag).Add(n)
	}
	if r.active != nil && !r.activeSeen.Load() && r.activeSeen.CompareAndSwap(false, true) {
		r.active()
	}
}

// Stats returns a snapshot of the plugin's counters.
func (p *Plugin) Stats() Stats {
	if p == nil {
		return Stats{}
	}
	s := Stats{Total: p.reg.total.snapshot(), Tags: map[string]Counters{}}
	p.reg.mu.RLock()
	defer p.reg.mu.RUnlock()
	for name, c := range p.reg.tags {
		s.Tags[name] = c.snapshot()
	}
	return s
}

// Tags returns the sorted names of every tag registered with the plugin: the
// tags of wrapped functions and the type names of node types.
func (p *Plugin) Tags() []string {
	if p == nil {
		return nil
	}
	return p.reg.names()
}

// TagKind returns the kind of a tag registered with the plugin
// (KindFunction for an unknown one).
func (p *Plugin) TagKind(tag string) TagKind {
	if p == nil {
		return KindFunction
	}
	return p.reg.kind(tag)
}

func hits(c *counters) *atomic.Int64          { return &c.hits }
func misses(c *counters) *atomic.Int64        { return &c.misses }
func staleServed(c *counters) *atomic.Int64   { return &c.stale }
func herdWaits(c *counters) *atomic.Int64     { return &c.herdWaits }
func herdTimeouts(c *counters) *atomic.Int64  { return &c.herdTimeouts }
func loaderErrors(c *counters) *atomic.Int64  { return &c.loaderErrors }
func redisErrors(c *counters) *atomic.Int64   { return &c.redisErrors }
func corrupt(c *counters) *atomic.Int64       { return &c.corrupt }
func conflicts(c *counters) *atomic.Int64     { return &c.conflicts }
func invalidations(c *counters) *atomic.Int64 { return &c.invalidations }
func replayed(c *counters) *atomic.Int64      { return &c.replayed }
func fallbacks(c *counters) *atomic.Int64     { return &c.fallbacks }
func breakerSkips(c *counters) *atomic.Int64  { return &c.breakerSkips }
func uncached(c *counters) *atomic.Int64      { return &c.uncached }
func localHits(c *counters) *atomic.Int64     { return &c.localHits }
