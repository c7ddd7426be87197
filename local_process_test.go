package cacheme_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// localDeliveryBound is how long after an invalidation returned a reader in
// another process may still get the old value from its local layer in
// TestLocalTwoProcesses and the fault suite: past it, a read is a
// violation. The delays measured are a few milliseconds (the tests log
// them); the bound leaves room for a loaded 2-core machine's scheduling.
const localDeliveryBound = 500 * time.Millisecond

// Two OS processes: this one (A) sets a version in Redis and invalidates the
// memoized value that reads it, one version after another; the child (B,
// the test binary run again) reads it in a loop through its local layer.
// For each version it reports when B first got it (or a newer one), after
// A's invalidation returned: the delivery delay, of which it logs p50, p99
// and the maximum. A violation is a read B started more than
// localDeliveryBound after the invalidation of its value returned: there
// must be none. 10 000 invalidations on a real Redis, 1 000 on miniredis
// (slower, and it runs in this process).
func TestLocalTwoProcesses(t *testing.T) {
	if os.Getenv("CACHEME_LOCAL_CHILD") != "" {
		localChild(t)
		return
	}
	rdb, mr := testRedis(t)
	n, pace := 10_000, 500*time.Microsecond
	if mr != nil {
		n, pace = 1_000, 2*time.Millisecond
	}
	prefix := uniquePrefix()
	truth := prefix + "truth"
	ok(t, rdb.Set(bg, truth, 1, time.Minute).Err())
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLocalTwoProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CACHEME_LOCAL_CHILD=1", "CACHEME_LOCAL_REDIS="+redisURL(t, rdb),
		"CACHEME_LOCAL_PREFIX="+prefix, "CACHEME_LOCAL_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	ok(t, err)
	// A pipe of our own, not StdoutPipe: Wait would close that one as
	// soon as the child exits, before its last lines are read.
	stdout, pw, err := os.Pipe()
	ok(t, err)
	defer stdout.Close()
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	ok(t, cmd.Start())
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	out := localLines(stdout)
	expect := func(prefix string, timeout time.Duration) string {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case l, open := <-out:
				if !open {
					err := <-exited
					exited <- err // for the cleanup
					t.Fatalf("the child ended before %q: %v", prefix, err)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %q from the child within %v", prefix, timeout)
			}
		}
	}
	expect("ready", 30*time.Second)

	p := newPluginOn(t, rdb, cacheme.Settings{Prefix: prefix})
	returned := make([]int64, n+2) // returned[v]: when the invalidation that made v current returned
	start := time.Now()
	for v := 2; v <= n+1; v++ {
		ok(t, rdb.Set(bg, truth, v, time.Minute).Err())
		_, err := p.InvalidateKeys(bg, "two>v")
		ok(t, err)
		returned[v] = time.Now().UnixNano()
		time.Sleep(pace)
	}
	took := time.Since(start)
	_, err = fmt.Fprintf(stdin, "stop %d\n", n+1)
	ok(t, err)

	// The child's report: "seen v firstEnd lastStart" for every version
	// it returned.
	firstEnd := make([]int64, n+2)
	lastStart := make([]int64, n+2)
	for {
		l := expect("", 30*time.Second)
		if l == "done" {
			break
		}
		var v int
		var fe, ls int64
		if _, err := fmt.Sscanf(l, "seen %d %d %d", &v, &fe, &ls); err != nil || v < 1 || v > n+1 {
			t.Logf("child: %s", l)
			continue
		}
		firstEnd[v], lastStart[v] = fe, ls
	}
	// delay[v]: from the invalidation's return until B first returned v
	// or a newer version (0 if B had it before the call returned).
	var delays []time.Duration
	next := int64(0) // the earliest first sighting of any version >= v
	for v := n + 1; v >= 2; v-- {
		if firstEnd[v] != 0 && (next == 0 || firstEnd[v] < next) {
			next = firstEnd[v]
		}
		if next == 0 {
			t.Fatalf("B never returned version %d or a newer one", v)
		}
		delays = append(delays, time.Duration(max(next-returned[v], 0)))
	}
	violations, worst := 0, time.Duration(0)
	for v := 1; v <= n; v++ {
		if lastStart[v] == 0 {
			continue
		}
		late := time.Duration(lastStart[v] - returned[v+1])
		worst = max(worst, late)
		if late > localDeliveryBound {
			violations++
			if violations <= 5 {
				t.Errorf("B started a read %v after the invalidation of version %d returned, and got it", late, v)
			}
		}
	}
	slices.Sort(delays)
	pct := func(q float64) time.Duration { return delays[int(q*float64(len(delays)-1))] }
	stats := expect("stats", 30*time.Second)
	t.Logf("%d invalidations in %v; delivery delay p50 %v, p99 %v, max %v; latest old read started %v after its invalidation returned; %d violations (bound %v); child: %s",
		n, took.Round(time.Millisecond), pct(0.5), pct(0.99), delays[len(delays)-1], worst, violations, localDeliveryBound, stats)
}

// localChild is process B of TestLocalTwoProcesses: it reads the memoized
// version in a loop until its parent writes "stop", then reports.
func localChild(t *testing.T) {
	opt, err := redis.ParseURL(os.Getenv("CACHEME_LOCAL_REDIS"))
	ok(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	prefix := os.Getenv("CACHEME_LOCAL_PREFIX")
	n, err := strconv.Atoi(os.Getenv("CACHEME_LOCAL_N"))
	ok(t, err)
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, NoStale: true, StatsInterval: -1,
		Local: cacheme.LocalSettings{MaxBytes: 1 << 20, MaxEntries: 100, Heartbeat: 200 * time.Millisecond}})
	defer p.Close(context.Background())
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "two>v" }},
		func(ctx context.Context, _ int) (int, error) { return rdb.Get(ctx, prefix+"truth").Int() })
	waitLocal(t, p, 0)
	// The last version, once the parent has made it: the child reads on
	// until it has seen it (or a newer one), for 10 s at most.
	var last atomic.Int64
	go func() {
		s := bufio.NewScanner(os.Stdin)
		for s.Scan() {
			var v int64
			if _, err := fmt.Sscanf(s.Text(), "stop %d", &v); err == nil {
				last.Store(v)
				return
			}
		}
	}()
	firstEnd := make([]int64, n+2)
	lastStart := make([]int64, n+2)
	fmt.Println("ready")
	newest, giveUp := 0, time.Time{}
	for {
		if l := last.Load(); l != 0 {
			if giveUp.IsZero() {
				giveUp = time.Now().Add(10 * time.Second)
			}
			if int64(newest) >= l || time.Now().After(giveUp) {
				break
			}
		}
		began := time.Now().UnixNano()
		v, err := f(context.Background(), 0)
		ended := time.Now().UnixNano()
		if err != nil || v < 1 || v > n+1 {
			continue
		}
		if firstEnd[v] == 0 {
			firstEnd[v] = ended
		}
		lastStart[v] = began
		newest = max(newest, v)
	}
	w := bufio.NewWriter(os.Stdout)
	for v := 1; v <= n+1; v++ {
		if firstEnd[v] != 0 {
			fmt.Fprintf(w, "seen %d %d %d\n", v, firstEnd[v], lastStart[v])
		}
	}
	st := p.Stats().Total
	fmt.Fprintf(w, "done\nstats local hits %d, Redis hits %d, misses %d\n", st.LocalHits, st.Hits, st.Misses)
	ok(t, w.Flush())
}

// localLines sends r's lines on the returned channel, closed at EOF.
func localLines(r io.Reader) <-chan string {
	out := make(chan string, 1024)
	go func() {
		defer close(out)
		br := bufio.NewReaderSize(r, 1<<16)
		for {
			l, err := br.ReadString('\n')
			if l != "" {
				out <- strings.TrimSuffix(l, "\n")
			}
			if err != nil {
				if err != io.EOF {
					out <- "read error: " + err.Error()
				}
				return
			}
		}
	}()
	return out
}
