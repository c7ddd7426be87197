package cacheme_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
)

// testRedis returns a Redis client for a test: the server named by
// CACHEME_TEST_REDIS when it is set (the test fails if it is unreachable),
// otherwise an in-process miniredis, also returned (nil on a real server).
// TestMain fails the package's tests if any goroutine is left running
// after them (background flushes included). GORM's prepared-statement
// cache starts a goroutine per *gorm.DB that nothing stops.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"))
}

// testDB opens a database for a test (see testenv.DB).
func testDB(t testing.TB, cfg gorm.Config) *gorm.DB {
	t.Helper()
	return testenv.DB(t, cfg)
}

var bg = context.Background()

func testRedis(t testing.TB) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	return testenv.Redis(t)
}

// uniquePrefix isolates a test's keys on a shared Redis without flushing it.
func uniquePrefix() string { return testenv.Prefix() }

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
	// Redis calls and after-commit invalidations wait as long as a slow
	// server takes (miniredis runs every script in a fresh Lua VM, which
	// the race detector slows down a lot): tests of these bounds set them.
	if s.OpTimeout == 0 {
		s.OpTimeout = 30 * time.Second
	}
	if s.FlushTimeout == 0 {
		s.FlushTimeout = 30 * time.Second
	}
	p := cacheme.New(s)
	if err := p.Err(); err != nil {
		t.Fatalf("New: %v", err)
	}
	// Closed last (cleanups run in reverse), so that no flush or replay
	// outlives the test.
	t.Cleanup(func() { _ = p.Close(context.Background()) })
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

// mustWrap is cacheme.Wrap that fails the test on error.
func mustWrap[A, R any](tb testing.TB, p *cacheme.Plugin, spec cacheme.Spec[A, R], fn func(context.Context, A) (R, error)) func(context.Context, A) (R, error) {
	tb.Helper()
	f, err := cacheme.Wrap(p, spec, fn)
	if err != nil {
		tb.Fatalf("Wrap: %v", err)
	}
	return f
}

// call runs a memoized function and fails the test on error.
func call[A, R any](tb testing.TB, f func(context.Context, A) (R, error), a A) R {
	tb.Helper()
	r, err := f(context.Background(), a)
	if err != nil {
		tb.Fatalf("call(%v): %v", a, err)
	}
	return r
}

// identity is a function to memoize that returns its argument.
func identity(_ context.Context, n int) (int, error) { return n, nil }

// deepEquals fails unless got and want are reflect.DeepEqual.
func deepEquals(tb testing.TB, got, want any) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("got %#v; want %#v", got, want)
	}
}

// isErr fails unless errors.Is(err, target).
func isErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("got error %v; want %v", err, target)
	}
}

// scanKeys returns the sorted keys that start with prefix (a test's own
// prefix: nothing else is scanned).
func scanKeys(tb testing.TB, rdb redis.UniversalClient, prefix string) []string {
	tb.Helper()
	var keys []string
	iter := rdb.Scan(context.Background(), 0, prefix+"*", 100).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Fatalf("SCAN %s*: %v", prefix, err)
	}
	sort.Strings(keys)
	return keys
}

// errRecorder collects the errors passed to Settings.ErrorHook.
type errRecorder = testenv.Errors

// deadRedis returns a client of a Redis that is down: nothing listens on
// port 1. It works the same with miniredis and a real server.
func deadRedis(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: "127.0.0.1:1", MaxRetries: -1,
		DialerRetries: 1, DialerRetryTimeout: time.Millisecond,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
	})
	tb.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds, and fails the test after 5s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gate pauses a loader: wait signals started (once) and blocks until open
// is called.
type gate struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
	opened  sync.Once
}

func newGate() *gate {
	return &gate{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) wait() {
	g.once.Do(func() { close(g.started) })
	<-g.release
}

func (g *gate) open() { g.opened.Do(func() { close(g.release) }) }

// awaitStarted blocks until a loader paused on g has started.
func (g *gate) awaitStarted(tb testing.TB) {
	tb.Helper()
	select {
	case <-g.started:
	case <-time.After(5 * time.Second):
		tb.Fatalf("the loader did not start")
	}
}

// result is what one call of a memoized function returned.
type result[R any] struct {
	v   R
	err error
}

// goCall runs f(a) in a goroutine; the channel delivers its result.
func goCall[A, R any](f func(context.Context, A) (R, error), a A) <-chan result[R] {
	ch := make(chan result[R], 1)
	go func() {
		v, err := f(context.Background(), a)
		ch <- result[R]{v, err}
	}()
	return ch
}

// recv waits (at most 5s) for the result of a goCall.
func recv[R any](tb testing.TB, ch <-chan result[R]) result[R] {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		tb.Fatalf("the call did not return")
		panic("unreachable")
	}
}

// faultHook injects Redis failures into a client (rdb.AddHook), the same on
// miniredis and a real server: while on is set every command fails; the
// next pipelines pipelines fail; then, after skip pipelines pass, the next
// lost pipelines run on the server but their replies are lost (the client
// sees errors).
type faultHook struct {
	on        atomic.Bool
	pipelines atomic.Int64
	skip      atomic.Int64
	lost      atomic.Int64
}

var errInjected = errors.New("injected redis failure")

func (h *faultHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *faultHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (h *faultHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "client" {
			// A new connection's setup: not one of the plugin's pipelines.
			return next(ctx, cmds)
		}
		if h.on.Load() || h.pipelines.Add(-1) >= 0 {
			for _, cmd := range cmds {
				cmd.SetErr(errInjected)
			}
			return errInjected
		}
		err := next(ctx, cmds)
		if h.skip.Add(-1) < 0 && h.lost.Add(-1) >= 0 {
			for _, cmd := range cmds {
				cmd.SetErr(errInjected)
			}
			return errInjected
		}
		return err
	}
}

// hangingRedis returns a client of a server that accepts connections but
// never answers (its read timeout is 2s), and a func that closes its
// connections, after which every call fails at once.
func hangingRedis(t *testing.T) (redis.UniversalClient, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ok(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	release := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(release)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // hold it open, answer nothing
			mu.Unlock()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	return rdb, release
}

// setMembers returns the members of a group, tag or hash-index set without
// its version member (see luaJoin in scripts.go).
func setMembers(m []string) []string {
	return slices.DeleteFunc(m, func(s string) bool { return s == "\x01" })
}

// settle waits until a computation starting now is sure to be stored. A
// computation that starts just after an invalidation of one of its groups
// may be returned but not stored: a lease taken by the hit path's SET NX is
// timed by the server to the millisecond only, and within that millisecond
// the store orders the two by a lower bound of the computation's start on
// the server's clock, which errs by about the store's round trip (see
// storeScript). Tests that write, then expect the next computation to be
// cached, wait a little first.
func settle() { time.Sleep(2 * time.Millisecond) }
