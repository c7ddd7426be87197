package cacheme_test

import (
	"context"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Redis = rdb
			p, err := cacheme.New(tt.s)
			isErr(t, err, cacheme.ErrInvalidSettings)
			if p != nil {
				t.Fatalf("got plugin %v; want nil", p)
			}
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
			Prefix: "CM:", HerdRetryCount: 5, HerdRetryTime: 20 * time.Millisecond,
			TTL: 24 * time.Hour, LeaseTTL: 10 * time.Second, FlushTimeout: time.Second, Codec: cacheme.MsgpackCodec{},
		}},
		{"explicit", cacheme.Settings{
			Disabled: true, Prefix: "MY:", HerdRetryCount: 7, HerdRetryTime: time.Second, NoStale: true,
			TTL: time.Millisecond, LeaseTTL: time.Minute, FlushTimeout: time.Minute, Codec: cacheme.JSONCodec{}, FailClosed: true,
		}, cacheme.Settings{
			Disabled: true, Prefix: "MY:", HerdRetryCount: 7, HerdRetryTime: time.Second, NoStale: true,
			TTL: time.Millisecond, LeaseTTL: time.Minute, FlushTimeout: time.Minute, Codec: cacheme.JSONCodec{}, FailClosed: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Redis = rdb
			tt.in.ErrorHook = hook
			p, err := cacheme.New(tt.in)
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
	equals(t, cacheme.DefaultHerdRetryCount, 5)
	equals(t, cacheme.DefaultHerdRetryTime, 20*time.Millisecond)
	equals(t, cacheme.DefaultTTL, 24*time.Hour)
	equals(t, cacheme.DefaultLeaseTTL, 10*time.Second)
}

// The default prefix starts the keys in Redis.
func TestNewDefaultPrefix(t *testing.T) {
	rdb, _ := testRedis(t)
	p, err := cacheme.New(cacheme.Settings{Redis: rdb, TTL: time.Minute})
	ok(t, err)
	// Keys below "CM:" that are this test's own.
	own := uniquePrefix()
	t.Cleanup(func() { rdb.Del(context.Background(), "CM:"+own+"k", "CM:"+own+"t:tag") })
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return own + "k>f" }, Tag: own + "t"}, identity)
	equals(t, call(t, f, 1), 1)
	deepEquals(t, scanKeys(t, rdb, "CM:"+own), []string{"CM:" + own + "k", "CM:" + own + "t:tag"})
}
