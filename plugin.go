package cacheme

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"gorm.io/gorm"
)

// Name is the plugin's name in GORM, and the prefix of its callbacks.
const Name = "cacheme"

var _ gorm.Plugin = (*Plugin)(nil)

// Plugin memoizes function results in Redis and invalidates them. It is a
// GORM plugin (db.Use(cacheme.New(s))), and also works without GORM. A
// Plugin is safe for concurrent use.
type Plugin struct {
	set     Settings              // with defaults applied
	err     error                 // the configuration error New found, if any
	rdb     redis.UniversalClient // set.Redis
	reg     registry              // tags and counters
	bind    bindings              // model, node and m2m registrations
	schemes schemeCache           // query schemes registered lately (schemes.go)
	queries queryPolicies         // per-model query cache registrations (querycache.go)

	rowsDBOnce sync.Once     // opens rowsDB
	rowsDB     *sql.DB       // the query cache's replay database (rowset.go); closed by Close
	tokenID    string        // random, makes lease tokens unique across processes
	tokenN     atomic.Uint64 // lease token counter

	breaker       *gobreaker.TwoStepCircuitBreaker[struct{}] // nil when off
	healthy       atomic.Bool                                // see allow
	reportHealthy func(error)                                // p.healthyReport, made once
	clientBound   time.Duration                              // see clientBound
	flights       flights                                    // in-process herd protection (flight.go)
	leaseArg      any                                        // LeaseTTL in ms, boxed once for the fast path
	maxBlock      time.Duration                              // the longest BLPOP rdb allows (see maxBlock)
	ctxTimeouts   bool                                       // rdb honours context deadlines

	flushing chan struct{}  // one token per flush running (maxBackground)
	flushMu  sync.Mutex     // orders flushes.Add before Close's flushes.Wait
	flushes  sync.WaitGroup // every flush started before Close
	closed   atomic.Bool    // set by Close, under flushMu

	replayStop chan struct{} // closed by Close to stop replayLoop (Outbox)
	replayDone chan struct{} // closed when replayLoop returns
	stopOnce   sync.Once

	pub publisher // publishes the counters (fleetstats.go)

	local *local // the local layer (Settings.Local); nil when off
}

// New returns a plugin configured by s, ready for db.Use(cacheme.New(s)).
// New does not contact Redis (with Settings.Local it starts the goroutine
// that subscribes, in the background) and never returns nil. A configuration that
// cannot work (no Redis client, a setting out of range) is not lost: Err
// returns it, and db.Use, Wrap, WrapNode and every call that needs a valid
// plugin return it too, wrapping ErrNoRedis or ErrInvalidSettings.
func New(s Settings) *Plugin {
	s, err := s.withDefaults()
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := &Plugin{set: s, err: err, rdb: s.Redis, tokenID: hex.EncodeToString(b[:]), flushing: make(chan struct{}, maxBackground)}
	if err == nil {
		p.breaker, p.ctxTimeouts, p.clientBound = newBreaker(s), contextTimeouts(s.Redis), clientBound(s.Redis)
		p.reportHealthy = p.healthyReport
		p.healthy.Store(true)
		p.leaseArg, p.maxBlock = strconv.FormatInt(ms(s.LeaseTTL), 10), maxBlock(s.Redis)
		if s.StatsInterval > 0 {
			p.startPublisher()
		}
		if s.Local.on() && !s.Disabled {
			p.startLocal() // its goroutine subscribes; Close stops it
		}
	}
	return p
}

// Err returns the configuration error New found (wrapping ErrNoRedis or
// ErrInvalidSettings), ErrClosed after Close, or nil.
func (p *Plugin) Err() error {
	switch {
	case p == nil:
		return errNilPlugin
	case p.err != nil:
		return p.err
	case p.closed.Load():
		return ErrClosed
	}
	return nil
}

// errNilPlugin is what every call on a nil *Plugin returns.
var errNilPlugin = fmt.Errorf("%w: nil *Plugin", ErrInvalidSpec)

// Name returns "cacheme".
func (p *Plugin) Name() string { return Name }

// Initialize registers the plugin's callbacks with db. GORM calls it from
// db.Use, which returns its error: the configuration error New found, or a
// registration (RegisterM2M, RegisterNodes) that does not match db's
// schemas.
// It registers the callbacks and wraps db's connection pool so that
// transactions invalidate after their COMMIT. Use the plugin with one
// *gorm.DB (and the sessions made from it), and call db.Use right after
// gorm.Open: sessions made before it do not invalidate after commit.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if err := p.Err(); err != nil {
		return err
	}
	if err := p.bind.resolve(db); err != nil {
		return err
	}
	if err := p.registerCallbacks(db); err != nil {
		return err
	}
	p.wrapPool(db)
	if p.set.Outbox {
		// Close stops it (as it stops the local layer's subscriber).
		p.replayStop, p.replayDone = make(chan struct{}), make(chan struct{})
		go p.replayLoop()
	}
	return nil
}

// Settings returns the plugin's settings, with defaults applied.
func (p *Plugin) Settings() Settings {
	if p == nil {
		return Settings{}
	}
	return p.set
}

// Close stops the outbox replay (Settings.Outbox) and the local layer's
// subscription (Settings.Local), and waits for the
// invalidations still running in the background (see
// Settings.FlushTimeout) to finish, then publishes the counters not yet
// published (Settings.StatsInterval), or stops waiting when ctx is done,
// whichever comes first, and returns ctx's error in the latter case. After Close, memoized
// calls, invalidations and GORM writes through the plugin fail with
// ErrClosed. Close does not close the Redis client: the caller owns it.
// Calling Close again waits again.
func (p *Plugin) Close(ctx context.Context) error {
	if p == nil {
		return errNilPlugin
	}
	p.flushMu.Lock()
	p.closed.Store(true) // no flushes.Add after this (see flush)
	p.flushMu.Unlock()
	done := make(chan struct{})
	go func() {
		if p.replayStop != nil {
			p.stopOnce.Do(func() { close(p.replayStop) })
			<-p.replayDone
		}
		p.flushes.Wait()
		if p.local != nil {
			p.local.close()
		}
		p.rowsDBOnce.Do(func() {}) // no replay database opens after Close
		if p.rowsDB != nil {
			_ = p.rowsDB.Close()
		}
		p.stopPublisher(ctx)
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cacheme: Close: invalidations still running: %w", ctx.Err())
	}
}

// report passes an error the caller does not get to the error hook.
func (p *Plugin) report(ctx context.Context, err error) {
	if err != nil && p.set.ErrorHook != nil {
		p.set.ErrorHook(ctx, err)
	}
}

// Of returns the plugin db uses (db.Use(cacheme.New(s))), or nil if it uses
// none; every call on a nil plugin fails with an error wrapping
// ErrInvalidSpec.
func Of(db *gorm.DB) *Plugin {
	if db == nil || db.Config == nil {
		return nil
	}
	p, _ := db.Config.Plugins[Name].(*Plugin)
	return p
}
