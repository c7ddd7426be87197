package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

// bin is the command, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cacheme-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "cacheme")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the command:", err)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		goleak.VerifyTestMain(exitCode{&code, m})
	}()
	os.Exit(code)
}

// exitCode lets TestMain clean up after goleak's Run.
type exitCode struct {
	code *int
	m    *testing.M
}

func (e exitCode) Run() int { *e.code = e.m.Run(); return *e.code }

var bg = context.Background()

// result is what one run of the command did.
type result struct {
	code        int
	out, errOut string
}

// cli runs the command with args and env (pairs NAME=value), without the
// test's CACHEME_* variables.
func cli(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CACHEME_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	return result{code, out.String(), errOut.String()}
}

// ok fails the test unless r succeeded.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.errOut)
	}
	return r
}

// redisURL returns the URL of a Redis the command can reach: the server
// of CACHEME_TEST_REDIS, or a miniredis of the test's, and a client of it.
func redisURL(t *testing.T) (string, redis.UniversalClient) {
	t.Helper()
	c, m := testenv.Redis(t)
	if m != nil {
		// The command line waits for a slow miniredis (-race) as long as
		// it takes: its default read timeout is 3s.
		return "redis://" + m.Addr() + "?read_timeout=1m&write_timeout=1m", c
	}
	return os.Getenv("CACHEME_TEST_REDIS"), c
}

// dbURLs returns a SQLite file and, with CACHEME_TEST_POSTGRES, a fresh
// PostgreSQL schema: the values of CACHEME_DB.
func dbURLs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"sqlite": filepath.Join(t.TempDir(), "cli.db")}
	if dsn := os.Getenv("CACHEME_TEST_POSTGRES"); dsn != "" {
		out["postgres"] = testenv.Schema(t, dsn)
	}
	return out
}

// newPlugin returns a plugin whose memoized calls wait for Redis as long
// as it takes (no OpTimeout, no breaker), so that a slow server under load
// (miniredis and the race detector) stores every value. Its values live a
// minute, and an invalidation deletes them (no stale serving), so that a
// shared Redis is soon rid of the test's keys.
func newPlugin(t *testing.T, rdb redis.UniversalClient, prefix string) *cacheme.Plugin {
	t.Helper()
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, StatsInterval: -1, OpTimeout: -1, BreakerFailures: -1,
		TTL: time.Hour, NoStale: true}) // longer than any test: a slow run (-race) must not see entries expire
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(bg) })
	return p
}

// counted memoizes under tag "<tag>" the keys "<tag>:<i>" with the groups
// "<tag>:g<i%3>", counting the computations per key.
type counted struct {
	p    *cacheme.Plugin
	mu   sync.Mutex
	runs map[int]int
	f    func(context.Context, int) (int, error)
}

func memo(t *testing.T, p *cacheme.Plugin, tag string) *counted {
	t.Helper()
	c := &counted{p: p, runs: map[int]int{}}
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int]{
		Key:    func(i int) string { return tag + ":" + strconv.Itoa(i) },
		Groups: func(i int, _ int) []string { return []string{tag + ":g" + strconv.Itoa(i%3)} },
		Tag:    tag,
	}, func(_ context.Context, i int) (int, error) {
		c.mu.Lock()
		c.runs[i]++
		c.mu.Unlock()
		return i, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.f = f
	return c
}

// fill computes ids 0..n-1 from concurrent goroutines.
func (c *counted) fill(t *testing.T, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	const workers = 48
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := c.f(bg, i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if st := c.p.Stats().Total; st.RedisErrors+st.Conflicts > 0 {
		t.Fatalf("filling: %d Redis errors, %d conflicts", st.RedisErrors, st.Conflicts)
	}
}

// computed returns how often id was computed, after calling it once more.
func (c *counted) computed(t *testing.T, id int) int {
	t.Helper()
	if _, err := c.f(bg, id); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"demo", "--help"}, {"admin", "--help"}, {"migrate", "--help"}, {"migrate", "up", "--help"},
		{"migrate", "status", "--help"}, {"invalidate", "--help"}, {"invalidate", "key", "--help"},
		{"invalidate", "group", "--help"}, {"invalidate", "tag", "--help"}, {"invalidate", "pattern", "--help"},
		{"stats", "--help"}, {"inspect", "--help"},
	} {
		r := cli(t, nil, args...).ok(t)
		if !strings.Contains(r.out, "Usage:") || !strings.Contains(r.out, "CACHEME_REDIS") {
			t.Errorf("%v: no usage or environment in:\n%s", args, r.out)
		}
	}
	r := cli(t, nil, "nope")
	if r.code != 2 || !strings.Contains(r.errOut, "unknown command") {
		t.Fatalf("an unknown command: %+v", r)
	}
	if r := cli(t, nil, "inspect"); r.code != 2 {
		t.Fatalf("inspect without a key: %+v", r)
	}
	if r := cli(t, nil, "stats", "--bogus"); r.code != 2 {
		t.Fatalf("an unknown flag: %+v", r)
	}
}

// TestEmbedded runs commands on the default: an in-process Redis filled
// by the demo.
func TestEmbedded(t *testing.T) {
	r := cli(t, nil, "stats").ok(t)
	for _, want := range []string{"1 process published", "booksOf", "usersOf", "cacheme_demo_books", "(all)"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("stats lacks %q:\n%s", want, r.out)
		}
	}
	var doc struct {
		Processes int              `json:"processes"`
		Total     map[string]int64 `json:"total"`
		Tags      []struct {
			Tag  string `json:"tag"`
			Kind string `json:"kind"`
		} `json:"tags"`
	}
	r = cli(t, nil, "stats", "--json").ok(t)
	if err := json.Unmarshal([]byte(r.out), &doc); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, r.out)
	}
	if doc.Processes != 1 || doc.Total["misses"] == 0 || doc.Total["hits"] == 0 || len(doc.Tags) != 5 || doc.Tags[0].Kind != "function" || doc.Tags[1].Kind != "table" {
		t.Fatalf("stats --json: %+v", doc)
	}
	r = cli(t, nil, "inspect", "user:2>books").ok(t)
	for _, want := range []string{"state      valid", `value      ["Redis in Action"]`, "groups     User:2:books"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, r.out)
		}
	}
	r = cli(t, nil, "invalidate", "pattern", "user:*", "--quiet").ok(t)
	if !strings.Contains(r.out, "pattern user:*: 2 entries invalidated") {
		t.Fatalf("pattern: %s", r.out)
	}
	r = cli(t, nil, "migrate", "status").ok(t)
	if !strings.Contains(r.out, "sqlite3: version "+strconv.FormatInt(migrations.Latest, 10)) {
		t.Fatalf("migrate status: %s", r.out)
	}
	r = cli(t, nil, "demo").ok(t)
	if !strings.Contains(r.out, "every cached read matched the database after every write") {
		t.Fatalf("demo: %s", r.out)
	}
}

// logRows reads the History of the database at url.
func logRows(t *testing.T, url string) []string {
	t.Helper()
	driver, dsn := "sqlite3", url
	if strings.HasPrefix(url, "postgres") {
		driver = "pgx"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(bg, "SELECT actor, kind, target, entries FROM cacheme_invalidations ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var actor, kind, target string
		var n int
		if err := rows.Scan(&actor, &kind, &target, &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s %d", actor, kind, target, n))
	}
	return out
}

// TestInvalidate runs the invalidate commands on a Redis shared with the
// test, recording them in the History on SQLite and PostgreSQL.
func TestInvalidate(t *testing.T) {
	url, rdb := redisURL(t)
	for name, db := range dbURLs(t) {
		t.Run(name, func(t *testing.T) {
			prefix := testenv.Prefix()
			p := newPlugin(t, rdb, prefix)
			books := memo(t, p, "books")
			books.fill(t, 9)
			env := []string{"CACHEME_REDIS=" + url, "CACHEME_DB=" + db, "CACHEME_PREFIX=" + prefix, "CACHEME_ACTOR=ops"}

			r := cli(t, env, "invalidate", "key", "books:1")
			if r.code != 1 || !strings.Contains(r.errOut, "cacheme migrate up") {
				t.Fatalf("without the tables: %+v", r)
			}
			r = cli(t, env, "migrate", "status").ok(t)
			if !strings.Contains(r.out, "version 0 of") {
				t.Fatalf("status: %s", r.out)
			}
			cli(t, env, "migrate", "up").ok(t)
			r = cli(t, env, "migrate", "status").ok(t)
			if !strings.Contains(r.out, "(up to date)") {
				t.Fatalf("status: %s", r.out)
			}

			r = cli(t, env, "invalidate", "key", "books:1", "books:2").ok(t)
			if !strings.Contains(r.out, "key books:1: 1 entries invalidated") {
				t.Fatalf("key: %s", r.out)
			}
			cli(t, env, "invalidate", "group", "books:g0").ok(t) // 0, 3, 6
			cli(t, env, "invalidate", "pattern", "books:[78]", "-q").ok(t)
			for i, want := range []int{2, 2, 2, 2, 1, 1, 2, 2, 2} {
				if got := books.computed(t, i); got != want {
					t.Errorf("books:%d computed %d times; want %d", i, got, want)
				}
			}
			cli(t, env, "invalidate", "tag", "books").ok(t) // not registered in the command
			for i := range 9 {
				if got := books.computed(t, i); got < 3 && i != 4 && i != 5 {
					t.Errorf("books:%d computed %d times after the tag", i, got)
				}
			}
			if r := cli(t, env, "invalidate", "tag", "nope"); r.code != 1 || !strings.Contains(r.errOut, "unknown tag") {
				t.Fatalf("unknown tag: %+v", r)
			}
			cli(t, append(env, "CACHEME_ACTOR="), "--no-log", "invalidate", "key", "books:4").ok(t)
			want := []string{"ops key books:1 1", "ops key books:2 1", "ops group books:g0 3", "ops pattern books:[78] 2", "ops tag books 9"}
			if got := logRows(t, db); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("History:\n%q\nwant\n%q", got, want)
			}
		})
	}
}

var progressLine = regexp.MustCompile(`100% \|[^|]*\| \((\d+)/(\d+)`)

// TestPatternLarge invalidates a pattern over many keys, with its dry run
// and its progress bar: 100,000 keys on a real Redis (CACHEME_TEST_REDIS),
// 2,000 on the test's miniredis, whose Lua makes each computation take
// milliseconds.
func TestPatternLarge(t *testing.T) {
	url, rdb := redisURL(t)
	n := 2000
	if os.Getenv("CACHEME_TEST_REDIS") != "" {
		n = 100_000
	}
	prefix := testenv.Prefix()
	p := newPlugin(t, rdb, prefix)
	big := memo(t, p, "big")
	other := memo(t, p, "other")
	start := time.Now()
	big.fill(t, n)
	other.fill(t, 10)
	t.Logf("%d keys computed in %v", n, time.Since(start).Round(time.Millisecond))
	env := []string{"CACHEME_REDIS=" + url, "CACHEME_PREFIX=" + prefix}

	r := cli(t, env, "invalidate", "pattern", "big:*", "--dry-run").ok(t)
	t.Logf("%s", r.out)
	if !strings.Contains(r.out, fmt.Sprintf("pattern big:*: %d entries match (dry run", n)) {
		t.Fatalf("dry run: %s", r.out)
	}
	if got := big.computed(t, n-1); got != 1 {
		t.Fatalf("the dry run invalidated: computed %d times", got)
	}
	r = cli(t, env, "invalidate", "pattern", "big:*").ok(t)
	t.Logf("%s%s", r.out, lastLine(r.errOut))
	if !strings.Contains(r.out, fmt.Sprintf("pattern big:*: %d entries invalidated", n)) {
		t.Fatalf("pattern: %s", r.out)
	}
	m := progressLine.FindStringSubmatch(r.errOut)
	if m == nil || m[1] != m[2] {
		t.Fatalf("no finished progress bar in:\n%s", r.errOut)
	}
	if total, _ := strconv.Atoi(m[2]); total < n {
		t.Fatalf("progress total %d; want at least the %d keys", total, n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if got := big.computed(t, i); got != 2 {
			t.Errorf("big:%d computed %d times; want 2", i, got)
		}
	}
	if got := other.computed(t, 3); got != 1 {
		t.Errorf("other:3 computed %d times; want 1 (not matched)", got)
	}

	r = cli(t, env, "invalidate", "pattern", "*")
	if r.code != 2 || !strings.Contains(r.errOut, "covers the whole namespace: pass --all") {
		t.Fatalf("* without --all: %+v", r)
	}
	if got := other.computed(t, 3); got != 1 {
		t.Fatalf("* without --all invalidated")
	}
	cli(t, env, "invalidate", "pattern", "*", "--all", "-q").ok(t)
	if got := other.computed(t, 3); got != 2 {
		t.Fatalf("* --all: other:3 computed %d times; want 2", got)
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexAny(s, "\r\n"); i >= 0 {
		return s[i+1:] + "\n"
	}
	return s + "\n"
}

// TestStatsAndInspect reads the counters another process published and
// one of its entries.
func TestStatsAndInspect(t *testing.T) {
	url, rdb := redisURL(t)
	prefix := testenv.Prefix()
	p := newPlugin(t, rdb, prefix)
	books := memo(t, p, "books")
	books.fill(t, 4)
	books.computed(t, 1)
	if err := p.PublishStats(bg); err != nil {
		t.Fatal(err)
	}
	env := []string{"CACHEME_REDIS=" + url, "CACHEME_PREFIX=" + prefix}
	r := cli(t, env, "stats").ok(t)
	if !regexp.MustCompile(`books\s+function\s+1\s+0\s+4\s`).MatchString(r.out) || !strings.Contains(r.out, "20.0%") {
		t.Fatalf("stats:\n%s", r.out)
	}
	var in struct {
		State   string   `json:"state"`
		Groups  []string `json:"groups"`
		Preview string   `json:"preview"`
		TTLMs   int64    `json:"ttl_ms"`
	}
	r = cli(t, env, "inspect", "books:2", "--json").ok(t)
	if err := json.Unmarshal([]byte(r.out), &in); err != nil {
		t.Fatal(err)
	}
	if in.State != "valid" || in.Preview != "2" || len(in.Groups) != 1 || in.Groups[0] != "books:g2" || in.TTLMs <= 0 {
		t.Fatalf("inspect: %+v", in)
	}
	if r := cli(t, env, "inspect", "books:9"); !strings.Contains(r.out, "state      absent") {
		t.Fatalf("absent: %+v", r)
	}
	if r := cli(t, []string{"CACHEME_REDIS=redis://127.0.0.1:1"}, "stats"); r.code != 1 || !strings.Contains(r.errOut, "connection refused") {
		t.Fatalf("a Redis that is down: %+v", r)
	}
}

// TestAdmin serves the page with the command and fetches it.
func TestAdmin(t *testing.T) {
	url, rdb := redisURL(t)
	prefix := testenv.Prefix()
	p := newPlugin(t, rdb, prefix)
	memo(t, p, "books").fill(t, 3)
	if err := p.PublishStats(bg); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, []string{"CACHEME_REDIS=" + url}, "admin"); r.code != 2 || !strings.Contains(r.errOut, "--password") {
		t.Fatalf("admin without credentials: %+v", r)
	}
	base, stop := serveAdmin(t, []string{"CACHEME_REDIS=" + url, "CACHEME_PREFIX=" + prefix, "CACHEME_ADMIN_USER=ann", "CACHEME_ADMIN_PASSWORD=pw"})
	get := func(path, user, pass string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/", "ann", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("bad password: %d", code)
	}
	code, body := get("/", "ann", "pw")
	if code != http.StatusOK || !strings.Contains(body, "1 process published") || !strings.Contains(body, "<code>books</code>") {
		t.Fatalf("overview: %d %s", code, body)
	}
	// Browse, following its pages (a shared Redis holds other keys too).
	listed := 0
	for next := "/browse?match=books:*"; next != ""; {
		code, body := get(next, "ann", "pw")
		if code != http.StatusOK {
			t.Fatalf("browse: %d %s", code, body)
		}
		listed += strings.Count(body, `<a href="entry?key=books`)
		next = ""
		if m := regexp.MustCompile(`<a href="(browse\?[^"]*)">Next page</a>`).FindStringSubmatch(body); m != nil {
			next = "/" + strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if listed != 3 {
		t.Fatalf("Browse listed %d of the 3 keys", listed)
	}
	if err := stop(); err != nil {
		t.Fatalf("admin did not stop cleanly: %v", err)
	}
}

// serveAdmin starts "cacheme admin" on a free port and returns its URL and
// the function that interrupts it and waits for it.
func serveAdmin(t *testing.T, env []string, args ...string) (string, func() error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"admin", "--addr", "127.0.0.1:0"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CACHEME_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			lines <- s.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var stopped bool
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("still running 10s after SIGINT; stderr: %s", errOut.String())
		}
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, "serving on ") {
			_ = stop()
			t.Fatalf("admin printed %q; stderr: %s", line, errOut.String())
		}
		return strings.TrimSuffix(strings.TrimPrefix(line, "serving on "), "/"), stop
	case <-time.After(60 * time.Second):
		_ = stop()
		t.Fatalf("admin did not start; stderr: %s", errOut.String())
	}
	return "", nil
}

// clusterURL returns the cluster:// URL of CACHEME_TEST_REDIS_CLUSTER and
// a Cluster client of it (the test fails if it is unreachable); without
// the variable, redisURL's Redis, so that the scenario still runs on one
// node.
func clusterURL(t *testing.T) (string, redis.UniversalClient) {
	t.Helper()
	env := os.Getenv("CACHEME_TEST_REDIS_CLUSTER")
	if env == "" {
		return redisURL(t)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(env, ",")})
	t.Cleanup(func() { c.Close() })
	if err := c.ForEachShard(bg, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
		t.Fatalf("CACHEME_TEST_REDIS_CLUSTER=%q is set but unreachable: %v", env, err)
	}
	return "cluster://" + env, c
}

// TestCluster runs the command and its admin page on a Redis Cluster
// (CACHEME_TEST_REDIS_CLUSTER): the pattern walks every master, Browse
// pages over all of them, and the counters' minutes live on several.
func TestCluster(t *testing.T) {
	url, rdb := clusterURL(t)
	prefix := testenv.Prefix()
	p := newPlugin(t, rdb, prefix)
	books := memo(t, p, "books")
	books.fill(t, 300)
	if err := p.PublishStats(bg); err != nil {
		t.Fatal(err)
	}
	env := []string{"CACHEME_REDIS=" + url, "CACHEME_PREFIX=" + prefix}
	r := cli(t, env, "stats", "--json").ok(t)
	if !strings.Contains(r.out, `"misses": 300`) {
		t.Fatalf("stats: %s", r.out)
	}
	r = cli(t, env, "inspect", "books:123").ok(t)
	if !strings.Contains(r.out, "value      123") {
		t.Fatalf("inspect: %s", r.out)
	}

	base, stop := serveAdmin(t, append(env, "CACHEME_ADMIN_USER=ann", "CACHEME_ADMIN_PASSWORD=pw"))
	seen := map[string]bool{}
	next := "/browse?match=books:*"
	for pages := 0; next != ""; pages++ {
		req, _ := http.NewRequest(http.MethodGet, base+next, nil)
		req.SetBasicAuth("ann", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || pages > 50 {
			t.Fatalf("GET %s: %d %s", next, resp.StatusCode, b)
		}
		for _, m := range regexp.MustCompile(`entry\?key=books%3a(\d+)`).FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
		next = ""
		if m := regexp.MustCompile(`<a href="(browse\?[^"]*)">Next page</a>`).FindStringSubmatch(string(b)); m != nil {
			next = "/" + strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(seen) != 300 {
		t.Fatalf("Browse listed %d of the 300 keys", len(seen))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	r = cli(t, env, "invalidate", "pattern", "books:1*").ok(t)
	if !strings.Contains(r.out, "pattern books:1*: 111 entries invalidated") {
		t.Fatalf("pattern: %s", r.out)
	}
	for _, id := range []int{1, 10, 150, 199} {
		if got := books.computed(t, id); got != 2 {
			t.Errorf("books:%d computed %d times; want 2", id, got)
		}
	}
	if got := books.computed(t, 200); got != 1 {
		t.Errorf("books:200 computed %d times; want 1", got)
	}
}
