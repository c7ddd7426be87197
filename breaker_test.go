package cacheme_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// A Redis that accepts connections but never answers holds a memoized
// call no longer than OpTimeout (the client's own ReadTimeout is 2s), and
// the caller's deadline bounds it too: fail-open, the function's value is
// returned.
func TestOpTimeout(t *testing.T) {
	rdb, _ := hangingRedis(t)
	tests := []struct {
		name  string
		s     cacheme.Settings
		ctx   func() (context.Context, context.CancelFunc)
		limit time.Duration
	}{
		{"OpTimeout", cacheme.Settings{OpTimeout: 50 * time.Millisecond, BreakerFailures: -1},
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, time.Second},
		{"caller's deadline", cacheme.Settings{OpTimeout: -1, BreakerFailures: -1},
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &errRecorder{}
			tt.s.ErrorHook = rec.Hook
			p := newPluginOn(t, rdb, tt.s)
			var c counter
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "slow" }}, c.fn)
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			v, err := f(ctx, 0)
			took := time.Since(start)
			if tt.name == "OpTimeout" {
				ok(t, err)
				equals(t, v, 1) // fail-open: computed without the cache
				if !rec.Has(context.DeadlineExceeded) {
					t.Fatalf("reported %v; want the deadline", rec.All())
				}
			} else {
				isErr(t, err, context.DeadlineExceeded) // the caller gave up
			}
			if took >= tt.limit {
				t.Fatalf("the call took %v with Redis hanging; want well under the client's 2s ReadTimeout", took)
			}
		})
	}
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

// After BreakerFailures failures in a row the breaker skips Redis: calls
// run the function at once without sending anything (counted in
// BreakerSkips); fail-closed ones return ErrBreakerOpen. After the
// cool-down one call probes Redis, and once it answers the cache is used
// again. Invalidations never skip Redis.
func TestBreaker(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		name := "fail-open"
		if failClosed {
			name = "fail-closed"
		}
		t.Run(name, func(t *testing.T) {
			rdb, _ := testRedis(t)
			fault := &faultHook{}
			sent := &countingHook{}
			rdb.(*redis.Client).AddHook(sent)
			rdb.(*redis.Client).AddHook(fault)
			p := newPluginOn(t, rdb, cacheme.Settings{BreakerFailures: 3, BreakerCooldown: 50 * time.Millisecond, FailClosed: failClosed})
			var c counter
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "b" }}, c.fn)
			equals(t, call(t, f, 0), 1)
			fault.on.Store(true)
			for range 3 {
				_, err := f(bg, 0)
				if failClosed {
					isErr(t, err, cacheme.ErrRedis)
				}
			}
			before := sent.n.Load()
			for range 10 {
				_, err := f(bg, 0)
				if failClosed {
					isErr(t, err, cacheme.ErrBreakerOpen)
				} else {
					ok(t, err)
				}
			}
			equals(t, sent.n.Load(), before) // nothing sent while open
			equals(t, p.Stats().Total.BreakerSkips, 10)
			// An invalidation still goes to Redis.
			_, err := p.InvalidateKeys(bg, "b")
			isErr(t, err, cacheme.ErrRedis)
			if sent.n.Load() == before {
				t.Fatal("the invalidation skipped Redis")
			}
			fault.on.Store(false)
			time.Sleep(60 * time.Millisecond) // the cool-down
			hits := p.Stats().Total.Hits
			// The probe: Redis answers with the value cached before the
			// outage (the invalidation above failed), and the breaker
			// closes.
			equals(t, call(t, f, 0), 1)
			equals(t, call(t, f, 0), 1)
			equals(t, p.Stats().Total.Hits, hits+2)
		})
	}
}

// BenchmarkBreakerOpen measures a memoized call while Redis is down and the
// breaker is open: the function runs without the cache.
func BenchmarkBreakerOpen(b *testing.B) {
	p := newPluginOn(b, deadRedis(b), cacheme.Settings{BreakerFailures: 1, BreakerCooldown: time.Hour})
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(int) string { return "down" }}, identity)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = f(bg, 1) // trips the breaker
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f(bg, i); err != nil {
			b.Fatal(err)
		}
	}
}

// slowProxy forwards TCP connections to addr, delaying every reply by d.
func slowProxy(t *testing.T, addr string, d time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ok(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() {
				_, _ = io.Copy(up, c)
				up.Close()
			})
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					if n > 0 {
						time.Sleep(d)
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
			t.Cleanup(func() { c.Close(); up.Close() })
		}
	})
	return ln.Addr().String()
}

// Calls abandoned at OpTimeout while their commands wait for a connection
// (one, held by a slow reply) go on in the background and send their
// arguments later: the caller must not reuse them (the lease header is
// pooled). Every call returns its function's value (fail-open); under
// -race, a reused argument is a data race.
func TestAbandonedCalls(t *testing.T) {
	rdb, _ := testRedis(t)
	c, isClient := rdb.(*redis.Client)
	if !isClient {
		t.Fatalf("%T: want a *redis.Client", rdb)
	}
	slow := redis.NewClient(&redis.Options{Addr: slowProxy(t, c.Options().Addr, 20*time.Millisecond), DB: c.Options().DB,
		PoolSize: 1, PoolTimeout: 5 * time.Second, MaxRetries: -1, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	t.Cleanup(func() { slow.Close() })
	rec := &errRecorder{}
	p := newPluginOn(t, slow, cacheme.Settings{OpTimeout: 5 * time.Millisecond, BreakerFailures: -1, ErrorHook: rec.Hook})
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(i int) string { return "abandoned:" + strconv.Itoa(i) }}, identity)
	for i := range 20 {
		equals(t, call(t, f, i), i)
	}
	if !rec.Has(context.DeadlineExceeded) {
		t.Fatalf("reported %v; want abandoned calls", rec.All())
	}
}
