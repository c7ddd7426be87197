package cacheme

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Default values of Settings, applied by New to zero fields.
const (
	DefaultPrefix         = "CM:"
	DefaultHerdRetryCount = 0 // no bound on a herd's wait but the lease
	DefaultHerdRetryTime  = 20 * time.Millisecond
	DefaultTTL            = 24 * time.Hour
	DefaultLeaseTTL       = 10 * time.Second
	DefaultFlushTimeout   = time.Second
	DefaultReplayInterval = 10 * time.Second
	DefaultWaitTimeout    = 100 * time.Millisecond
	DefaultOpTimeout      = 500 * time.Millisecond
	DefaultBreakerFails   = 5
	DefaultBreakerCool    = time.Second
	DefaultStaleTTL       = 5 * time.Minute
	DefaultStatsInterval  = 10 * time.Second

	DefaultLocalMaxBytes   = 64 << 20 // the local layer's bound in bytes, once it is on
	DefaultLocalMaxEntries = 100_000  // the local layer's bound in entries, once it is on
	DefaultLocalTTL        = time.Minute
	DefaultLocalHeartbeat  = time.Second
)

// Settings configures a Plugin. It mirrors django-cacheme's CACHEME dict.
// The zero value of every field is its documented default; New applies the
// defaults, and a value out of range makes the plugin's Err (and db.Use)
// fail.
type Settings struct {
	// Redis is the client every cache operation goes through. It is
	// required. Any redis.UniversalClient works: a single client, a
	// failover client or a Cluster client. The caller owns it and closes
	// it.
	Redis redis.UniversalClient

	// Disabled turns caching off (upstream ENABLE_CACHE=False): wrapped
	// functions call straight through and nothing is written to Redis.
	// Invalidation calls still run. Zero: caching is on.
	Disabled bool

	// Prefix starts every Redis key the plugin writes, meta keys included
	// (upstream REDIS_CACHE_PREFIX). It may not contain '>'. If empty,
	// defaults to "CM:".
	Prefix string

	// HerdRetryCount, if set, bounds how long a caller waits for a value
	// that another caller (of this process or another) is computing:
	// after HerdRetryCount × HerdRetryTime it computes the value itself,
	// without storing it (upstream THUNDERING_HERD_RETRY_COUNT; counted in
	// Stats as HerdTimeouts). Waiters never poll: they are woken when the
	// value lands. Zero (the default): no bound but the lease, so that
	// concurrent misses compute once however long the computation takes
	// (up to LeaseTTL, after which a waiter takes the lease over).
	HerdRetryCount int

	// HerdRetryTime is the unit of the HerdRetryCount bound (upstream
	// THUNDERING_HERD_RETRY_TIME). If zero, defaults to 20ms.
	HerdRetryTime time.Duration

	// NoStale turns stale serving off globally (upstream STALE=False): after
	// an invalidation the old value is gone and concurrent readers wait for
	// the recompute. Zero: stale serving is on, so concurrent readers get
	// the previous value at once while one caller recomputes. A function's
	// spec or a node can override it.
	NoStale bool

	// StaleTTL is how long an invalidated value is kept for stale serving:
	// at most this long after its invalidation (never past its own TTL)
	// it may be served to concurrent readers while one recomputes it; then
	// it is gone. A value of a function or node with stale serving off is
	// deleted by its invalidation. If zero, defaults to 5m.
	StaleTTL time.Duration

	// TTL is how long a computed value stays valid when its function or
	// node sets no TTL. Every cached value expires: nothing in Redis grows
	// without bound. If zero, defaults to 24h. The precision is one
	// millisecond.
	TTL time.Duration

	// LeaseTTL bounds how long one computation may hold the right to store
	// its result. A result computed for longer is returned to its caller
	// but not cached, and a crashed process blocks nobody for longer than
	// this. Every process sharing a Prefix must use the same LeaseTTL. If
	// zero, defaults to 10s.
	LeaseTTL time.Duration

	// FlushTimeout bounds how long a committed GORM write waits for its
	// invalidation (retries included) before it returns. An invalidation
	// still running then goes on in the background and is reported if it
	// fails. If zero, defaults to 1s.
	FlushTimeout time.Duration

	// Outbox records every committed write's invalidation in the database,
	// in the write's own transaction (the table OutboxTable, created by
	// migrations.Up), and deletes the record once the invalidation is
	// delivered; what is left (Redis down, the writer killed after its
	// COMMIT) is delivered by Replay, which the plugin runs when db.Use
	// initializes it and every ReplayInterval. It costs one INSERT per
	// invalidating transaction and one DELETE after it. A write made
	// outside a transaction (SkipDefaultTransaction) is recorded right
	// after its statement. Zero: off, a failed delivery is reported and
	// lost.
	Outbox bool

	// ReplayInterval is how often a plugin with Outbox replays the outbox.
	// If zero, defaults to 10s.
	ReplayInterval time.Duration

	// WaitReplicas makes an invalidation count as delivered only once that
	// many replicas of each Redis master it wrote acknowledged it (WAIT,
	// sent on the connection of the writes). An invalidation that fewer
	// replicas acknowledged within WaitTimeout is a failed delivery:
	// retried, and with Outbox kept for Replay, so that a failover to a
	// replica that never got it cannot bring the entries back. It works on
	// a single server, a failover (Sentinel) client and a Cluster, not on a
	// Ring. Zero: no WAIT (replication is asynchronous).
	WaitReplicas int

	// WaitTimeout bounds each WAIT. If zero, defaults to 100ms.
	WaitTimeout time.Duration

	// OpTimeout bounds each Redis call of a memoized call (read, lease,
	// store), together with the caller's context deadline; a call that
	// runs out counts as a Redis failure (fail-open: the function runs
	// without the cache). Give the client ContextTimeoutEnabled to have it
	// enforce the bound itself; otherwise the plugin stops waiting and
	// leaves the call to the client's ReadTimeout. A client whose
	// ReadTimeout and WriteTimeout are at most OpTimeout bounds each call
	// by itself, and the plugin adds nothing to it (the fastest hit).
	// Negative: no bound but the caller's deadline. If zero, defaults to
	// 500ms.
	OpTimeout time.Duration

	// BreakerFailures is how many memoized calls in a row must fail on
	// Redis for the circuit breaker to open: memoized calls then skip
	// Redis (ErrBreakerOpen) for BreakerCooldown, after which one call
	// probes it. Invalidations never skip Redis. Negative: no breaker. If
	// zero, defaults to 5.
	BreakerFailures int

	// BreakerCooldown is how long the open breaker skips Redis. If zero,
	// defaults to 1s.
	BreakerCooldown time.Duration

	// Codec encodes cached values. If nil, defaults to MsgpackCodec.
	Codec Codec

	// ErrorHook, if set, is called with every error the plugin handles
	// without returning it to the caller: Redis failures in fail-open mode,
	// corrupt values, failed invalidations after a commit. It must be safe
	// for concurrent use and should return quickly.
	ErrorHook func(ctx context.Context, err error)

	// InvalidationHook, if set, is called after the plugin invalidated the
	// groups a committed GORM write affected, with their names (e.g.
	// "Book:7", "User:12:books") and how many cached entries that hit. It
	// must be safe for concurrent use and should return quickly.
	InvalidationHook func(ctx context.Context, groups []string, entries int)

	// Tracer, if set, is told when a memoized function computes after a
	// miss, when its value is stored, and when a committed write's
	// invalidation runs (see Tracer): package tracing opens OpenTelemetry
	// spans for them, package metrics times the invalidations. Tracers
	// combines several.
	Tracer Tracer

	// StatsInterval is how often, at most, the plugin adds its counters
	// to Redis while they change, so that FleetStats (the admin page, the
	// command line) sums them over every process sharing the Prefix; Close
	// adds what is left. It costs one Redis call per interval of activity
	// and nothing while idle. Negative: off (PublishStats still works). If
	// zero, defaults to 10s.
	StatsInterval time.Duration

	// Local configures the optional in-process layer in front of Redis
	// (local.go): a valid value read from Redis is kept in this process,
	// and served from there without a Redis round trip until an
	// invalidation in any process sharing the Prefix evicts it. Zero (or
	// Disabled): off.
	Local LocalSettings

	// FailClosed makes a wrapped function return an error wrapping ErrRedis
	// when Redis cannot be read, instead of calling the function without
	// the cache (fail-open, the default). Failures after the function ran
	// (storing its result) are reported, never returned.
	FailClosed bool
}

// LocalSettings configures the local layer (Settings.Local, local.go). It
// is on when MaxBytes or MaxEntries is set; the zero value is off.
//
// With the layer on, the plugin keeps one Redis connection subscribed to
// the invalidations of its Prefix (one goroutine, stopped by Close), and a
// reader may get a value up to the delivery delay of an invalidation made
// by another process after that invalidation returned (see the README's
// "Local layer"). Not on a Ring: its scripts publish on the shard of their
// keys, and one subscription would miss the others.
type LocalSettings struct {
	// MaxBytes bounds the local layer's memory: the sum of each entry's
	// key, stored value and a fixed overhead per entry. If zero (with
	// MaxEntries set), defaults to 64 MiB.
	MaxBytes int64

	// MaxEntries bounds how many entries the local layer holds. If zero
	// (with MaxBytes set), defaults to 100 000.
	MaxEntries int

	// TTL bounds how long an entry stays in the local layer, never longer
	// than its function's TTL: a value that expires in Redis (which
	// publishes nothing) is gone locally within TTL. If zero, defaults to
	// 1m.
	TTL time.Duration

	// Heartbeat is how often the subscription is pinged while no message
	// comes: a connection that answers nothing for two heartbeats is
	// deemed lost, and the local layer is emptied and not used until it
	// is subscribed again. It bounds how long a silently dead connection
	// (no error, no reply) can keep serving entries whose invalidations it
	// misses. If zero, defaults to 1s.
	Heartbeat time.Duration
}

// on reports whether the local layer is configured.
func (l LocalSettings) on() bool { return l.MaxBytes != 0 || l.MaxEntries != 0 }

// withDefaults returns s with every zero field set to its default and checks
// the result. It is the one place defaults are applied.
func (s Settings) withDefaults() (Settings, error) {
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	if s.HerdRetryTime == 0 {
		s.HerdRetryTime = DefaultHerdRetryTime
	}
	if s.TTL == 0 {
		s.TTL = DefaultTTL
	}
	if s.StaleTTL == 0 {
		s.StaleTTL = DefaultStaleTTL
	}
	if s.LeaseTTL == 0 {
		s.LeaseTTL = DefaultLeaseTTL
	}
	if s.FlushTimeout == 0 {
		s.FlushTimeout = DefaultFlushTimeout
	}
	if s.ReplayInterval == 0 {
		s.ReplayInterval = DefaultReplayInterval
	}
	if s.WaitTimeout == 0 {
		s.WaitTimeout = DefaultWaitTimeout
	}
	if s.OpTimeout == 0 {
		s.OpTimeout = DefaultOpTimeout
	}
	if s.BreakerFailures == 0 {
		s.BreakerFailures = DefaultBreakerFails
	}
	if s.BreakerCooldown == 0 {
		s.BreakerCooldown = DefaultBreakerCool
	}
	if s.StatsInterval == 0 {
		s.StatsInterval = DefaultStatsInterval
	}
	if s.Codec == nil {
		s.Codec = MsgpackCodec{}
	}
	if s.Local.on() {
		if s.Local.MaxBytes == 0 {
			s.Local.MaxBytes = DefaultLocalMaxBytes
		}
		if s.Local.MaxEntries == 0 {
			s.Local.MaxEntries = DefaultLocalMaxEntries
		}
		if s.Local.TTL == 0 {
			s.Local.TTL = DefaultLocalTTL
		}
		if s.Local.Heartbeat == 0 {
			s.Local.Heartbeat = DefaultLocalHeartbeat
		}
	}
	switch {
	case s.Redis == nil:
		return s, ErrNoRedis
	case strings.Contains(s.Prefix, ">"):
		return s, fmt.Errorf("%w: Prefix %q contains '>'", ErrInvalidSettings, s.Prefix)
	case s.HerdRetryCount < 0:
		return s, fmt.Errorf("%w: HerdRetryCount %d is negative", ErrInvalidSettings, s.HerdRetryCount)
	case s.HerdRetryTime < 0:
		return s, fmt.Errorf("%w: HerdRetryTime %v is negative", ErrInvalidSettings, s.HerdRetryTime)
	case s.TTL < time.Millisecond:
		return s, fmt.Errorf("%w: TTL %v is under 1ms", ErrInvalidSettings, s.TTL)
	case s.StaleTTL < time.Millisecond:
		return s, fmt.Errorf("%w: StaleTTL %v is under 1ms", ErrInvalidSettings, s.StaleTTL)
	case s.FlushTimeout < 0:
		return s, fmt.Errorf("%w: FlushTimeout %v is negative", ErrInvalidSettings, s.FlushTimeout)
	case s.BreakerCooldown < 0:
		return s, fmt.Errorf("%w: BreakerCooldown %v is negative", ErrInvalidSettings, s.BreakerCooldown)
	case s.WaitReplicas < 0:
		return s, fmt.Errorf("%w: WaitReplicas %d is negative", ErrInvalidSettings, s.WaitReplicas)
	case s.WaitTimeout < 0:
		return s, fmt.Errorf("%w: WaitTimeout %v is negative", ErrInvalidSettings, s.WaitTimeout)
	case s.WaitReplicas > 0 && isRing(s.Redis):
		return s, fmt.Errorf("%w: WaitReplicas needs a client, failover client or Cluster client, not a Ring", ErrInvalidSettings)
	case s.ReplayInterval < 0:
		return s, fmt.Errorf("%w: ReplayInterval %v is negative", ErrInvalidSettings, s.ReplayInterval)
	case s.LeaseTTL < time.Millisecond:
		return s, fmt.Errorf("%w: LeaseTTL %v is under 1ms", ErrInvalidSettings, s.LeaseTTL)
	case s.Local.MaxBytes < 0 || s.Local.MaxEntries < 0:
		return s, fmt.Errorf("%w: Local.MaxBytes %d or Local.MaxEntries %d is negative", ErrInvalidSettings, s.Local.MaxBytes, s.Local.MaxEntries)
	case s.Local.on() && s.Local.MaxBytes < int64(s.Local.MaxEntries):
		return s, fmt.Errorf("%w: Local.MaxBytes %d is under Local.MaxEntries %d", ErrInvalidSettings, s.Local.MaxBytes, s.Local.MaxEntries)
	case s.Local.on() && s.Local.MaxBytes/int64(s.Local.MaxEntries) > math.MaxUint32:
		return s, fmt.Errorf("%w: Local.MaxBytes %d over Local.MaxEntries %d is more than 4 GiB an entry", ErrInvalidSettings, s.Local.MaxBytes, s.Local.MaxEntries)
	case s.Local.TTL < 0 || s.Local.Heartbeat < 0:
		return s, fmt.Errorf("%w: Local.TTL %v or Local.Heartbeat %v is negative", ErrInvalidSettings, s.Local.TTL, s.Local.Heartbeat)
	case s.Local.on() && isRing(s.Redis):
		return s, fmt.Errorf("%w: Local needs a client, failover client or Cluster client, not a Ring", ErrInvalidSettings)
	}
	return s, nil
}

func isRing(c redis.UniversalClient) bool {
	_, ok := c.(*redis.Ring)
	return ok
}
