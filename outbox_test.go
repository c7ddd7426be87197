package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

// outboxDSN returns a database for outbox tests that another process can
// open too: its dialector name and DSN (a SQLite file, or a fresh
// PostgreSQL schema when CACHEME_TEST_POSTGRES is set).
func outboxDSN(t *testing.T) (string, string) {
	t.Helper()
	if url := os.Getenv("CACHEME_TEST_POSTGRES"); url != "" {
		return "postgres", testenv.Schema(t, url)
	}
	return "sqlite", filepath.Join(t.TempDir(), "outbox.db") + "?_busy_timeout=5000&_journal_mode=WAL"
}

// openOutboxDB opens the database, with the migrations applied and the
// fixtures migrated, and closes it after the test.
func openOutboxDB(t testing.TB, dialect, dsn string) *gorm.DB {
	t.Helper()
	d := sqlite.Open(dsn)
	if dialect == "postgres" {
		d = postgres.Open(dsn)
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
	ok(t, err)
	sqlDB, err := db.DB()
	ok(t, err)
	t.Cleanup(func() { sqlDB.Close() })
	mig := migrations.SQLite
	if dialect == "postgres" {
		mig = migrations.Postgres
	}
	ok(t, migrations.Up(context.Background(), sqlDB, mig))
	ok(t, db.AutoMigrate(&User{}))
	return db
}

func outboxRows(t testing.TB, db *gorm.DB) int64 {
	t.Helper()
	var n int64
	ok(t, db.Table(cacheme.OutboxTable).Count(&n).Error)
	return n
}

// A committed write records its invalidation in its own transaction and
// deletes the record once delivered; a rollback leaves none.
func TestOutboxDelivered(t *testing.T) {
	dialect, dsn := outboxDSN(t)
	db := openOutboxDB(t, dialect, dsn)
	p, _ := newPlugin(t, cacheme.Settings{Outbox: true})
	ok(t, db.Use(p))
	u := User{Name: "ann"}
	ok(t, db.Create(&u).Error)
	pr := newProbe(t, p, "user", userName(db, u.ID), fmt.Sprintf("User:%d", u.ID))
	pr.warm(t)
	ok(t, db.Model(&u).Update("name", "ann2").Error)
	pr.mustMiss(t, "ann2")
	equals(t, outboxRows(t, db), 0)

	errRollback := errors.New("roll back")
	err := db.Transaction(func(tx *gorm.DB) error {
		ok(t, tx.Model(&u).Update("name", "ann3").Error)
		equals(t, outboxRows(t, tx), 0) // written at COMMIT only
		return errRollback
	})
	isErr(t, err, errRollback)
	equals(t, outboxRows(t, db), 0)
	pr.mustMiss(t, "ann2") // invalidated all the same, and unchanged
}

// While Redis fails, a committed write's invalidation stays in the outbox
// (and is reported as kept, not lost); once Redis is back, Replay delivers
// it and deletes the row.
func TestOutboxReplayAfterOutage(t *testing.T) {
	dialect, dsn := outboxDSN(t)
	db := openOutboxDB(t, dialect, dsn)
	rdb, _ := testRedis(t)
	fault := &faultHook{}
	rdb.(*redis.Client).AddHook(fault)
	rec := &errRecorder{}
	p := newPluginOn(t, rdb, cacheme.Settings{Outbox: true, ErrorHook: rec.Hook, FlushTimeout: 10 * time.Millisecond, ReplayInterval: time.Hour})
	ok(t, db.Use(p))
	u := User{Name: "ann"}
	ok(t, db.Create(&u).Error)
	pr := newProbe(t, p, "user", userName(db, u.ID), fmt.Sprintf("User:%d", u.ID))
	pr.warm(t)

	fault.on.Store(true)
	ok(t, db.Model(&u).Update("name", "ann2").Error) // committed; delivery fails
	ok(t, p.Close(context.Background()))             // drains the retries
	fault.on.Store(false)
	equals(t, outboxRows(t, db), 1)
	if !rec.Has(cacheme.ErrRedis) || !strings.Contains(fmt.Sprint(rec.All()), "the outbox keeps it") {
		t.Fatalf("reported %v; want the failure, kept by the outbox", rec.All())
	}

	// Another plugin on the same Redis and database: a process started
	// after the outage replays what is left.
	p2 := newPluginOn(t, rdb, cacheme.Settings{Prefix: p.Settings().Prefix, Outbox: true, FlushTimeout: 10 * time.Millisecond, ReplayInterval: time.Hour})
	db2 := openOutboxDB(t, dialect, dsn)
	ok(t, db2.Use(p2))
	waitFor(t, "the replay at start", func() bool { return outboxRows(t, db) == 0 })
	equals(t, p2.Stats().Total.Replayed, 1)
	pr2 := newProbe(t, p2, "user", userName(db2, u.ID), fmt.Sprintf("User:%d", u.ID))
	pr2.mustMiss(t, "ann2")
}

// The outbox is written in the writing transaction: if it cannot be (here
// its table is missing), the write is rolled back and fails, rather than
// commit an invalidation that could be lost.
func TestOutboxMissingTable(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{Outbox: true, ReplayInterval: time.Hour})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&User{}))
	u := User{Name: "ann"}
	err := db.Create(&u).Error
	if err == nil || !strings.Contains(err.Error(), cacheme.OutboxTable) {
		t.Fatalf("got %v; want an error naming %s", err, cacheme.OutboxTable)
	}
	var n int64
	ok(t, db.Model(&User{}).Count(&n).Error)
	equals(t, n, 0)
}

// A writer process killed between its COMMIT and the delivery of its
// invalidation (here its Redis never answers, and it exits as soon as the
// write returns) leaves the invalidation in the outbox; the periodic
// replay of another process delivers it.
func TestOutboxWriterKilled(t *testing.T) {
	if os.Getenv("CACHEME_OUTBOX_CHILD") != "" {
		outboxChild(t)
		return
	}
	dialect, dsn := outboxDSN(t)
	db := openOutboxDB(t, dialect, dsn)
	p, _ := newPlugin(t, cacheme.Settings{Outbox: true, FlushTimeout: 10 * time.Millisecond, ReplayInterval: 20 * time.Millisecond})
	ok(t, db.Use(p))
	u := User{Name: "ann"}
	ok(t, db.Create(&u).Error)
	// The create's own invalidation may still be running (FlushTimeout is
	// short) or be replayed once more (delivery is at least once): warm
	// the probe only once nothing of it is left.
	waitFor(t, "the create's invalidation", func() bool { return outboxRows(t, db) == 0 })
	pr := newProbe(t, p, "user", userName(db, u.ID), fmt.Sprintf("User:%d", u.ID))
	waitFor(t, "a cached probe", func() bool {
		_, before := pr.get(t)
		_, after := pr.get(t)
		return after == before
	})

	cmd := exec.Command(os.Args[0], "-test.run", "^TestOutboxWriterKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CACHEME_OUTBOX_CHILD=1", "CACHEME_OUTBOX_DIALECT="+dialect, "CACHEME_OUTBOX_DSN="+dsn,
		"CACHEME_OUTBOX_PREFIX="+p.Settings().Prefix, fmt.Sprintf("CACHEME_OUTBOX_USER=%d", u.ID))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var name string
	ok(t, db.Raw("SELECT name FROM users WHERE id = ?", u.ID).Scan(&name).Error)
	equals(t, name, "killed") // committed
	waitFor(t, "the replay", func() bool { return outboxRows(t, db) == 0 })
	pr.mustMiss(t, "killed")
}

// outboxChild is the writer of TestOutboxWriterKilled: its Redis accepts
// connections and never answers, so its invalidation cannot be delivered;
// it exits (status 3) the moment its committed write returns.
func outboxChild(t *testing.T) {
	db := openOutboxDB(t, os.Getenv("CACHEME_OUTBOX_DIALECT"), os.Getenv("CACHEME_OUTBOX_DSN"))
	rdb, _ := hangingRedis(t)
	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: os.Getenv("CACHEME_OUTBOX_PREFIX"), Outbox: true,
		FlushTimeout: 10 * time.Millisecond, ReplayInterval: time.Hour})
	ok(t, db.Use(p))
	ok(t, db.Model(&User{}).Where("id = ?", os.Getenv("CACHEME_OUTBOX_USER")).Update("name", "killed").Error)
	os.Exit(3)
}
