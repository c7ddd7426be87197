package cacheme_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// testRedis returns a Redis client for a test: the server named by
// CACHEME_TEST_REDIS when it is set (the test fails if it is unreachable),
// otherwise an in-process miniredis. The second result is the miniredis
// server, or nil on a real server.
func testRedis(t testing.TB) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	if url := os.Getenv("CACHEME_TEST_REDIS"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Fatalf("CACHEME_TEST_REDIS=%q: %v", url, err)
		}
		c := redis.NewClient(opt)
		t.Cleanup(func() { c.Close() })
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("CACHEME_TEST_REDIS=%q is set but unreachable: %v", url, err)
		}
		return c, nil
	}
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	return c, m
}

// uniquePrefix isolates a test's keys on a shared Redis without flushing it.
func uniquePrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "T" + hex.EncodeToString(b[:]) + ":"
}

// newPlugin returns a plugin on a test Redis with a prefix of its own; s may
// set anything but Redis and Prefix. Test keys expire within a minute.
func newPlugin(t testing.TB, s cacheme.Settings) (*cacheme.Plugin, redis.UniversalClient) {
	t.Helper()
	rdb, _ := testRedis(t)
	return newPluginOn(t, rdb, s), rdb
}

// newPluginOn returns a plugin on rdb with a fresh prefix unless s has one.
func newPluginOn(t testing.TB, rdb redis.UniversalClient, s cacheme.Settings) *cacheme.Plugin {
	t.Helper()
	s.Redis = rdb
	if s.Prefix == "" {
		s.Prefix = uniquePrefix()
	}
	if s.TTL == 0 {
		s.TTL = time.Minute
	}
	p, err := cacheme.New(s)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// counter is a function to memoize that returns how often it ran.
type counter struct{ n atomic.Int64 }

func (c *counter) fn(ctx context.Context, _ int) (int64, error) { return c.n.Add(1), nil }

// commandCounter counts the commands a client sends (pipelines count each
// command) and the round trips (a pipeline counts once).
type commandCounter struct {
	mu         sync.Mutex
	cmds       []string
	roundTrips int
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.cmds = append(c.cmds, cmd.Name())
		c.roundTrips++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		for _, cmd := range cmds {
			c.cmds = append(c.cmds, cmd.Name())
		}
		c.roundTrips++
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (c *commandCounter) reset() {
	c.mu.Lock()
	c.cmds, c.roundTrips = nil, 0
	c.mu.Unlock()
}

func (c *commandCounter) get() (cmds []string, roundTrips int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.cmds...), c.roundTrips
}

func ok(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("unexpected error: %v", err)
	}
}

func equals[T comparable](tb testing.TB, got, want T) {
	tb.Helper()
	if got != want {
		tb.Fatalf("got %v; want %v", got, want)
	}
}
