// Command bench compares cacheme with raw go-redis (GET and a msgpack
// decode: the floor), github.com/go-redis/cache/v9 and
// github.com/redis/rueidis on the same Redis, and writes a Markdown table
// and an SVG chart. Variants run interleaved, in the same rounds, and the
// medians of the rounds are reported: absolute times on a shared machine
// are noise, ratios measured side by side are not.
//
//	go run . -redis 127.0.0.1:6379 -postgres 'postgres://...' -out ../docs/benchmarks.md -svg ../docs/benchmarks.svg
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gormcacheme/cacheme"
	"github.com/redis/go-redis/v9"
)

var (
	redisAddr = flag.String("redis", "127.0.0.1:6379", "Redis address")
	pgDSN     = flag.String("postgres", "", "PostgreSQL DSN for the GORM write benchmark (skipped if empty)")
	rounds    = flag.Int("rounds", 8, "rounds; each runs every variant once, in rotated order")
	ops       = flag.Int("ops", 2000, "operations per variant per round (hit and miss)")
	scaleKeys = flag.Int("scale", 1000000, "keys in Redis for the large side of the scale benchmark")
	groupMax  = flag.Int("group", 100000, "largest invalidation group")
	quick     = flag.Bool("quick", false, "one round of a few operations of each benchmark (a smoke test)")
	only      = flag.String("only", "", "run only these benchmarks, comma-separated: hit, miss, herd, scale, groups, write (default: all)")
	out       = flag.String("out", "", "write the Markdown report here (default: stdout)")
	svg       = flag.String("svg", "", "write the chart here")
)

// row is one line of the report.
type row struct {
	bench, variant string
	median         time.Duration // per operation
	ratio          float64       // to the row's reference (0: none)
	allocs         float64       // per operation (-1: not measured)
	note           string
}

var rows []row

func main() {
	flag.Parse()
	if *quick {
		*rounds, *ops, *scaleKeys, *groupMax = 1, 50, 2000, 1000
	}
	ctx := context.Background()
	// Timeouts at cacheme's OpTimeout: the client bounds each call by
	// itself, as the README recommends (the same client for every variant).
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 64,
		ReadTimeout: cacheme.DefaultOpTimeout, WriteTimeout: cacheme.DefaultOpTimeout})
	if err := rdb.Ping(ctx).Err(); err != nil {
		fatal("redis %s: %v", *redisAddr, err)
	}
	defer rdb.Close()
	prefix := fmt.Sprintf("bench%d:", time.Now().UnixNano())
	defer cleanup(rdb, prefix)

	if selected("hit") {
		for _, size := range []int{100, 10 * 1024} {
			benchHit(ctx, rdb, prefix, size, 1)
			benchHit(ctx, rdb, prefix, size, 16)
		}
	}
	if selected("miss") {
		benchMiss(ctx, rdb, prefix)
	}
	if selected("herd") {
		for _, d := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second} {
			benchHerd(ctx, prefix, d)
		}
	}
	if selected("scale") {
		benchScale(ctx, rdb, prefix)
	}
	if selected("groups") {
		benchGroups(ctx, rdb, prefix)
	}
	if *pgDSN != "" && selected("write") {
		benchWrite(ctx, rdb, prefix)
	}
	report()
}

// selected reports whether -only names the benchmark (or is empty).
func selected(name string) bool {
	return *only == "" || slices.Contains(strings.Split(*only, ","), name)
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// variant is one contender of a benchmark: op runs one operation (i is
// its index in the round, for benchmarks that need a fresh key each time).
type variant struct {
	name string
	op   func(i int) error
}

// interleave runs every variant n operations per round, in rotated order,
// for the given rounds, with par goroutines, and returns each variant's
// median time per operation and allocations per operation (serial only).
func interleave(vs []variant, n, par int) ([]time.Duration, []float64) {
	times := make([][]time.Duration, len(vs))
	allocs := make([][]float64, len(vs))
	for r := range *rounds {
		for k := range vs {
			j := (k + r) % len(vs)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			run(vs[j].name, n, par, func(i int) error { return vs[j].op(r*n + i) })
			el := time.Since(start)
			runtime.ReadMemStats(&m1)
			times[j] = append(times[j], el/time.Duration(n))
			allocs[j] = append(allocs[j], float64(m1.Mallocs-m0.Mallocs)/float64(n))
		}
	}
	med := make([]time.Duration, len(vs))
	al := make([]float64, len(vs))
	for j := range vs {
		slices.Sort(times[j])
		med[j] = times[j][len(times[j])/2]
		slices.Sort(allocs[j])
		al[j] = allocs[j][len(allocs[j])/2]
		if par > 1 {
			al[j] = -1
		}
	}
	return med, al
}

// addRows records the results of interleave, as ratios to the variant
// named ref.
func addRows(bench string, vs []variant, med []time.Duration, al []float64, ref string, notes map[string]string) {
	var base time.Duration
	for j, v := range vs {
		if v.name == ref {
			base = med[j]
		}
	}
	for j, v := range vs {
		r := row{bench: bench, variant: v.name, median: med[j], allocs: al[j], note: notes[v.name]}
		if base > 0 {
			r.ratio = float64(med[j]) / float64(base)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%-40s %-28s %10v  %.2fx  allocs %.1f\n", bench, v.name, med[j], r.ratio, al[j])
	}
}

func cleanup(rdb *redis.Client, prefix string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// environment describes the run for the report.
func environment() string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	redisVer := "unknown"
	if o, err := exec.Command("redis-server", "--version").Output(); err == nil {
		redisVer = strings.TrimSpace(string(o))
	}
	return fmt.Sprintf("%s, %s/%s, %d CPUs (%s), %s", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, redisVer)
}
