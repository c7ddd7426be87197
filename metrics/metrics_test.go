package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/metrics"
	"github.com/gormcacheme/cacheme/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"))
}

var bg = context.Background()

// scrape serves reg's metrics over HTTP and parses them with the
// Prometheus text parser.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels are
// pairs (name, value, ...), failing if there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, pairs ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(pairs); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, pairs)
	return 0
}

func equal(t *testing.T, got, want float64, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v; want %v", what, got, want)
	}
}

func memo(t *testing.T, p *cacheme.Plugin, tag string, fn func(context.Context, int) (int, error)) func(context.Context, int) (int, error) {
	t.Helper()
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(i int) string { return tag + ":" + strconv.Itoa(i) }, Tag: tag}, fn)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ident(_ context.Context, i int) (int, error) { return i, nil }

func TestCollector(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	m, err := metrics.New(metrics.Options{MaxTags: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: testenv.Prefix(), Tracer: m, StatsInterval: -1})
	t.Cleanup(func() { _ = p.Close(bg) })
	m.Watch(p)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	a, b, c, d := memo(t, p, "a", ident), memo(t, p, "b", ident), memo(t, p, "c", ident), memo(t, p, "d", ident)
	for i := range 3 {
		for range 2 { // a miss, then a hit
			_, _ = a(bg, i)
		}
	}
	_, _ = b(bg, 1)
	_, _ = c(bg, 1)
	_, _ = c(bg, 1)
	_, _ = d(bg, 1)
	failing := memo(t, p, "a", func(context.Context, int) (int, error) { return 0, errors.New("no") })
	_, _ = failing(bg, 9)
	if _, err := p.InvalidateKeys(bg, "a:0", "a:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.InvalidateTag(bg, "c"); err != nil {
		t.Fatal(err)
	}

	fams := scrape(t, reg)
	equal(t, value(t, fams, "cacheme_hits_total", "tag", "a"), 3, "hits of a")
	equal(t, value(t, fams, "cacheme_misses_total", "tag", "a"), 3, "misses of a")
	equal(t, value(t, fams, "cacheme_misses_total", "tag", "b"), 1, "misses of b")
	// c and d come after the first two tags (sorted): they add up.
	equal(t, value(t, fams, "cacheme_misses_total", "tag", metrics.OtherTag), 2, "misses of the other tags")
	equal(t, value(t, fams, "cacheme_hits_total", "tag", metrics.OtherTag), 1, "hits of the other tags")
	equal(t, value(t, fams, "cacheme_errors_total", "tag", "a", "kind", "loader"), 1, "loader errors of a")
	equal(t, value(t, fams, "cacheme_invalidations_total", "tag", metrics.OtherTag), 1, "InvalidateTag(c)")
	equal(t, value(t, fams, "cacheme_invalidations_total", "tag", metrics.NoTag), 2, "invalidations by key")
	for _, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "tag" && (l.GetValue() == "c" || l.GetValue() == "d") {
					t.Fatalf("%s has a series for tag %s past MaxTags", f.GetName(), l.GetValue())
				}
			}
		}
	}
	equal(t, value(t, fams, "cacheme_flush_duration_seconds"), 0, "flushes")
	if _, ok := fams["cacheme_outbox_backlog"]; ok {
		t.Fatal("an outbox backlog without Options.DB")
	}

	// The tags stay named: a later scrape grows the same series.
	_, _ = c(bg, 2)
	fams = scrape(t, reg)
	equal(t, value(t, fams, "cacheme_misses_total", "tag", metrics.OtherTag), 3, "misses of the other tags")
}

// note is a model whose writes the plugin invalidates.
type note struct {
	ID   uint
	Text string
}

func (n note) CacheKey() string { return "note:" + strconv.Itoa(int(n.ID)) }

// TestFlushAndBacklog checks the flush latency of committed writes and
// the outbox backlog, on SQLite and, when CACHEME_TEST_POSTGRES is set,
// PostgreSQL.
func TestFlushAndBacklog(t *testing.T) {
	for _, d := range testenv.SQLDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			if err := migrations.Up(bg, d.DB, d.Dialect); err != nil {
				t.Fatal(err)
			}
			rdb, _ := testenv.Redis(t)
			m, err := metrics.New(metrics.Options{DB: d.DB, Dialect: d.Dialect, Buckets: []float64{0.001, 0.01, 1}})
			if err != nil {
				t.Fatal(err)
			}
			p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: testenv.Prefix(), Tracer: m, Outbox: true, StatsInterval: -1})
			t.Cleanup(func() { _ = p.Close(bg) })
			m.Watch(p)
			db := gormOn(t, d)
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			if err := db.AutoMigrate(&note{}); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := db.Create(&note{Text: strconv.Itoa(i)}).Error; err != nil {
					t.Fatal(err)
				}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(m)
			fams := scrape(t, reg)
			equal(t, value(t, fams, "cacheme_flush_duration_seconds"), 3, "flushes timed")
			equal(t, value(t, fams, "cacheme_outbox_backlog"), 0, "backlog once delivered")
			q := "INSERT INTO cacheme_outbox (created_ms, prefix, groups) VALUES (?, ?, ?)"
			if d.Dialect == migrations.Postgres {
				q = "INSERT INTO cacheme_outbox (created_ms, prefix, groups) VALUES ($1, $2, $3)"
			}
			for _, prefix := range []string{p.Settings().Prefix, p.Settings().Prefix, "another:"} {
				if _, err := d.DB.ExecContext(bg, q, time.Now().UnixMilli(), prefix, `["note:1"]`); err != nil {
					t.Fatal(err)
				}
			}
			equal(t, value(t, scrape(t, reg), "cacheme_outbox_backlog"), 2, "backlog of the prefix")
		})
	}
}

func gormOn(t *testing.T, d testenv.Database) *gorm.DB {
	t.Helper()
	db, err := testenv.Gorm(d)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestOptions(t *testing.T) {
	if _, err := metrics.New(metrics.Options{MaxTags: -1}); err == nil {
		t.Fatal("a negative MaxTags is accepted")
	}
	if _, err := metrics.New(metrics.Options{DB: testenv.SQLite(t), Dialect: "oracle"}); !errors.Is(err, migrations.ErrUnknownDialect) {
		t.Fatalf("an unknown dialect: got %v", err)
	}
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m) // nothing watched yet: only the histogram
	if fams := scrape(t, reg); len(fams) != 1 {
		t.Fatalf("families without a plugin: %v", fams)
	}
}
