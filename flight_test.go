package cacheme_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// secondClient returns another client of the server rdb talks to: the
// connection pool of another process.
func secondClient(t *testing.T, rdb redis.UniversalClient) *redis.Client {
	t.Helper()
	c, isClient := rdb.(*redis.Client)
	if !isClient {
		t.Fatalf("%T: want a *redis.Client", rdb)
	}
	opt := *c.Options()
	other := redis.NewClient(&opt)
	t.Cleanup(func() { other.Close() })
	return other
}

// redisURL names the server of a test's client, for a child process.
func redisURL(t *testing.T, rdb redis.UniversalClient) string {
	t.Helper()
	if url := os.Getenv("CACHEME_TEST_REDIS"); url != "" {
		return url
	}
	c, isClient := rdb.(*redis.Client)
	if !isClient {
		t.Fatalf("%T: want a *redis.Client", rdb)
	}
	return "redis://" + c.Options().Addr
}

// Two processes (two plugins, each with a client of its own) × 500
// goroutines ask for one cold key at once, with the default settings: the
// function runs exactly once however long it takes (up to LeaseTTL),
// every caller gets its result, nobody's wait runs out, and each process
// makes a handful of round trips: the callers of a process share one
// flight, and its leader blocks on the entry's wake-up list instead of
// polling.
func TestHerdSlowLoaders(t *testing.T) {
	for _, loader := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second} {
		t.Run(loader.String(), func(t *testing.T) {
			rdb, _ := testRedis(t)
			prefix := uniquePrefix()
			clients := []*redis.Client{secondClient(t, rdb), secondClient(t, rdb)}
			var runs atomic.Int64
			load := func(context.Context, int) (string, error) {
				time.Sleep(loader)
				return fmt.Sprintf("computed %d", runs.Add(1)), nil
			}
			var plugins []*cacheme.Plugin
			var counters []*commandCounter
			var fs []func(context.Context, int) (string, error)
			for _, c := range clients {
				cc := &commandCounter{}
				c.AddHook(cc)
				p := newPluginOn(t, c, cacheme.Settings{Prefix: prefix})
				plugins, counters = append(plugins, p), append(counters, cc)
				fs = append(fs, mustWrap(t, p, cacheme.Spec[int, string]{Key: func(int) string { return "slow" }}, load))
			}
			const perProcess = 500
			start := make(chan struct{})
			results := make(chan result[string], 2*perProcess)
			var wg sync.WaitGroup
			for _, f := range fs {
				for range perProcess {
					wg.Go(func() {
						<-start
						v, err := f(context.Background(), 0)
						results <- result[string]{v, err}
					})
				}
			}
			close(start)
			wg.Wait()
			close(results)
			for r := range results {
				ok(t, r.err)
				equals(t, r.v, "computed 1")
			}
			equals(t, runs.Load(), int64(1))
			for i, p := range plugins {
				st := p.Stats().Total
				equals(t, st.HerdTimeouts, int64(0))
				equals(t, st.LoaderErrors+st.RedisErrors+st.Conflicts, int64(0))
				cmds, trips := counters[i].get()
				if trips > 10 {
					t.Errorf("process %d made %d round trips (%v); want at most 10", i, trips, cmds)
				}
				t.Logf("process %d: %d round trips %v", i, trips, cmds)
			}
		})
	}
}

// The holder of a lease is killed (SIGKILL) while callers of another
// process wait for its value: the waiters take the lease over once it
// runs out, compute the value once and share it. Nobody waits much past
// the lease, and nobody computes while it stands.
func TestHerdHolderKilled(t *testing.T) {
	if os.Getenv("CACHEME_HERD_CHILD") != "" {
		herdChild(t)
		return
	}
	const leaseTTL = time.Second
	rdb, _ := testRedis(t)
	prefix := uniquePrefix()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHerdHolderKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CACHEME_HERD_CHILD=1", "CACHEME_HERD_REDIS="+redisURL(t, rdb),
		"CACHEME_HERD_PREFIX="+prefix, "CACHEME_HERD_LEASE="+leaseTTL.String())
	stdout, err := cmd.StdoutPipe()
	ok(t, err)
	cmd.Stderr = os.Stderr
	ok(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// The child prints "computing" from inside its function: it holds the
	// lease from then on.
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if strings.TrimSpace(s.Text()) == "computing" {
				line <- s.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case l, open := <-line:
		if !open {
			t.Fatalf("the child ended without computing: %v", <-exited)
		}
		_ = l
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not start computing within 30s")
	}
	leased := time.Now()

	var runs atomic.Int64
	p := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix, LeaseTTL: leaseTTL})
	f := mustWrap(t, p, cacheme.Spec[int, string]{Key: func(int) string { return "held" }},
		func(context.Context, int) (string, error) {
			return fmt.Sprintf("computed %d", runs.Add(1)), nil
		})
	const waiters = 50
	results := make(chan result[string], waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			v, err := f(context.Background(), 0)
			results <- result[string]{v, err}
		})
	}
	waitFor(t, "the waiters to wait", func() bool { return p.Stats().Total.HerdWaits > 0 })
	ok(t, cmd.Process.Kill())
	var exit *exec.ExitError
	if err := <-exited; !errors.As(err, &exit) {
		t.Fatalf("child: %v; want it killed", err)
	}
	exited <- nil // for the cleanup
	wg.Wait()
	took := time.Since(leased)
	close(results)
	for r := range results {
		ok(t, r.err)
		equals(t, r.v, "computed 1")
	}
	equals(t, runs.Load(), int64(1))
	st := p.Stats().Total
	equals(t, st.HerdTimeouts, int64(0))
	equals(t, st.Misses, int64(1))
	// Bounded, not timed: the waiters proceed when the lease runs out, not
	// after some unrelated timeout (a generous margin for a loaded
	// machine).
	if took > leaseTTL+5*time.Second {
		t.Fatalf("the waiters took %v after the lease was taken; want about the lease (%v)", took, leaseTTL)
	}
}

// herdChild takes the lease of TestHerdHolderKilled's key and computes
// forever, until its parent kills it.
func herdChild(t *testing.T) {
	opt, err := redis.ParseURL(os.Getenv("CACHEME_HERD_REDIS"))
	ok(t, err)
	rdb := redis.NewClient(opt)
	lease, err := time.ParseDuration(os.Getenv("CACHEME_HERD_LEASE"))
	ok(t, err)
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: os.Getenv("CACHEME_HERD_PREFIX"), LeaseTTL: lease})
	f := mustWrap(t, p, cacheme.Spec[int, string]{Key: func(int) string { return "held" }},
		func(context.Context, int) (string, error) {
			fmt.Println("computing")
			time.Sleep(time.Hour) // until killed
			return "", nil
		})
	_, _ = f(context.Background(), 0)
	t.Fatal("the computation returned")
}

// A call that begins after a write returned never gets a value read before
// the write, though a computation that began before it is still in flight
// in the same process: it follows the next flight, not that one. The
// first call returns what it read (it overlapped the write); its result is
// not stored (the invalidation overtook it), and the second computes.
func TestFlightAfterInvalidation(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{NoStale: true})
	var db atomic.Int64 // the row the function reads
	db.Store(1)
	g := newGate()
	var paused atomic.Bool
	paused.Store(true)
	f := mustWrap(t, p, cacheme.Spec[int, int64]{
		Key:    func(int) string { return "flight-after" },
		Groups: func(int, int64) []string { return []string{"flight-after-g"} },
	}, func(context.Context, int) (int64, error) {
		v := db.Load()
		if paused.CompareAndSwap(true, false) {
			g.wait()
		}
		return v, nil
	})
	first := goCall(f, 0)
	g.awaitStarted(t) // it read 1
	// Clearly after its lease's grant: within that millisecond the store
	// cannot order them, and the first call would compute once more.
	time.Sleep(2 * time.Millisecond)
	db.Store(2)
	_, err := p.InvalidateGroups(bg, "flight-after-g")
	ok(t, err) // the write has returned
	second := goCall(f, 0)
	time.Sleep(20 * time.Millisecond) // the second call finds the first in flight
	g.open()
	equals(t, recv(t, first).v, 1)
	equals(t, recv(t, second).v, 2)
	equals(t, call(t, f, 0), 2) // stored
	equals(t, p.Stats().Total.Conflicts, 1)
}
