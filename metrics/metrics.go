// Package metrics exports a cacheme.Plugin's counters to Prometheus.
//
// A Collector is a prometheus.Collector: register it, and every scrape
// reads the plugin's counters (Plugin.Stats: this process's, which
// Prometheus adds up across processes itself), the outbox backlog when it
// is given the database, and the latency of the invalidations committed
// writes run, which it times as the plugin's Tracer:
//
//	m := metrics.New(metrics.Options{DB: sqlDB, Dialect: migrations.Postgres})
//	p := cacheme.New(cacheme.Settings{Redis: rdb, Tracer: m})
//	m.Watch(p)
//	prometheus.MustRegister(m)
//	http.Handle("/metrics", promhttp.Handler())
//
// The metrics, each with the label tag:
//
//	cacheme_hits_total             valid values returned from Redis
//	cacheme_local_hits_total       values returned from the local layer, without Redis
//	cacheme_misses_total           computations whose result was stored (or tried to be)
//	cacheme_stale_serves_total     invalidated values served while one caller recomputed
//	cacheme_herd_waits_total       calls that waited for another caller's computation
//	cacheme_errors_total           errors, by kind: redis, loader, corrupt, conflict,
//	                               herd_timeout, breaker_skip
//	cacheme_invalidations_total    entries invalidated
//
// and without it:
//
//	cacheme_flush_duration_seconds a histogram of the invalidations after a commit
//	cacheme_outbox_backlog         rows of cacheme_outbox still to deliver (with Options.DB)
//
// The tag label has bounded cardinality: the first Options.MaxTags tags
// seen keep their own series for the collector's life; the counts of the
// others add up under tag="(other)", and what no tag is charged with
// (invalidations by key, group or pattern, errors outside memoized calls)
// under tag="(none)". Every series only grows.
package metrics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/migrations"
)

// Options configures New.
type Options struct {
	// Namespace starts every metric's name. If empty, defaults to
	// "cacheme".
	Namespace string

	// MaxTags is how many tags get series of their own. If zero,
	// defaults to 50.
	MaxTags int

	// DB, if set, is the database of the outbox (cacheme.Settings.Outbox):
	// every scrape counts its rows for the plugin's prefix, within
	// BacklogTimeout. Dialect is DB's (migrations.Postgres or
	// migrations.SQLite).
	DB      *sql.DB
	Dialect string

	// BacklogTimeout bounds the count of the outbox. If zero, defaults to
	// one second.
	BacklogTimeout time.Duration

	// Buckets are the flush latency histogram's, in seconds. If nil,
	// defaults to prometheus.DefBuckets.
	Buckets []float64
}

// Tags a series can have besides the plugin's own.
const (
	OtherTag = "(other)" // tags past Options.MaxTags
	NoTag    = "(none)"  // counts no tag is charged with
)

// Collector collects a plugin's metrics; see the package documentation.
// It is safe for concurrent use.
type Collector struct {
	opts    Options
	plugin  atomic.Pointer[cacheme.Plugin]
	flushes prometheus.Histogram
	descs   map[string]*prometheus.Desc
	backlog *prometheus.Desc

	mu    sync.Mutex         // protects named and last
	named map[string]bool    // tags with series of their own
	last  map[string]float64 // the last value of each series, which never goes down
}

// The counters, each with its metric name and, for errors, its kind.
var counters = []struct {
	metric, kind string
	get          func(cacheme.Counters) int64
}{
	{"hits_total", "", func(c cacheme.Counters) int64 { return c.Hits }},
	{"local_hits_total", "", func(c cacheme.Counters) int64 { return c.LocalHits }},
	{"misses_total", "", func(c cacheme.Counters) int64 { return c.Misses }},
	{"stale_serves_total", "", func(c cacheme.Counters) int64 { return c.Stale }},
	{"herd_waits_total", "", func(c cacheme.Counters) int64 { return c.HerdWaits }},
	{"errors_total", "redis", func(c cacheme.Counters) int64 { return c.RedisErrors }},
	{"errors_total", "loader", func(c cacheme.Counters) int64 { return c.LoaderErrors }},
	{"errors_total", "corrupt", func(c cacheme.Counters) int64 { return c.Corrupt }},
	{"errors_total", "conflict", func(c cacheme.Counters) int64 { return c.Conflicts }},
	{"errors_total", "herd_timeout", func(c cacheme.Counters) int64 { return c.HerdTimeouts }},
	{"errors_total", "breaker_skip", func(c cacheme.Counters) int64 { return c.BreakerSkips }},
	{"invalidations_total", "", func(c cacheme.Counters) int64 { return c.Invalidations }},
	{"uncached_total", "", func(c cacheme.Counters) int64 { return c.Uncached }},
}

var help = map[string]string{
	"hits_total":          "Valid cached values returned from Redis.",
	"local_hits_total":    "Values returned from the local layer (Settings.Local), without Redis.",
	"misses_total":        "Computations after a miss whose result was stored (or tried to be).",
	"stale_serves_total":  "Invalidated values served while one caller recomputed them.",
	"herd_waits_total":    "Calls that waited for another caller's computation.",
	"errors_total":        "Errors, by kind: redis, loader, corrupt, conflict (a result an invalidation overtook), herd_timeout, breaker_skip.",
	"invalidations_total": "Cache entries invalidated.",
	"uncached_total":      "Results returned but not stored: read inside a transaction, or from tables that could not be named.",
}

// New returns a Collector; Watch gives it the plugin to report, and the
// plugin's Settings.Tracer set to it (or combined with cacheme.Tracers)
// times the invalidations after commits.
func New(o Options) (*Collector, error) {
	if o.Namespace == "" {
		o.Namespace = "cacheme"
	}
	if o.MaxTags == 0 {
		o.MaxTags = 50
	}
	if o.MaxTags < 0 {
		return nil, fmt.Errorf("metrics: Options.MaxTags %d is negative", o.MaxTags)
	}
	if o.BacklogTimeout == 0 {
		o.BacklogTimeout = time.Second
	}
	if o.DB != nil {
		if err := migrations.CheckDialect(o.Dialect); err != nil {
			return nil, fmt.Errorf("metrics: Options.Dialect: %w", err)
		}
	}
	c := &Collector{opts: o, descs: map[string]*prometheus.Desc{}, named: map[string]bool{}, last: map[string]float64{}}
	for _, k := range counters {
		if c.descs[k.metric] != nil {
			continue
		}
		labels := []string{"tag"}
		if k.kind != "" {
			labels = append(labels, "kind")
		}
		c.descs[k.metric] = prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, "", k.metric), help[k.metric], labels, nil)
	}
	c.flushes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: o.Namespace, Name: "flush_duration_seconds",
		Help:    "How long the invalidation of a committed write's groups took, retries included.",
		Buckets: o.Buckets,
	})
	c.backlog = prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, "", "outbox_backlog"),
		"Invalidations committed writes still owe: rows of "+migrations.OutboxTable+" for the plugin's prefix.", nil, nil)
	return c, nil
}

// Watch makes c report p's counters (and its prefix's outbox backlog).
func (c *Collector) Watch(p *cacheme.Plugin) { c.plugin.Store(p) }

// Start implements cacheme.Tracer: it times cacheme.OpFlush.
func (c *Collector) Start(ctx context.Context, op cacheme.Op, _ cacheme.SpanInfo) (context.Context, func(error)) {
	if op != cacheme.OpFlush {
		return ctx, func(error) {}
	}
	start := time.Now()
	return ctx, func(error) { c.flushes.Observe(time.Since(start).Seconds()) }
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
	c.flushes.Describe(ch)
	if c.opts.DB != nil {
		ch <- c.backlog
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.flushes.Collect(ch)
	p := c.plugin.Load()
	if p == nil {
		return
	}
	st := p.Stats()
	for tag, counts := range c.group(st) {
		for _, k := range counters {
			labels := []string{tag}
			if k.kind != "" {
				labels = append(labels, k.kind)
			}
			v := c.monotonic(k.metric+"\x00"+k.kind+"\x00"+tag, float64(k.get(counts)))
			ch <- prometheus.MustNewConstMetric(c.descs[k.metric], prometheus.CounterValue, v, labels...)
		}
	}
	if c.opts.DB != nil {
		n, err := c.countBacklog(p)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.backlog, err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(n))
		}
	}
}

// group returns the counters per series tag: the named tags, OtherTag and
// NoTag (what the total has beyond the tags).
func (c *Collector) group(st cacheme.Stats) map[string]cacheme.Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	tags := make([]string, 0, len(st.Tags))
	for t := range st.Tags {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	out := map[string]cacheme.Counters{}
	var tagged cacheme.Counters
	for _, t := range tags {
		counts := st.Tags[t]
		tagged = add(tagged, counts, 1)
		if !c.named[t] && len(c.named) < c.opts.MaxTags {
			c.named[t] = true
		}
		key := t
		if !c.named[t] {
			key = OtherTag
		}
		out[key] = add(out[key], counts, 1)
	}
	out[NoTag] = add(st.Total, tagged, -1)
	return out
}

// monotonic returns v, or the series' last value if v is lower: a series
// summed from several counters read one after the other may lag a moment.
func (c *Collector) monotonic(series string, v float64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.last[series]; ok && v < last {
		return last
	}
	c.last[series] = v
	return v
}

// countBacklog counts the outbox rows of p's prefix.
func (c *Collector) countBacklog(p *cacheme.Plugin) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.BacklogTimeout)
	defer cancel()
	q := "SELECT count(*) FROM " + migrations.OutboxTable + " WHERE prefix = ?"
	if c.opts.Dialect == migrations.Postgres {
		q = "SELECT count(*) FROM " + migrations.OutboxTable + " WHERE prefix = $1"
	}
	var n int64
	if err := c.opts.DB.QueryRowContext(ctx, q, p.Settings().Prefix).Scan(&n); err != nil {
		return 0, errors.Join(errors.New("metrics: counting the outbox"), err)
	}
	return n, nil
}

// add returns a + sign*b, counter by counter.
func add(a, b cacheme.Counters, sign int64) cacheme.Counters {
	av, bv := reflect.ValueOf(&a).Elem(), reflect.ValueOf(b)
	for i := range av.NumField() {
		if f := av.Field(i); f.Kind() == reflect.Int64 && f.CanSet() {
			f.SetInt(f.Int() + sign*bv.Field(i).Int())
		}
	}
	return a
}
