package cacheme

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
)

// Name is the plugin's name in GORM, and the prefix of its callbacks.
const Name = "cacheme"

var _ gorm.Plugin = (*Plugin)(nil)

// Plugin memoizes function results in Redis and invalidates them. It is a
// GORM plugin (db.Use(p)), and also works without GORM. A Plugin is safe for
// concurrent use.
type Plugin struct {
	set     Settings              // with defaults applied
	rdb     redis.UniversalClient // set.Redis
	reg     registry              // tags and counters
	bind    bindings              // model, node and m2m registrations
	tokenID string                // random, makes lease tokens unique across processes
	tokenN  atomic.Uint64         // lease token counter

	flushing chan struct{} // one token per flush running (maxBackground)
}

// New returns a plugin configured by s. It fails if s has no Redis client or
// a setting is out of range. New does not contact Redis.
func New(s Settings) (*Plugin, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Plugin{set: s, rdb: s.Redis, tokenID: hex.EncodeToString(b[:]), flushing: make(chan struct{}, maxBackground)}, nil
}

// Name returns "cacheme".
func (p *Plugin) Name() string { return Name }

// Initialize registers the plugin's callbacks with db. GORM calls it from
// db.Use.
// It checks the relations and nodes registered with RegisterM2M and
// RegisterNodes against db's schemas, registers the callbacks and wraps db's
// connection pool so that transactions invalidate after their COMMIT. Use
// the plugin with one *gorm.DB (and the sessions made from it), and call
// db.Use right after gorm.Open: sessions made before it do not invalidate
// after commit.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if err := p.bind.resolve(db); err != nil {
		return err
	}
	if err := p.registerCallbacks(db); err != nil {
		return err
	}
	p.wrapPool(db)
	return nil
}

// Settings returns the plugin's settings, with defaults applied.
func (p *Plugin) Settings() Settings { return p.set }

// token returns a new lease token, unique across processes.
func (p *Plugin) token() string {
	return p.tokenID + ":" + strconv.FormatUint(p.tokenN.Add(1), 36)
}

// report passes an error the caller does not get to the error hook.
func (p *Plugin) report(ctx context.Context, err error) {
	if err != nil && p.set.ErrorHook != nil {
		p.set.ErrorHook(ctx, err)
	}
}
