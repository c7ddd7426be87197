//go:build faults

package cacheme_test

// The fault suite: real redis-server processes the tests start, freeze,
// starve of replies and kill. Each test logs its figures (operations
// checked, violations, invalidations lost). Run with
//
//	go test -tags faults -race -count=1 -run Fault .
//
// (make faults), with CACHEME_TEST_POSTGRES set to use PostgreSQL.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// Two plugins on two Redis clients of one server and two *gorm.DB on one
// database, stale serving off; writers bump per-row versions and readers
// read them through a memoized function. A read that starts after an
// Update returned never sees an older version.
func TestFaultHistory(t *testing.T) {
	const (
		rows     = 8
		readers  = 4
		duration = 5 * time.Second
	)
	srv := startRedis(t, freePort(t))
	dialect, dsn := outboxDSN(t)
	if dialect == "sqlite" {
		// Two pools write: take SQLite's write lock at BEGIN, where the
		// busy timeout applies, not at the first write.
		dsn += "&_txlock=immediate"
	}
	prefix := uniquePrefix()
	type instance struct {
		db   *gorm.DB
		read func(context.Context, uint) (int64, error)
	}
	var insts [2]instance
	for i := range insts {
		db := openOutboxDB(t, dialect, dsn)
		p := newPluginOn(t, srv.client(t, time.Second), cacheme.Settings{Prefix: prefix, NoStale: true})
		ok(t, db.Use(p))
		insts[i] = instance{db: db, read: versionReader(t, p, db)}
	}
	ids := createVersionRows(t, insts[0].db, rows)
	h := newHistory(rows)

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for row := range rows {
		wg.Go(func() { // one writer per row: versions commit in order
			for v := int64(1); ctx.Err() == nil; v++ {
				if err := writeVersion(context.Background(), insts[v%2].db, ids[row], v); err != nil {
					t.Errorf("update row %d to %d: %v", row, v, err)
					return
				}
				h.wrote(row, v)
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for ctx.Err() == nil {
				row, in := rand.IntN(rows), insts[rand.IntN(2)]
				h.read(context.Background(), row, func(ctx context.Context) (int64, error) { return in.read(ctx, ids[row]) })
			}
		})
	}
	wg.Wait()
	t.Logf("history: %d writes, %d reads checked, %d violations, %d failed reads", h.writes.Load(), h.ops.Load(), h.violations.Load(), h.errors.Load())
	if h.ops.Load() < 100 || h.writes.Load() < 100 {
		t.Errorf("too few operations to mean anything: %d reads, %d writes", h.ops.Load(), h.writes.Load())
	}
	if h.violations.Load() != 0 || h.errors.Load() != 0 {
		t.Errorf("%d stale reads, %d failed reads; want none: %v", h.violations.Load(), h.errors.Load(), h.sample())
	}
}

// Redis frozen (SIGSTOP) for longer than the client's ReadTimeout while
// writes commit with the outbox on: each write returns within about
// FlushTimeout, its invalidation is reported not delivered but kept, and
// once Redis is back Replay delivers it.
func TestFaultRedisPausedAtCommit(t *testing.T) {
	const (
		writes       = 20
		perRound     = 5
		readTimeout  = 200 * time.Millisecond
		flushTimeout = 300 * time.Millisecond
		slack        = 700 * time.Millisecond // scheduling under -race
	)
	srv := startRedis(t, freePort(t))
	dialect, dsn := outboxDSN(t)
	db := openOutboxDB(t, dialect, dsn)
	rec := &errRecorder{}
	p := newPluginOn(t, srv.client(t, readTimeout), cacheme.Settings{Outbox: true, NoStale: true,
		FlushTimeout: flushTimeout, ReplayInterval: time.Hour, ErrorHook: rec.Hook})
	ok(t, db.Use(p))
	var calls atomic.Int64
	read := nameReader(t, p, db, "fpause", &calls)
	ids := make([]uint, writes)
	for i := range ids {
		u := User{Name: fmt.Sprintf("old%d", i)}
		ok(t, db.Create(&u).Error)
		ids[i] = u.ID
	}

	lost, replayed := 0, 0
	var slowest, longestPause time.Duration
	for round := range writes / perRound {
		batch := ids[round*perRound : (round+1)*perRound]
		for i, id := range batch {
			warmName(t, read, &calls, id, fmt.Sprintf("old%d", round*perRound+i))
		}
		kept := keptReports(rec)
		srv.pause(t)
		paused := time.Now()
		for i, id := range batch {
			start := time.Now()
			ok(t, db.Model(&User{ID: id}).Update("name", fmt.Sprintf("new%d", round*perRound+i)).Error)
			if d := time.Since(start); d > slowest {
				slowest = d
			}
		}
		waitFor(t, "the not-delivered reports", func() bool { return keptReports(rec) >= kept+perRound })
		if d := time.Since(paused); d > longestPause {
			longestPause = d
		}
		srv.resume(t)
		equals(t, outboxRows(t, db), int64(perRound))
		replayed += replayAll(t, p, db, 10*time.Second)
		for i, id := range batch {
			before := calls.Load()
			v, err := read(bg, id)
			ok(t, err)
			if want := fmt.Sprintf("new%d", round*perRound+i); v != want || calls.Load() != before+1 {
				lost++
				t.Errorf("user %d: read %q (recomputed: %v) after the replay; want %q recomputed", id, v, calls.Load() != before, want)
			}
		}
	}
	t.Logf("paused at commit: %d writes, slowest write %v (FlushTimeout %v), Redis frozen up to %v (ReadTimeout %v), %d reported not delivered and kept, %d replayed, %d invalidations lost",
		writes, slowest.Round(time.Millisecond), flushTimeout, longestPause.Round(time.Millisecond), readTimeout, keptReports(rec), replayed, lost)
	if slowest > flushTimeout+slack {
		t.Errorf("a write took %v; want about FlushTimeout (%v)", slowest, flushTimeout)
	}
	if lost != 0 {
		t.Errorf("%d invalidations lost; want 0", lost)
	}
}

// A TCP proxy forwards the requests but swallows Redis's replies for 1.5s
// while writes commit: the server does the work, the client sees timeouts
// and retries. Every invalidation must take effect: a retry after a lost
// reply redoes the work (the group's members are still there).
func TestFaultRepliesDropped(t *testing.T) {
	srv := startRedis(t, freePort(t))
	for _, outbox := range []bool{false, true} {
		for _, reset := range []bool{false, true} {
			t.Run(fmt.Sprintf("outbox=%v/reset=%v", outbox, reset), func(t *testing.T) {
				faultRepliesDropped(t, srv, outbox, reset)
			})
		}
	}
}

func faultRepliesDropped(t *testing.T, srv *redisProc, outbox, reset bool) {
	const (
		rows         = 4
		window       = 1500 * time.Millisecond
		readTimeout  = 600 * time.Millisecond // the last retry starts after the window
		flushTimeout = 200 * time.Millisecond
	)
	proxy := startDropper(t, srv.addr())
	var db *gorm.DB
	if outbox {
		dialect, dsn := outboxDSN(t)
		db = openOutboxDB(t, dialect, dsn)
	} else {
		db = testDB(t, gorm.Config{})
		ok(t, db.AutoMigrate(&User{}))
	}
	rec := &errRecorder{}
	var flushed atomic.Int64
	p := newPluginOn(t, dialRedis(t, proxy.addr(), readTimeout), cacheme.Settings{Outbox: outbox, NoStale: true,
		FlushTimeout: flushTimeout, ReplayInterval: time.Hour, ErrorHook: rec.Hook,
		InvalidationHook: func(context.Context, []string, int) { flushed.Add(1) }})
	ok(t, db.Use(p))
	var calls atomic.Int64
	read := nameReader(t, p, db, "fdrop", &calls)
	ids := make([]uint, rows)
	for i := range ids {
		u := User{Name: fmt.Sprintf("old%d", i)}
		ok(t, db.Create(&u).Error)
		ids[i] = u.ID
		warmName(t, read, &calls, u.ID, u.Name)
	}
	flushed.Store(0)

	proxy.drop.Store(true)
	start := time.Now()
	for i, id := range ids {
		ok(t, db.Model(&User{ID: id}).Update("name", fmt.Sprintf("new%d", i)).Error)
	}
	time.Sleep(time.Until(start.Add(window)))
	proxy.drop.Store(false)
	if reset {
		proxy.reset()
	}
	waitFor(t, "the invalidations after commit", func() bool { return flushed.Load() >= rows })
	replayed := 0
	if outbox {
		replayed = replayAll(t, p, db, 10*time.Second)
	}
	lost := 0
	for i, id := range ids {
		v, err := read(bg, id)
		ok(t, err)
		if want := fmt.Sprintf("new%d", i); v != want {
			lost++
			t.Errorf("user %d: read %q after the fault; want %q (its invalidation was lost)", id, v, want)
		}
	}
	t.Logf("replies dropped (outbox %v, reset %v): %d writes, %d reply bytes swallowed, %d reported not delivered, %d replayed, %d invalidations lost",
		outbox, reset, rows, proxy.swallow.Load(), lostReports(rec), replayed, lost)
	if proxy.swallow.Load() == 0 {
		t.Errorf("no reply was swallowed: the fault did not happen")
	}
	if lost != 0 {
		t.Errorf("%d invalidations lost; want 0", lost)
	}
}

// A writer process killed (SIGKILL) after its COMMIT, before its
// invalidation is delivered (its Redis never answers): the parent's replay
// delivers it.
func TestFaultWriterKilledAfterCommit(t *testing.T) {
	if os.Getenv("CACHEME_FAULT_CHILD") != "" {
		faultKilledChild(t)
		return
	}
	const kills = 3
	srv := startRedis(t, freePort(t))
	dialect, dsn := outboxDSN(t)
	db := openOutboxDB(t, dialect, dsn)
	p := newPluginOn(t, srv.client(t, time.Second), cacheme.Settings{Outbox: true, NoStale: true,
		FlushTimeout: 50 * time.Millisecond, ReplayInterval: time.Hour})
	ok(t, db.Use(p))
	var calls atomic.Int64
	read := nameReader(t, p, db, "fkill", &calls)
	lost, replayed := 0, 0
	for i := range kills {
		u := User{Name: fmt.Sprintf("before%d", i)}
		ok(t, db.Create(&u).Error)
		warmName(t, read, &calls, u.ID, u.Name)
		want := fmt.Sprintf("killed%d", i)

		cmd := exec.Command(os.Args[0], "-test.run", "^TestFaultWriterKilledAfterCommit$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CACHEME_FAULT_CHILD=1", "CACHEME_FAULT_DIALECT="+dialect, "CACHEME_FAULT_DSN="+dsn,
			"CACHEME_FAULT_PREFIX="+p.Settings().Prefix, fmt.Sprintf("CACHEME_FAULT_USER=%d", u.ID), "CACHEME_FAULT_NAME="+want)
		stdout, err := cmd.StdoutPipe()
		ok(t, err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		ok(t, cmd.Start())
		out := lines(stdout)
		var seen []string
		timeout := time.After(30 * time.Second)
	wait:
		for {
			select {
			case l, more := <-out:
				if !more {
					_ = cmd.Wait()
					t.Fatalf("child ended before it committed: %v\n%s", seen, stderr.String())
				}
				if l == "COMMITTED" {
					break wait
				}
				seen = append(seen, l)
			case <-timeout:
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("child did not commit within 30s: %v\n%s", seen, stderr.String())
			}
		}
		ok(t, cmd.Process.Kill()) // after its COMMIT, while its flush hangs
		for range out {
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != -1 {
			t.Fatalf("child: %v, want killed\n%s", err, stderr.String())
		}
		var name string
		ok(t, db.Raw("SELECT name FROM users WHERE id = ?", u.ID).Scan(&name).Error)
		equals(t, name, want) // committed
		equals(t, outboxRows(t, db), 1)
		replayed += replayAll(t, p, db, 10*time.Second)
		if v, err := read(bg, u.ID); err != nil || v != want {
			lost++
			t.Errorf("user %d: read %q, %v after the replay; want %q", u.ID, v, err, want)
		}
	}
	t.Logf("writer killed after COMMIT: %d kills, %d replayed by the parent, %d invalidations lost", kills, replayed, lost)
	if lost != 0 {
		t.Errorf("%d invalidations lost; want 0", lost)
	}
}

// faultKilledChild is the writer of TestFaultWriterKilledAfterCommit: its
// Redis accepts connections and never answers and its FlushTimeout is a
// minute, so its write hangs in the flush after its COMMIT. A goroutine
// prints COMMITTED once another connection sees the committed row; the
// parent then kills the process.
func faultKilledChild(t *testing.T) {
	db := openOutboxDB(t, os.Getenv("CACHEME_FAULT_DIALECT"), os.Getenv("CACHEME_FAULT_DSN"))
	rdb, _ := hangingRedis(t)
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: os.Getenv("CACHEME_FAULT_PREFIX"), Outbox: true,
		FlushTimeout: time.Minute, ReplayInterval: time.Hour})
	ok(t, db.Use(p))
	id, want := os.Getenv("CACHEME_FAULT_USER"), os.Getenv("CACHEME_FAULT_NAME")
	go func() {
		for {
			var name string
			if err := db.Raw("SELECT name FROM users WHERE id = ?", id).Scan(&name).Error; err == nil && name == want {
				fmt.Println("COMMITTED")
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ok(t, db.Model(&User{}).Where("id = ?", id).Update("name", want).Error)
	fmt.Println("RETURNED") // the parent kills the process before this
	os.Exit(4)
}
