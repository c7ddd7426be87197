package cacheme_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
)

func TestNewInvalidSettings(t *testing.T) {
	rdb := deadRedis(t) // New does not contact Redis
	tests := []struct {
		name string
		s    cacheme.Settings
	}{
		{"Prefix with '>'", cacheme.Settings{Prefix: "a>b:"}},
		{"negative HerdRetryCount", cacheme.Settings{HerdRetryCount: -1}},
		{"negative HerdRetryTime", cacheme.Settings{HerdRetryTime: -time.Millisecond}},
		{"negative TTL", cacheme.Settings{TTL: -time.Second}},
		{"TTL under 1ms", cacheme.Settings{TTL: 999 * time.Microsecond}},
		{"negative LeaseTTL", cacheme.Settings{LeaseTTL: -time.Second}},
		{"LeaseTTL under 1ms", cacheme.Settings{LeaseTTL: time.Nanosecond}},
		{"negative FlushTimeout", cacheme.Settings{FlushTimeout: -time.Second}},
		{"negative ReplayInterval", cacheme.Settings{ReplayInterval: -time.Second}},
		{"negative WaitReplicas", cacheme.Settings{WaitReplicas: -1}},
		{"negative BreakerCooldown", cacheme.Settings{BreakerCooldown: -time.Second}},
		{"negative WaitTimeout", cacheme.Settings{WaitTimeout: -time.Second}},
		{"negative Local.MaxBytes", cacheme.Settings{Local: cacheme.LocalSettings{MaxBytes: -1}}},
		{"negative Local.MaxEntries", cacheme.Settings{Local: cacheme.LocalSettings{MaxEntries: -1}}},
		{"Local.MaxBytes under Local.MaxEntries", cacheme.Settings{Local: cacheme.LocalSettings{MaxBytes: 10, MaxEntries: 11}}},
		{"negative Local.TTL", cacheme.Settings{Local: cacheme.LocalSettings{MaxEntries: 1, TTL: -1}}},
		{"negative Local.Heartbeat", cacheme.Settings{Local: cacheme.LocalSettings{MaxEntries: 1, Heartbeat: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Redis = rdb
			assertConfigError(t, cacheme.New(tt.s), cacheme.ErrInvalidSettings)
		})
	}
}

// New applies the defaults to zero fields and keeps the others; Settings
// returns the result (upstream #2: update_settings, then settings.foo).
func TestNewSettings(t *testing.T) {
	rdb := deadRedis(t)
	hook := func(context.Context, error) {}
	tests := []struct {
		name string
		in   cacheme.Settings
		want cacheme.Settings
	}{
		{"defaults", cacheme.Settings{}, cacheme.Settings{
			Prefix: "CM:", HerdRetryTime: 20 * time.Millisecond, StaleTTL: 5 * time.Minute,
			TTL: 24 * time.Hour, LeaseTTL: 10 * time.Second, FlushTimeout: time.Second, ReplayInterval: 10 * time.Second,
			WaitTimeout: 100 * time.Millisecond, OpTimeout: 500 * time.Millisecond, BreakerFailures: 5, BreakerCooldown: time.Second,
			Codec: cacheme.MsgpackCodec{}, StatsInterval: 10 * time.Second,
		}},
		{"explicit", cacheme.Settings{
			Disabled: true, Prefix: "MY:", HerdRetryCount: 7, HerdRetryTime: time.Second, NoStale: true,
			TTL: time.Millisecond, StaleTTL: time.Hour, LeaseTTL: time.Minute, FlushTimeout: time.Minute, Codec: cacheme.JSONCodec{}, FailClosed: true,
			Outbox: true, ReplayInterval: time.Minute, WaitReplicas: 2, WaitTimeout: time.Second,
			OpTimeout: time.Second, BreakerFailures: 3, BreakerCooldown: time.Minute, StatsInterval: -1,
		}, cacheme.Settings{
			Disabled: true, Prefix: "MY:", HerdRetryCount: 7, HerdRetryTime: time.Second, NoStale: true,
			TTL: time.Millisecond, StaleTTL: time.Hour, LeaseTTL: time.Minute, FlushTimeout: time.Minute, Codec: cacheme.JSONCodec{}, FailClosed: true,
			Outbox: true, ReplayInterval: time.Minute, WaitReplicas: 2, WaitTimeout: time.Second,
			OpTimeout: time.Second, BreakerFailures: 3, BreakerCooldown: time.Minute, StatsInterval: -1,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Redis = rdb
			tt.in.ErrorHook = hook
			p := cacheme.New(tt.in)
			err := p.Err()
			ok(t, err)
			got := p.Settings()
			if got.Redis != rdb {
				t.Fatalf("Settings().Redis = %v; want the client given", got.Redis)
			}
			if got.ErrorHook == nil {
				t.Fatal("Settings().ErrorHook = nil; want the hook given")
			}
			got.Redis, got.ErrorHook = nil, nil
			deepEquals(t, got, tt.want)
		})
	}
	equals(t, cacheme.DefaultPrefix, "CM:")
	equals(t, cacheme.DefaultHerdRetryCount, 0)
	equals(t, cacheme.DefaultHerdRetryTime, 20*time.Millisecond)
	equals(t, cacheme.DefaultTTL, 24*time.Hour)
	equals(t, cacheme.DefaultLeaseTTL, 10*time.Second)
}

// The local layer is off by default; either bound turns it on, with the
// other bound, its TTL and its heartbeat defaulted. A Ring cannot have it.
func TestNewLocalSettings(t *testing.T) {
	rdb := deadRedis(t)
	equals(t, cacheme.New(cacheme.Settings{Redis: rdb, StatsInterval: -1}).Settings().Local, cacheme.LocalSettings{})
	tests := []struct {
		in, want cacheme.LocalSettings
	}{
		{cacheme.LocalSettings{MaxBytes: 1 << 20}, cacheme.LocalSettings{MaxBytes: 1 << 20, MaxEntries: 100_000, TTL: time.Minute, Heartbeat: time.Second}},
		{cacheme.LocalSettings{MaxEntries: 10}, cacheme.LocalSettings{MaxBytes: 64 << 20, MaxEntries: 10, TTL: time.Minute, Heartbeat: time.Second}},
		{cacheme.LocalSettings{MaxBytes: 5, MaxEntries: 5, TTL: time.Hour, Heartbeat: time.Millisecond}, cacheme.LocalSettings{MaxBytes: 5, MaxEntries: 5, TTL: time.Hour, Heartbeat: time.Millisecond}},
	}
	for _, tt := range tests {
		p := cacheme.New(cacheme.Settings{Redis: rdb, StatsInterval: -1, Local: tt.in})
		ok(t, p.Err())
		equals(t, p.Settings().Local, tt.want)
		ok(t, p.Close(bg)) // stops the subscriber, which never got through
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	assertConfigError(t, cacheme.New(cacheme.Settings{Redis: ring, Local: cacheme.LocalSettings{MaxEntries: 10}}), cacheme.ErrInvalidSettings)
}

// The default prefix starts the keys in Redis.
func TestNewDefaultPrefix(t *testing.T) {
	rdb, _ := testRedis(t)
	p := cacheme.New(cacheme.Settings{Redis: rdb, TTL: time.Minute})
	err := p.Err()
	ok(t, err)
	// Keys below "CM:" that are this test's own.
	own := uniquePrefix()
	t.Cleanup(func() { rdb.Del(context.Background(), "CM:"+own+"k>", "CM:"+own+"k>f>", "CM:"+own+"t:tag") })
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return own + "k>f" }, Tag: own + "t"}, identity)
	equals(t, call(t, f, 1), 1)
	deepEquals(t, scanKeys(t, rdb, "CM:"+own), []string{"CM:" + own + "k>", "CM:" + own + "k>f>", "CM:" + own + "t:tag"})
}

// assertConfigError checks that a plugin with a bad configuration reports
// it, as the same sentinel, from every call that needs a valid plugin, and
// never panics.
func assertConfigError(t *testing.T, p *cacheme.Plugin, want error) {
	t.Helper()
	ctx := context.Background()
	isErr(t, p.Err(), want)
	db := testenv.DB(t, gorm.Config{})
	isErr(t, db.Use(p), want)
	_, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(int) string { return "k" }}, identity)
	isErr(t, err, want)
	_, err = cacheme.WrapNode(p, cacheme.NodeSpec[int, BasicNode, int]{Node: func(int) BasicNode { return BasicNode{} }}, identity)
	isErr(t, err, want)
	calls := []struct {
		name string
		call func() error
	}{
		{"InvalidateKeys", func() error { _, err := p.InvalidateKeys(ctx, "k"); return err }},
		{"InvalidateGroups", func() error { _, err := p.InvalidateGroups(ctx, "g"); return err }},
		{"InvalidateTag", func() error { _, err := p.InvalidateTag(ctx, "t"); return err }},
		{"InvalidateNodes", func() error { _, err := p.InvalidateNodes(ctx, BasicNode{}); return err }},
		{"InvalidateModels", func() error { _, err := p.InvalidateModels(ctx, &User{ID: 1}); return err }},
		{"RegisterM2M", func() error { return p.RegisterM2M() }},
		{"RegisterNodes", func() error { return p.RegisterNodes() }},
		{"Nodes.Get", func() error { _, err := cacheme.Nodes[BasicNode, int](p).Get(ctx, BasicNode{}); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, want) {
			t.Errorf("%s: got %v; want %v", c.name, err, want)
		}
	}
}

// A plugin without Redis, and a nil plugin, fail every call clearly: the
// one-line form db.Use(cacheme.New(s)) reports it from db.Use.
func TestConfigErrorEverywhere(t *testing.T) {
	t.Run("no Redis", func(t *testing.T) { assertConfigError(t, cacheme.New(cacheme.Settings{}), cacheme.ErrNoRedis) })
	t.Run("nil plugin", func(t *testing.T) { assertConfigError(t, nil, cacheme.ErrInvalidSpec) })
}
