// Package testenv gives the project's tests their Redis and databases:
// in-process ones by default (miniredis, SQLite files in the test's temp
// dir) and the real servers named by CACHEME_TEST_REDIS and
// CACHEME_TEST_POSTGRES when those are set. A set variable whose server is
// unreachable fails the test; nothing here ever skips one.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Redis returns a client for a test: the server named by CACHEME_TEST_REDIS
// when it is set, otherwise an in-process miniredis, which is also
// returned (nil on a real server).
func Redis(t testing.TB) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	if url := os.Getenv("CACHEME_TEST_REDIS"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Fatalf("CACHEME_TEST_REDIS=%q: %v", url, err)
		}
		c := redis.NewClient(opt)
		t.Cleanup(func() { c.Close() })
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("CACHEME_TEST_REDIS=%q is set but unreachable: %v", url, err)
		}
		return c, nil
	}
	m := miniredis.RunT(t)
	// Keys expire as the clock runs, as a real server's do (miniredis
	// expires keys only when told to otherwise), exactly coherent with
	// TIME and PEXPIRETIME, which the plugin's lease checks rely on. It
	// costs every command a pass over the keys with a TTL: a test that
	// makes thousands of keys and needs no expiry may turn it off
	// (m.ClockTTL(false)).
	m.ClockTTL(true)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	return c, m
}

// Prefix returns a random key prefix, so that tests sharing a real Redis
// never see each other's keys (and nothing needs flushing).
func Prefix() string {
	return "T" + random() + ":"
}

// DB opens a database for a test with cfg (its Logger silenced): a fresh
// schema on the PostgreSQL server named by CACHEME_TEST_POSTGRES when it is
// set, dropped after the test, otherwise a SQLite file in the test's temp
// dir.
func DB(t testing.TB, cfg gorm.Config) *gorm.DB {
	t.Helper()
	cfg.Logger = logger.Discard
	dsn := os.Getenv("CACHEME_TEST_POSTGRES")
	if dsn == "" {
		return open(t, sqlite.Open(filepath.Join(t.TempDir(), "test.db")+"?_busy_timeout=5000&_journal_mode=WAL"), cfg)
	}
	return open(t, postgres.Open(Schema(t, dsn)), cfg)
}

// Database is one database of SQLDBs.
type Database struct {
	Name    string  // "sqlite" or "postgres"
	DB      *sql.DB // the connection pool
	Dialect string  // "sqlite3" or "postgres"
}

// SQLDBs returns a SQLite file in the test's temp dir and, when
// CACHEME_TEST_POSTGRES is set, a fresh schema on that server.
func SQLDBs(t testing.TB) []Database {
	t.Helper()
	sqlDB := func(db *gorm.DB) *sql.DB {
		d, err := db.DB()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	dbs := []Database{{"sqlite", SQLite(t), "sqlite3"}}
	if dsn := os.Getenv("CACHEME_TEST_POSTGRES"); dsn != "" {
		dbs = append(dbs, Database{"postgres", sqlDB(open(t, postgres.Open(Schema(t, dsn)), gorm.Config{Logger: logger.Discard})), "postgres"})
	}
	return dbs
}

// SQLite returns a connection pool on a SQLite file in the test's temp dir.
func SQLite(t testing.TB) *sql.DB {
	t.Helper()
	db, err := open(t, sqlite.Open(filepath.Join(t.TempDir(), "test.db")+"?_busy_timeout=5000"), gorm.Config{Logger: logger.Discard}).DB()
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// Schema creates a fresh schema on the PostgreSQL server at dsn, drops it
// after the test, and returns dsn with that schema as its search path.
func Schema(t testing.TB, dsn string) string {
	t.Helper()
	admin := open(t, postgres.Open(dsn), gorm.Config{Logger: logger.Discard})
	schema := "cm_" + random()
	if err := admin.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatalf("CACHEME_TEST_POSTGRES is set but unreachable: %v", err)
	}
	t.Cleanup(func() {
		if err := admin.Exec("DROP SCHEMA " + schema + " CASCADE").Error; err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

// open opens a database and closes it after the test (cleanups run last
// registered first, so a schema is dropped after its users are closed).
func open(t testing.TB, d gorm.Dialector, cfg gorm.Config) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(d, &cfg)
	if err != nil {
		t.Fatalf("%s: %v", d.Name(), err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db
}

func random() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Errors collects the errors passed to a hook such as
// cacheme.Settings.ErrorHook (Hook). It is safe for concurrent use.
type Errors struct {
	mu   sync.Mutex
	errs []error
}

// Hook records err.
func (r *Errors) Hook(_ context.Context, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// All returns the errors recorded so far.
func (r *Errors) All() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// Take returns the errors recorded so far and forgets them.
func (r *Errors) Take() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := r.errs
	r.errs = nil
	return errs
}

// Has reports whether some recorded error matches target (errors.Is).
func (r *Errors) Has(target error) bool {
	for _, err := range r.All() {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Gorm opens GORM (silenced) on d's connection pool, which stays the
// caller's.
func Gorm(d Database) (*gorm.DB, error) {
	var dl gorm.Dialector = sqlite.Dialector{Conn: d.DB}
	if d.Dialect == "postgres" {
		dl = postgres.New(postgres.Config{Conn: d.DB})
	}
	return gorm.Open(dl, &gorm.Config{Logger: logger.Discard})
}
